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
from .errors import InputError
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
        self._rows = [row for row, e in enumerate(entries) if split is None or e.split == split]
        self.entries = [entries[row] for row in self._rows]
        if not self.entries:
            raise ValueError(f"{self.root}: no videos" + (f" in split {split!r}" if split else ""))
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        self.cached_clips = data.clip_cache
        self._cache: dict[str, np.ndarray] = {}
        if data.clip_cache > 0:  # here, in the main process: DataLoader workers cannot build it
            from .clip_cache import load_or_build

            kind = f"train{data.clip_cache}" if mode == "train" else f"eval{self.clips}"
            self._cache = load_or_build(self._uncached(modalities), kind)

    def _uncached(self, modalities: tuple[str, ...]) -> ClipDataset:
        """This dataset over the whole index, decoding at every visit, reading only ``modalities``:
        what builds the cache (it keeps ``data.clip_cache``, the number of clips to cache)."""
        twin = ClipDataset(self.root, self.data.model_copy(update={"clip_cache": 0}), self.mode, None, modalities,
                           self.clips)
        twin.cached_clips = self.data.clip_cache
        return twin

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [self._label(e) for e in self.entries]

    def _label(self, e: VideoEntry) -> int:
        return self._class_index[e.label] if e.label else -1

    def _audio(self, entry: VideoEntry, clip_start: float) -> torch.Tensor:
        d = self.data
        path = self.root / "audio" / f"{entry.id}.npy"
        try:
            pcm = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:  # e.g. a header declaring more samples than the file holds
            raise InputError(f"{path} is not an audio file xdc decoded ({err}): decode the dataset again") from None
        start = audio_window_start(clip_start, d.clip_seconds, d.audio_seconds, entry.duration)
        s0 = round(start * d.audio_rate)
        window = np.zeros(d.audio_samples, np.float32)  # zero-padded past the end (short-video rule)
        part = pcm[s0 : s0 + d.audio_samples]
        window[: len(part)] = part / 32768.0
        return log_mel(window, d.audio_rate, d.n_mels, d.mel_frames)

    def train_starts(self, i: int, n: int, rng: np.random.Generator) -> list[float]:
        """``n`` random clip starts of video ``i`` (temporal jitter)."""
        return [random_clip_start(self.entries[i].duration, self.data.clip_seconds, rng) for _ in range(n)]

    def read(self, i: int, starts: list[float], crop: str, rng: np.random.Generator | None) -> dict[str, Any]:
        """Decode the clips of video ``i`` at ``starts``: stacked ``[N, ...]`` arrays per modality.
        ``crop``: ``random``, ``center`` or ``square`` (the centre ``short_side`` square, uncropped)."""
        d = self.data
        entry = self.entries[i]
        item: dict[str, Any] = {"index": entry.index, "label": self._label(entry)}
        if "video" in self.modalities:
            size = d.short_side if crop == "square" else d.crop_size
            mode = "center" if crop == "square" else crop
            with MediaFile(self.root / "video" / f"{entry.id}.mp4") as m:
                clips = [
                    torch.from_numpy(m.video_clip(s, d.clip_frames, d.fps, d.short_side, size, mode, rng))  # type: ignore[arg-type]
                    for s in starts
                ]
            item["video"] = torch.stack(clips)
        if "audio" in self.modalities:
            item["audio"] = torch.stack([self._audio(entry, s) for s in starts])
        return item

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.mode == "train":
            # Drawn from torch's RNG so DataLoader workers get distinct, seedable streams.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        cache = self._cache
        if not cache:
            if self.mode == "train":
                item = self.read(i, self.train_starts(i, 1, rng), "random", rng)
                return item | {m: item[m][0] for m in self.modalities}
            starts = uniform_clip_starts(self.entries[i].duration, self.data.clip_seconds, self.clips)
            return self.read(i, starts, "center", None)
        row = self._rows[i]
        item = {"index": self.entries[i].index, "label": self._label(self.entries[i])}
        if self.mode == "eval":
            return item | {m: torch.from_numpy(np.array(cache[m][row])) for m in self.modalities}
        c = int(rng.integers(self.data.clip_cache))  # one of the cached random starts
        if "video" in self.modalities:
            item["video"] = random_crop(cache["video"][row, c], self.data.crop_size, rng)
        if "audio" in self.modalities:
            item["audio"] = torch.from_numpy(np.array(cache["audio"][row, c]))
        return item


def random_crop(square: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of a cached clip ``[3, L, S, S]`` (what the uncached path's crop does)."""
    s = square.shape[-1]
    y0, x0 = (int(v) for v in rng.integers(0, s - size + 1, 2))
    return torch.from_numpy(np.array(square[..., y0 : y0 + size, x0 : x0 + size]))  # a copy: the cache is read-only
