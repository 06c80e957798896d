"""PyTorch dataset over a decoded dataset folder (written by :mod:`xdc_core.decode`).

Two modes, as in the paper (§4.1):

* ``train``: one clip per video per visit, with temporal jitter (random start) and a random
  crop; the 2 s audio window is centred on the clip.
* ``eval``: ``data.eval_clips`` uniformly spaced clips per video, centre crop, stacked.

Each item is a dict: ``video`` uint8 ``[3, L, S, S]`` (eval: ``[N, 3, L, S, S]``), ``audio``
float32 log-mel ``[1, Q, P]`` (eval: ``[N, 1, Q, P]``), ``index`` (the video's row in
``index.csv``) and ``label`` (class index, or -1 when the manifest had no label).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DataConfig
from .decode import DatasetMismatch
from .media.file import MediaFile
from .media.logmel import log_mel
from .media.timing import audio_window_start, random_clip_start, uniform_clip_starts

Mode = Literal["train", "eval"]


@dataclass(frozen=True)
class VideoEntry:
    index: int
    id: str
    path: str
    label: str | None
    split: str | None
    duration: float


def read_index(root: str | Path) -> list[VideoEntry]:
    """The accepted videos of a decoded dataset, in video-index order."""
    path = Path(root) / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a decoded dataset: {path.name} is missing (run `xdc decode` first)")
    with open(path, newline="") as f:
        try:
            return [
                VideoEntry(
                    index=int(r["index"]),
                    id=r["id"],
                    path=r["path"],
                    label=r["label"] or None,
                    split=r["split"] or None,
                    duration=float(r["duration"]),
                )
                for r in csv.DictReader(f)
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetMismatch(
                f"{path} is not an index written by `xdc decode` ({type(err).__name__}: {err}); decode the data again"
            ) from None


class ClipDataset(Dataset[dict[str, Any]]):
    """Clips and aligned log-mel windows from a decoded dataset folder."""

    def __init__(
        self,
        root: str | Path,
        data: DataConfig,
        mode: Mode = "train",
        split: str | None = None,
        modalities: tuple[str, ...] = ("video", "audio"),
        clips: int | None = None,
    ) -> None:
        """``modalities`` limits what is decoded (an audio encoder never needs frames); ``clips``
        overrides ``data.eval_clips`` in eval mode (e.g. 1 middle clip for clustering features)."""
        self.root = Path(root)
        self.data = data
        self.mode = mode
        self.modalities = modalities
        self.clips = clips or data.eval_clips
        entries = read_index(self.root)
        meta = json.loads((self.root / "meta.json").read_text()) if (self.root / "meta.json").is_file() else {}
        wanted = {"fps": data.fps, "short_side": data.short_side, "audio_rate": data.audio_rate}
        diff = {k: (meta.get(k), v) for k, v in wanted.items() if meta.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}: dataset has {a}, settings ask {b}" for k, (a, b) in diff.items())
            raise DatasetMismatch(f"{self.root} does not match the data settings ({changes}); decode it again")
        # Class indices come from every labelled video, so train and test subsets agree.
        self.classes = sorted({e.label for e in entries if e.label})
        self.entries = [e for e in entries if split is None or e.split == split]
        if not self.entries:
            raise ValueError(f"{self.root}: no videos" + (f" in split {split!r}" if split else ""))
        self._class_index = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [self._label(e) for e in self.entries]

    def _label(self, e: VideoEntry) -> int:
        return self._class_index[e.label] if e.label else -1

    def _audio(self, entry: VideoEntry, clip_start: float) -> torch.Tensor:
        d = self.data
        pcm = np.load(self.root / "audio" / f"{entry.id}.npy", mmap_mode="r")
        start = audio_window_start(clip_start, d.clip_seconds, d.audio_seconds, entry.duration)
        s0 = round(start * d.audio_rate)
        window = np.zeros(d.audio_samples, np.float32)  # zero-padded past the end (short-video rule)
        part = pcm[s0 : s0 + d.audio_samples]
        window[: len(part)] = part / 32768.0
        return log_mel(window, d.audio_rate, d.n_mels, d.mel_frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        d = self.data
        entry = self.entries[i]
        if self.mode == "train":
            # Drawn from torch's RNG so DataLoader workers get distinct, seedable streams.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            starts = [random_clip_start(entry.duration, d.clip_seconds, rng)]
            crop = "random"
        else:
            rng = None
            starts = uniform_clip_starts(entry.duration, d.clip_seconds, self.clips)
            crop = "center"
        item: dict[str, Any] = {"index": entry.index, "label": self._label(entry)}
        if "video" in self.modalities:
            with MediaFile(self.root / "video" / f"{entry.id}.mp4") as m:
                clips = [
                    torch.from_numpy(m.video_clip(s, d.clip_frames, d.fps, d.short_side, d.crop_size, crop, rng))
                    for s in starts
                ]
            item["video"] = clips[0] if self.mode == "train" else torch.stack(clips)
        if "audio" in self.modalities:
            specs = [self._audio(entry, s) for s in starts]
            item["audio"] = specs[0] if self.mode == "train" else torch.stack(specs)
        return item
