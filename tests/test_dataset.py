"""The PyTorch dataset over a decoded folder, in training and inference modes."""

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_indexed_video
from xdc_core.config import Config, DecodeConfig
from xdc_core.dataset import ClipDataset
from xdc_core.decode import DatasetMismatch, decode_dataset


@pytest.fixture
def decoded(tmp_path, tiny_data):
    rows = []
    for i, (label, split) in enumerate([("cat", "train"), ("dog", "train"), ("cat", "test")]):
        make_indexed_video(tmp_path / f"v{i}.mp4", frames=30, fps=10, size=(64, 48))
        rows.append(f"v{i}.mp4,{label},{split}")
    (tmp_path / "m.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    decode_dataset(tmp_path / "m.csv", tmp_path / "out", Config(data=tiny_data, decode=DecodeConfig()), progress=False)
    return tmp_path / "out"


def test_train_mode_item(decoded, tiny_data):
    ds = ClipDataset(decoded, tiny_data, "train")
    assert len(ds) == 3 and ds.classes == ["cat", "dog"] and ds.labels == [0, 1, 0]
    item = ds[1]
    assert item["video"].shape == (3, 4, 32, 32) and item["video"].dtype == torch.uint8
    assert item["audio"].shape == (1, 40, 20) and item["audio"].dtype == torch.float32
    assert (item["index"], item["label"]) == (1, 1)
    # Temporal jitter: the grey level (= frame index) of the first frame varies between visits.
    torch.manual_seed(0)
    firsts = {round(float(ds[0]["video"][:, 0].float().mean()) / 8) for _ in range(12)}
    assert len(firsts) > 3


def test_eval_mode_is_deterministic_and_uniform(decoded, tiny_data):
    ds = ClipDataset(decoded, tiny_data, "eval")
    a, b = ds[0], ds[0]
    assert a["video"].shape == (3, 3, 4, 32, 32) and a["audio"].shape == (3, 1, 40, 20)
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    # 3 s video, 4 frames at 30 fps: clips start at 0, ~1.43 and ~2.87 s: nearest 10 fps frames 0, 14, 29.
    firsts = [round(float(a["video"][c, :, 0].float().mean()) / 8) for c in range(3)]
    assert firsts == [0, 14, 29]


def test_split_filter_and_dataloader_workers(decoded, tiny_data):
    test = ClipDataset(decoded, tiny_data, "train", split="test")
    assert len(test) == 1 and test[0]["index"] == 2 and test[0]["label"] == 0
    batch = next(iter(DataLoader(ClipDataset(decoded, tiny_data, "train"), batch_size=3, num_workers=2)))
    assert batch["video"].shape == (3, 3, 4, 32, 32) and batch["label"].tolist() == [0, 1, 0]


def test_settings_must_match_the_decoded_files(decoded, tiny_data):
    with pytest.raises(DatasetMismatch, match="short_side: dataset has 32, settings ask 64"):
        ClipDataset(decoded, tiny_data.model_copy(update={"short_side": 64, "crop_size": 64}))
    with pytest.raises(FileNotFoundError, match="not a decoded dataset"):
        ClipDataset(decoded.parent, tiny_data)
