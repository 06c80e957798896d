"""Where a run's files live: one layout for ``xdc run``, ``xdc step`` and the DVC stages.

    OUT/settings.yaml                the run's effective settings, recorded once (a rerun must match them)
    OUT/.xdc-run.lock                held (flock) by the `xdc run` working in OUT
    OUT/sample/                      the embedded sample dataset (when no data is given)
    OUT/decoded/                     the decoded dataset
    OUT/iter_00/{video,audio}_encoder.pt            the random-init encoders ("iteration 0")
    OUT/iter_NN/features_{video,audio}.npz          embed
    OUT/iter_NN/clusters.npz, kmeans.json           k-means: assignments, statistics
    OUT/iter_NN/gallery.html                        k-means: what the clusters hold (xdc_core/gallery.py)
    OUT/iter_NN/{video,audio}_encoder.pt            train: the encoders iteration NN+1 starts from
    OUT/iter_NN/train_{video,audio}.json            train: losses, kept epoch, why it stopped
    OUT/iter_NN/train_{video,audio}/last.pt         train: the epoch checkpoint a rerun resumes from
    OUT/iter_NN/train_{video,audio}/last.pt.sha256  its SHA-256, checked before it is loaded
    OUT/{video,audio}_encoder.pt     the final encoders (plain torchvision state dicts)
    OUT/metrics.json                 evaluation (linear probe; random-init baseline)
    OUT/plots/                       plot data of every iteration (``dvc plots show``)
    OUT/plots/curves.png             the learning curves drawn from it

An iteration is done when its statistics files exist: each step writes them last, atomically.
Kubeflow passes the same files as artifacts instead, under names KFP chooses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import MODALITIES
from .errors import InputError

CROSS_MODAL = "cross_modal"  # the key of the video-vs-audio cluster agreement in kmeans.json


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run under ``root``."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "settings.yaml"

    @property
    def lock(self) -> Path:
        return self.root / ".xdc-run.lock"

    @property
    def sample(self) -> Path:
        return self.root / "sample"

    @property
    def decoded(self) -> Path:
        return self.root / "decoded"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def curves(self) -> Path:
        return self.plots / "curves.png"

    def final_encoder(self, modality: str) -> Path:
        return self.root / f"{modality}_encoder.pt"

    def iteration(self, it: int) -> Path:
        """Iteration ``it``'s folder (0: the random init)."""
        return self.root / f"iter_{it:02d}"

    def encoder(self, it: int, modality: str) -> Path:
        """The ``modality`` encoder after iteration ``it`` (0: the random init)."""
        return self.iteration(it) / f"{modality}_encoder.pt"

    def features(self, it: int, modality: str) -> Path:
        return self.iteration(it) / f"features_{modality}.npz"

    def clusters(self, it: int) -> Path:
        return self.iteration(it) / "clusters.npz"

    def kmeans_stats(self, it: int) -> Path:
        return self.iteration(it) / "kmeans.json"

    def gallery(self, it: int) -> Path:
        """The cluster gallery of iteration ``it``: one self-contained HTML page."""
        return self.iteration(it) / "gallery.html"

    def train_stats(self, it: int, modality: str) -> Path:
        return self.iteration(it) / f"train_{modality}.json"

    def checkpoints(self, it: int, modality: str) -> Path:
        return self.iteration(it) / f"train_{modality}"

    def stats_files(self, it: int) -> list[Path]:
        return [self.kmeans_stats(it), *(self.train_stats(it, m) for m in MODALITIES)]

    def done(self, it: int) -> bool:
        """Whether iteration ``it`` finished: its statistics are written after its outputs."""
        return all(p.is_file() for p in self.stats_files(it))

    def iteration_stats(self, it: int) -> dict[str, Any]:
        """``{"iteration", "k", "clusters": {name: stats}, "train": {modality: result}}`` of a finished iteration."""
        kmeans = read_stats(self.kmeans_stats(it), it)
        train = {m: read_stats(self.train_stats(it, m), it) for m in MODALITIES}
        return {"iteration": it, "k": kmeans["k"], "clusters": kmeans["clusters"], "train": train}


def read_stats(path: Path, iteration: int) -> dict[str, Any]:
    """One statistics file of iteration ``iteration``, checked to be it."""
    try:
        stats = json.loads(Path(path).read_text())
        found = int(stats["iteration"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"iteration statistics {path} are missing or unreadable: {err}") from None
    if found != iteration:
        raise InputError(f"{path} holds the statistics of iteration {found}, not {iteration}")
    return stats
