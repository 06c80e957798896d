"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2``: train the tiny audio
encoder data-parallel (gloo) and record, per rank, what the test checks: a checksum of the
weights after every step, the augmentation seed of every item read, and the epoch losses.

    torchrun --standalone --nproc-per-node 2 tests/ddp_train.py DECODED OUT_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from conftest import TINY_SETTINGS
from xdc_core import distributed
from xdc_core.config import build_config
from xdc_core.dataset import ClipDataset
from xdc_core.steps import init_encoder
from xdc_core.train import Observer, train_encoder


class Recorded(Dataset):
    """The dataset, noting the seed each item's augmentation was drawn with."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.seeds = dataset, []

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        self.seeds.append(torch.initial_seed())  # WithTargets seeded torch's RNG for this item
        return self.dataset[i]


def main(decoded: Path, out: Path) -> None:
    cfg = build_config(TINY_SETTINGS | {"train": TINY_SETTINGS["train"] | {
        "epoch_size": 128, "batch_size": 8, "total_epochs": 3, "early_stop": False, "lr": 0.01}})
    train = Recorded(ClipDataset(decoded, cfg.data, "train", "train", ("audio",)))
    val = ClipDataset(decoded, cfg.data, "eval", "train", ("audio",), clips=1)
    labels = np.array(val.labels)  # the true classes: targets the encoder can learn
    trunk = init_encoder("audio", cfg)
    sums: list[float] = []

    class Checksums(Observer):
        def step(self, step):
            sums.append(float(sum(p.detach().double().sum() for p in trunk.parameters())))
    with distributed.process_group(torch.device("cpu")) as world:
        result, _ = train_encoder(
            trunk, "audio", train, val, [labels], cfg.train, 0, torch.device("cpu"), progress=False,
            observer=Checksums(),
        )
    (out / f"rank{world.rank}.json").write_text(json.dumps(
        {"sums": sums, "seeds": train.seeds, "train_loss": result.train_loss, "world": world.size}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
