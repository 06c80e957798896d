"""Shared fixtures: the real clips in ../shared/data, and tiny synthetic videos made with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from prometheus_servers import monitoring  # noqa: F401  (a real Pushgateway and Prometheus for the metrics tests)
from s3_server import bucket, s3_env, s3_server  # noqa: F401  (a real S3 server for the storage tests)

from xdc_core.config import DataConfig
from xdc_core.sample_data import write_video

REAL_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-clips"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a real server (S3, Pushgateway, Prometheus) is an integration test, wherever it is."""
    for item in items:
        if {"bucket", "s3_env", "s3_server", "monitoring"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def clip_cache_dir(tmp_path_factory) -> Path:
    """Pre-decoded clips (data.clip_cache) go to a temporary folder, not the user's ~/.cache."""
    import os

    path = tmp_path_factory.mktemp("xdc_cache")
    os.environ["XDC_CACHE_DIR"] = str(path)  # also for the subprocesses the tests start
    return path


@pytest.fixture
def real_clips() -> Path:
    if not (REAL_CLIPS / "nasa_13013.mp4").is_file():
        pytest.skip(f"the shared real clips are not here ({REAL_CLIPS}); see ../shared/data/README.md")
    return REAL_CLIPS


@pytest.fixture
def tiny_data() -> DataConfig:
    """Small sizes so decoding and reading are fast on 2 cores."""
    return DataConfig(short_side=32, crop_size=32, clip_frames=4, eval_clips=3, audio_seconds=1.0, mel_frames=20)


def make_indexed_video(
    path: Path,
    frames: int,
    fps: int,
    size: tuple[int, int] = (48, 32),
    audio_rate: int | None = 16000,
    audio_onset: float | None = None,
) -> Path:
    """A video whose frame i is flat grey at level 8*i (so a test can tell which frame it got).

    Audio, if any, is silence until ``audio_onset`` seconds, then a loud 1 kHz tone.
    """
    w, h = size
    pics = np.stack([np.full((h, w, 3), min(8 * i, 255), np.uint8) for i in range(frames)])
    if audio_rate is None:
        with av.open(str(path), mode="w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=Fraction(fps))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            for i, rgb in enumerate(pics):
                f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                f.pts, f.time_base = i, Fraction(1, fps)
                out.mux(vs.encode(f))
            out.mux(vs.encode(None))
        return path
    n = round(frames / fps * audio_rate)
    t = np.arange(n) / audio_rate
    wave = 0.5 * np.sin(2 * np.pi * 1000 * t)
    if audio_onset is not None:
        wave[t < audio_onset] = 0.0
    write_video(path, pics, fps, wave.astype(np.float32), audio_rate)
    return path


def frame_indices(clip: np.ndarray) -> list[int]:
    """Recover the grey-level frame index of each frame of a ``[3, L, H, W]`` clip."""
    return [round(float(clip[:, i].mean()) / 8) for i in range(clip.shape[1])]


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory) -> Path:
    """A tiny labelled sample dataset (16 videos, 2 classes, 64x48, 2.5 s): its manifest path."""
    from xdc_core.sample_data import SampleSpec, make_sample_dataset

    root = tmp_path_factory.mktemp("tiny_sample")
    return make_sample_dataset(root, SampleSpec(videos=16, classes=2, seconds=2.5, width=64, height=48))


TINY_SETTINGS = {
    "data": {"short_side": 32, "crop_size": 32, "clip_frames": 4, "eval_clips": 2, "mel_frames": 20, "n_mels": 16},
    "model": {"video_width": 4, "audio_width": 4},
    "embed": {"batch_size": 8, "workers": 0},
    "cluster": {"k": 3, "iterations": 2},
    "train": {"epoch_size": 16, "batch_size": 8, "lr": 0.05, "warmup_epochs": 1, "step_epochs": 1,
              "total_epochs": 2, "workers": 0, "val_fraction": 0.25},
    "evaluate": {"probe": {"epoch_size": 64, "batch_size": 16, "warmup_epochs": 1, "step_epochs": 1,
                           "total_epochs": 2}, "probe_lrs": [0.01, 0.1], "workers": 0},
}


@pytest.fixture(scope="session")
def tiny_decoded(tiny_sample, tmp_path_factory) -> Path:
    """``tiny_sample`` decoded with the tiny settings."""
    from xdc_core.config import build_config
    from xdc_core.decode import decode_dataset

    out = tmp_path_factory.mktemp("tiny_decoded") / "decoded"
    decode_dataset(tiny_sample, out, build_config(TINY_SETTINGS), progress=False)
    return out
