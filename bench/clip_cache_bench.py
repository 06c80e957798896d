"""Training throughput with and without pre-decoded clips (``data.clip_cache``), CPU preset.

For each modality, the real training loop (``train_encoder``: DataLoader workers, sampler,
forward, backward, SGD) runs a fixed number of steps on the decoded sample data, once decoding
every clip at each visit and once reading the cache; the median of the per-epoch step rates is
reported. Both runs in one process on the same machine, one after the other.

Usage: python bench/clip_cache_bench.py --data DECODED_DIR --out bench/results/clip_cache.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xdc_core.config import MODALITIES, load_config
from xdc_core.dataset import ClipDataset
from xdc_core.steps import init_encoder
from xdc_core.train import Observer, train_encoder


def steps_per_second(decoded: Path, cfg, modality: str, epochs: int) -> tuple[float, float]:
    """(median steps/s over the epochs, seconds to build the cache or 0)."""
    t0 = time.perf_counter()
    train = ClipDataset(decoded, cfg.data, "train", cfg.train.split, (modality,))
    ClipDataset(decoded, cfg.data, "eval", cfg.train.split, (modality,), clips=1)
    build = time.perf_counter() - t0
    val = ClipDataset(decoded, cfg.data, "eval", cfg.train.split, (modality,), clips=1)
    labels = np.asarray(val.labels)
    rates: list[float] = []
    last = [time.perf_counter()]

    class Tick(Observer):
        def epoch(self, _result: object, _gpu_peak_bytes: int | None) -> None:
            now = time.perf_counter()
            rates.append(cfg.train.epoch_size / cfg.train.batch_size / (now - last[0]))
            last[0] = now

    tc = cfg.train.model_copy(update={"total_epochs": epochs, "warmup_epochs": 0, "val_fraction": 0.0})
    last[0] = time.perf_counter()
    train_encoder(init_encoder(modality, cfg), modality, train, val, [labels], tc, 0, torch.device("cpu"),
                  progress=False, observer=Tick())
    return statistics.median(rates), build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a decoded dataset (e.g. the learning benchmark's)")
    ap.add_argument("--config", type=Path, default=Path("xdc_core/presets/cpu-demo.yaml"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/clip_cache.json"))
    args = ap.parse_args()
    base = load_config(args.config)
    results: dict[str, dict[str, float]] = {}
    for m in MODALITIES:
        row = {}
        for clips in (0, base.data.clip_cache):
            cfg = base.model_copy(update={"data": base.data.model_copy(update={"clip_cache": clips})})
            rate, build = steps_per_second(args.data, cfg, m, args.epochs)
            row[f"steps_per_s_cache_{clips}"] = round(rate, 2)
            if clips:
                row["cache_build_s"] = round(build, 1)
        row["speedup"] = round(row[f"steps_per_s_cache_{base.data.clip_cache}"] / row["steps_per_s_cache_0"], 2)
        results[m] = row
        print(m, row, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": str(args.config), "batch_size": base.train.batch_size,
                                    "workers": base.train.workers, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
