"""Pre-decoded clips (``data.clip_cache``): decode a few clips of every video once, then train on them.

On a 2-core CPU a slim encoder's SGD step is cheaper than decoding its batch from H.264, so a run
that decodes every visit spends most of its time in FFmpeg. With ``data.clip_cache = C > 0`` the
first dataset that needs them decodes, for every video of the decoded dataset:

* ``train<C>``: ``C`` clips at random starts (temporal jitter), each kept as the centre square of the
  scaled frames (``short_side`` x ``short_side``) with its 2 s log-mel window; a training visit
  picks one of the ``C`` clips at random and takes a random ``crop_size`` crop of it, so the
  augmentations are those of the uncached path (random start, random crop) over ``C`` starts;
* ``eval<n>``: the ``n`` uniformly spaced, centre-cropped clips of eval mode (exactly what the
  uncached path returns, so features and probes see the same inputs).

The random starts depend only on the video's index and the clip number, never on the run's seed:
the cache is data, shared by every run, method and seed over the same decoded dataset. Files are
``.npy`` arrays (memory-mapped when read, so DataLoader workers share them) in
``$XDC_CACHE_DIR/clip_cache/<key>/`` (:func:`cache_folder`), where the key hashes the settings and
the decoded dataset; delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .config import DataConfig

if TYPE_CHECKING:
    from .dataset import ClipDataset

CACHE_SEED = 20201  # fixed: the cached starts are part of the data, not of a run
CLIP_FORMAT = 2  # raised whenever the code changes a cached clip's bits, so an older cache is not reused


def cache_key(root: Path, data: DataConfig) -> str:
    """Hash of the decoded dataset (its index, and each file's size and modification time) and of
    every setting that changes a cached clip: a re-decoded or edited dataset gets a new cache."""
    root = Path(root)
    h = hashlib.sha1((root / "index.csv").read_bytes())
    h.update(f"format {CLIP_FORMAT}".encode())
    for folder in ("video", "audio"):
        for f in sorted((root / folder).iterdir()) if (root / folder).is_dir() else []:
            st = f.stat()
            h.update(f"{folder}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    fields = ("clip_frames", "fps", "short_side", "crop_size", "audio_rate", "audio_seconds", "n_mels", "mel_frames")
    h.update(json.dumps({f: getattr(data, f) for f in fields}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_folder(root: Path, data: DataConfig) -> Path:
    """Where the cache of the decoded dataset ``root`` lives: ``$XDC_CACHE_DIR`` (default
    ``$XDG_CACHE_HOME/xdc``, i.e. ``~/.cache/xdc``) ``/clip_cache/<key>``. Never inside the decoded
    dataset: that is a DVC output or a pipeline's input artifact, which a later step must not change."""
    base = os.environ.get("XDC_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xdc"
    return Path(base) / "clip_cache" / cache_key(root, data)


class _Decoder(Dataset[dict[str, np.ndarray]]):
    """Item ``i``: the clips of video ``i`` of an uncached dataset, for one cache kind."""

    def __init__(self, source: ClipDataset, kind: str) -> None:
        self.source, self.kind = source, kind

    def __len__(self) -> int:
        return len(self.source.entries)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if self.kind.startswith("train"):
            rng = np.random.default_rng([CACHE_SEED, self.source.entries[i].index])
            item = self.source.read(i, self.source.train_starts(i, self.source.cached_clips, rng), "square", rng)
        else:
            item = self.source[i]  # eval mode: the uniform, centre-cropped clips
        return {m: np.asarray(item[m]) for m in self.source.modalities}


def load_or_build(source: ClipDataset, kind: str, workers: int = 2) -> dict[str, np.ndarray]:
    """The cached clips of every video of ``source`` (an uncached dataset over the whole index)
    for ``kind`` (``train<C>`` or ``eval<n>``), one memory-mapped array per modality, built if absent."""
    folder = cache_folder(source.root, source.data)
    paths = {m: folder / f"{m}_{kind}.npy" for m in source.modalities}
    missing = [m for m, p in paths.items() if not p.is_file()]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        build = _Decoder(source, kind)
        first = build[0]
        tmp: dict[str, Any] = {
            m: np.lib.format.open_memmap(
                folder / f"{m}_{kind}.{os.getpid()}.tmp.npy", mode="w+", dtype=first[m].dtype,
                shape=(len(build), *first[m].shape),
            )
            for m in missing
        }
        loader = DataLoader(build, batch_size=None, num_workers=workers, collate_fn=lambda x: x)
        for i, item in enumerate(loader):
            for m in missing:
                tmp[m][i] = item[m]
        for m in missing:
            tmp[m].flush()
            Path(tmp[m].filename).replace(paths[m])  # atomic: a killed build leaves no partial cache
    return {m: np.load(p, mmap_mode="r") for m, p in paths.items()}
