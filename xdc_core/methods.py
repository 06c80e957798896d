"""The four deep-clustering methods of paper §3 as data: what is clustered, and who learns from it.

A method only changes (1) which feature sets are clustered and (2) which clusterings become the
classification targets (heads) of each encoder; the rest of the loop is identical. Everything
here is pure and small so it can be read against the paper:

======  ======================================  ============================  ===========================
method  clustered feature sets                  video encoder's heads         audio encoder's heads
======  ======================================  ============================  ===========================
SDC     video, audio (each alone)               video clusters                audio clusters
MDC     video, audio (each alone)               video clusters, audio clusters audio clusters, video clusters
CDC     [l2(video), l2(audio)] concatenated     joint clusters                joint clusters
XDC     video, audio (each alone)               audio clusters                video clusters
======  ======================================  ============================  ===========================
"""

from __future__ import annotations

import numpy as np

from .config import METHODS
from .kmeans import l2_normalize

# method -> feature sets to cluster
CLUSTERED: dict[str, tuple[str, ...]] = {
    "sdc": ("video", "audio"),
    "mdc": ("video", "audio"),
    "cdc": ("joint",),
    "xdc": ("video", "audio"),
}

# method -> encoder -> clusterings used as its targets, one classification head each (first = the
# head whose classes the sampler balances)
HEADS: dict[str, dict[str, tuple[str, ...]]] = {
    "sdc": {"video": ("video",), "audio": ("audio",)},
    "mdc": {"video": ("video", "audio"), "audio": ("audio", "video")},
    "cdc": {"video": ("joint",), "audio": ("joint",)},
    "xdc": {"video": ("audio",), "audio": ("video",)},
}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def feature_sets(method: str, video: np.ndarray, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The feature arrays to cluster for ``method`` (CDC: each modality L2-normalised, then concatenated)."""
    check_method(method)
    available = {"video": video, "audio": audio}
    if "joint" in CLUSTERED[method]:
        available["joint"] = np.concatenate([l2_normalize(video), l2_normalize(audio)], axis=1)
    return {name: available[name] for name in CLUSTERED[method]}


def targets(method: str, clusterings: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Per encoder, the pseudo-label arrays of its heads, from the clusterings of :func:`feature_sets`."""
    check_method(method)
    missing = set(CLUSTERED[method]) - set(clusterings)
    if missing:
        raise ValueError(f"{method} needs clusterings of {sorted(missing)}")
    return {encoder: [clusterings[name] for name in heads] for encoder, heads in HEADS[method].items()}
