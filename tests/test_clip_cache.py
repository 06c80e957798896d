"""Pre-decoded clips (data.clip_cache): the same inputs as decoding at every visit, decoded once."""

import shutil

import numpy as np
import torch

from conftest import TINY_SETTINGS
from xdc_core.clip_cache import cache_folder
from xdc_core.config import build_config
from xdc_core.dataset import ClipDataset


def _data(clips: int):
    return build_config({**TINY_SETTINGS, "data": {**TINY_SETTINGS["data"], "clip_cache": clips}}).data


def test_eval_clips_from_the_cache_equal_decoded_ones(tiny_decoded, tmp_path):
    root = tmp_path / "decoded"
    shutil.copytree(tiny_decoded, root)
    plain = ClipDataset(root, _data(0), "eval", "test")
    cached = ClipDataset(root, _data(2), "eval", "test")
    assert (cache_folder(root, _data(2)) / "video_eval2.npy").is_file()
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["index"] == b["index"] and a["label"] == b["label"]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])


def test_training_clips_come_from_the_cache_with_random_crops(tiny_decoded, tmp_path):
    root = tmp_path / "decoded"
    shutil.copytree(tiny_decoded, root)
    data = _data(3)
    plain = ClipDataset(root, data.model_copy(update={"clip_cache": 0}), "train", "train")
    cached = ClipDataset(root, data, "train", "train")
    video = np.load(cache_folder(root, data) / "video_train3.npy")
    assert video.shape == (16, 3, 3, data.clip_frames, data.short_side, data.short_side)  # every video, 3 clips
    torch.manual_seed(0)
    item, ref = cached[0], plain[0]
    assert item["video"].shape == ref["video"].shape and item["video"].dtype == torch.uint8
    assert item["audio"].shape == ref["audio"].shape
    row = cached.entries[0].index
    # The tiny settings crop the whole short side, so the item is exactly one of the cached clips.
    assert any(np.array_equal(video[row, c], item["video"].numpy()) for c in range(3))
    # A second dataset over the same folder reuses the files instead of decoding again.
    stamp = (cache_folder(root, data) / "video_train3.npy").stat().st_mtime_ns
    ClipDataset(root, data, "train", "train")
    assert (cache_folder(root, data) / "video_train3.npy").stat().st_mtime_ns == stamp


def test_the_cache_lives_outside_the_decoded_dataset_and_follows_its_files(tiny_decoded, tmp_path, clip_cache_dir):
    root = tmp_path / "decoded"
    shutil.copytree(tiny_decoded, root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    ClipDataset(root, _data(2), "eval", "test", ("audio",))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # a DVC output stays unchanged
    folder = cache_folder(root, _data(2))
    assert folder.is_relative_to(clip_cache_dir) and (folder / "audio_eval2.npy").is_file()
    victim = next((root / "audio").iterdir())
    victim.write_bytes(victim.read_bytes())  # re-written (e.g. decoded again): a new cache key
    assert cache_folder(root, _data(2)) != folder
