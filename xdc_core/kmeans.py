"""The clustering step of Cross-Modal Deep Clustering: k-means on one modality's features.

As in DeepCluster (facebookresearch/deepcluster, ``clustering.py``): L2-normalise the features,
optionally PCA-whiten them and L2-normalise again, run faiss k-means on *all* points, assign each
point to its nearest centroid, then re-split the largest clusters until no cluster is empty (an
empty cluster would be a pseudo-label that never gets a training example). The assignments are
the pseudo-labels that supervise the *other* modality's encoder.

numpy and faiss (scikit-learn for NMI and purity), no I/O, so it is easy to test and to run on a
CPU. With ``use_gpu`` and a CUDA GPU, the seeding and the iterations run on that GPU in torch
(xdc_core/kmeans_torch.py: the same algorithm; faiss-gpu would bring a second CUDA runtime); without
a GPU they run in faiss on the CPU, with one logged warning. Memory: one float32 copy of the
features (two with PCA: the whitened copy is smaller or equal) plus O(N) arrays; every other
O(N*d) pass works in blocks of rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

log = logging.getLogger(__name__)

# Elements per block in the O(N*d) numpy passes (finite check, normalisation, distances):
# 16-32 MB temporaries whatever N is, instead of one N*d temporary per operation.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ClusterStats:
    """What one clustering looked like; reported per epoch, never used for training."""

    k: int
    sizes_min: int
    sizes_median: float
    sizes_max: int
    empty_before_fix: int  # clusters faiss left empty in the final assignment, before re-splitting
    objective: float  # sum of squared distances to the assigned centroid, after the fix
    nmi_previous: float | None  # NMI with the previous iteration's assignment, when given
    purity: float | None  # vs true labels, when given (reporting only)
    nmi_labels: float | None  # vs true labels, when given (reporting only)
    device: str  # where it ran: "cpu" (faiss) or "cuda:N" (torch)

    def to_dict(self) -> dict:
        """A plain JSON-able dict, floats rounded to 4 decimals."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Clustering:
    assignments: np.ndarray  # int64 [N], values in [0, k), every cluster non-empty
    centroids: np.ndarray  # float32 [k, d'] in the (possibly PCA-whitened) normalised space
    stats: ClusterStats


def _block_rows(d: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(d, 1))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new float32 C-contiguous array (the one copy of ``x``);
    all-zero rows stay zero instead of becoming NaN."""
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    _l2_normalize_inplace(out)
    return out


def _l2_normalize_inplace(x: np.ndarray) -> None:
    """:func:`l2_normalize` of a float32 C-contiguous array, in place, block by block.

    numpy's norm and division rather than ``faiss.normalize_L2`` (in place too, and faster): the two
    round differently, and a switch would change the clusters every seed gives. Each row is
    normalised on its own, so the block size changes no bit.
    """
    step = _block_rows(x.shape[1])
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]  # a view: the division writes into x
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, np.maximum(norms, 1e-12), out=block)


def _count_nonfinite_rows(x: np.ndarray) -> int:
    """Rows of ``x`` with a NaN or inf, checked block by block (isfinite makes an N*d bool array)."""
    step = _block_rows(x.shape[1])
    return sum(int(np.count_nonzero(~np.isfinite(x[s : s + step]).all(axis=1))) for s in range(0, x.shape[0], step))


def _sq_distances(x: np.ndarray, rows: np.ndarray, assignments: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """float64 squared distance of each ``x[rows[i]]`` to its centroid, block by block."""
    out = np.empty(len(rows), dtype=np.float64)
    step = _block_rows(x.shape[1])
    for start in range(0, len(rows), step):
        r = rows[start : start + step]
        diff = x[r].astype(np.float64) - centroids[assignments[r]]
        out[start : start + step] = np.einsum("ij,ij->i", diff, diff)
    return out


def pca_whiten(x: np.ndarray, dim: int) -> np.ndarray:
    """PCA to ``min(dim, d, N-1)`` dims with whitening (eigenvalues scaled to 1); float32 out."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    # N centred points span at most N-1 dimensions: more components would be pure noise.
    dim = max(1, min(dim, d, n - 1))
    pca = faiss.PCAMatrix(d, dim, -0.5)
    # Whitening divides by sqrt(eigenvalue); the epsilon keeps a zero eigenvalue (degenerate
    # data) from turning into inf/NaN.
    pca.epsilon = 1e-8
    pca.train(x)
    return pca.apply(x).astype(np.float32, copy=False)


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized mutual information, MI / mean(H(a), H(b)): scikit-learn's arithmetic normalisation
    (its default; DeepCluster's NMI between successive clusterings)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"nmi: the labelings differ in length ({a.size} vs {b.size})")
    return float(normalized_mutual_info_score(a, b, average_method="arithmetic"))


def nmi_with_chance(a: np.ndarray, b: np.ndarray, seed: int, shuffles: int = 10) -> dict[str, float]:
    """NMI between two labelings of the same points, and its chance level: the mean NMI after
    shuffling which label of ``b`` goes with which point (same label counts). NMI's floor is not 0
    for finite samples (about 0.03 for 2000 points in 16 x 8 groups), so the chance level is what a
    value must be compared with."""
    rng = np.random.default_rng([seed, 13])
    chance = [nmi(a, rng.permutation(b)) for _ in range(shuffles)]
    # The spread says whether a value above the mean is above chance (xdc_core/diagnosis.py).
    return {"nmi": round(nmi(a, b), 4), "nmi_chance": round(float(np.mean(chance)), 4),
            "nmi_chance_std": round(float(np.std(chance, ddof=1)), 5)}


def cross_modal_nmi(video: np.ndarray, audio: np.ndarray, seed: int) -> dict[str, float]:
    """:func:`nmi_with_chance` of the video and the audio clusters of the same videos.

    XDC bootstraps on what the two modalities share: ``nmi`` well above ``nmi_chance`` means each
    modality's clusters predict the other's, so the cross-modal targets carry signal.
    """
    return nmi_with_chance(video, audio, seed)


def purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of points whose label is the majority label of their cluster."""
    counts = contingency_matrix(np.asarray(assignments).ravel(), np.asarray(labels).ravel())  # [clusters, labels]
    return float(counts.max(axis=1).sum() / counts.sum())


def _device(use_gpu: bool) -> str:
    """Where the k-means runs: "cuda:N" (torch's current GPU) when a GPU is asked for and torch sees
    one, else "cpu" (faiss), with one logged warning when a GPU was asked for."""
    if not use_gpu:
        return "cpu"
    import torch  # only here: the CPU path needs no torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    log.warning("k-means on the CPU with %d threads: a GPU was asked for, but torch sees no CUDA GPU%s",
                faiss.omp_get_max_threads(), f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
    return "cpu"


def _train_kmeans(
    x: np.ndarray, k: int, seed: int, niter: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means on all of ``x`` (faiss on the CPU, torch on a "cuda" ``device``); returns the
    nearest-centroid assignments (int64), the centroids and each point's squared distance to its
    centroid (float32, from the same search)."""
    if device != "cpu":
        from .kmeans_torch import train_kmeans

        return train_kmeans(x, k, seed, niter, device)
    n, d = x.shape
    km = faiss.Kmeans(
        d, k, niter=niter, seed=seed, verbose=False,
        # k-means++ seeding (faiss's default is k random points): far fewer runs stuck with two
        # centroids in one mode. faiss runs it on one CPU thread, in O(N k d): about five
        # iterations' time at 20k x 512, k = 256.
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
        max_points_per_centroid=n,  # faiss subsamples to 256*k points by default: use them all
        min_points_per_centroid=1,  # N >= k is checked by the caller; silences faiss's warning
    )
    km.train(x)
    # The index holds the final centroids; its distances are the objective's terms, for free.
    dist, idx = km.index.search(x, 1)
    return idx[:, 0].astype(np.int64), np.asarray(km.centroids, dtype=np.float32), dist[:, 0]


def _fix_empty(
    x: np.ndarray, assignments: np.ndarray, centroids: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Give every empty cluster half of the largest cluster; returns (assignments, centroids, n_empty).

    The split is a seeded 2-means on the largest cluster's points; when those points are all
    identical 2-means cannot separate them, so half of them (by index) move instead.
    """
    assignments, centroids = assignments.copy(), centroids.copy()
    k = len(centroids)
    sizes = np.bincount(assignments, minlength=k)
    empty = [int(c) for c in np.flatnonzero(sizes == 0)]
    for c_empty in empty:
        # Pigeonhole: with N >= k and an empty cluster, the largest one has at least 2 points.
        c_big = int(np.argmax(sizes))
        members = np.flatnonzero(assignments == c_big)
        half, _, _ = _train_kmeans(x[members], 2, seed + c_empty, niter=10)
        moved = members[half == 1]
        if moved.size in (0, members.size):  # identical points: 2-means found one cluster
            moved = members[members.size // 2 :]
        assignments[moved] = c_empty
        for c in (c_big, c_empty):
            centroids[c] = x[assignments == c].mean(axis=0)
        sizes = np.bincount(assignments, minlength=k)
    return assignments, centroids, len(empty)


def kmeans(
    features: np.ndarray,
    k: int,
    seed: int,
    *,
    pca_dim: int = 0,
    niter: int = 20,
    use_gpu: bool = True,
    previous: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Clustering:
    """Cluster ``features`` [N, d] into ``k`` non-empty clusters (DeepCluster preprocessing).

    ``pca_dim`` > 0 PCA-whitens to that many dims first (DeepCluster uses 256; XDC clusters the
    features directly). ``previous`` (last epoch's assignments) and ``labels`` (true classes,
    -1 = unknown) only feed the reported stats. ``use_gpu``: run on torch's current CUDA GPU, or
    on the CPU with a logged warning where torch sees none; ``stats.device`` says which.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D [videos, dims], got shape {features.shape}")
    n = features.shape[0]
    bad = _count_nonfinite_rows(features)
    if bad:
        raise ValueError(f"features must be finite: {bad} of {n} rows contain NaN or inf")
    if k < 2:
        raise ValueError(f"k (={k}) must be at least 2")
    if k > n:
        raise ValueError(f"k (={k}) must not exceed the number of videos (={n})")
    for name, arr in (("previous", previous), ("labels", labels)):
        if arr is not None and np.asarray(arr).shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {np.asarray(arr).shape}")

    x = l2_normalize(features)  # the one copy of the caller's array
    if pca_dim > 0:
        # Whitening then re-normalising keeps a few dominant directions from deciding the clusters.
        x = pca_whiten(x, pca_dim)  # a new array: normalised in place, the full-width copy is freed
        _l2_normalize_inplace(x)
    device = _device(use_gpu)
    found, found_centroids, dist = _train_kmeans(x, k, seed, niter, device)
    assignments, centroids, n_empty = _fix_empty(x, found, found_centroids, seed)

    # The objective from faiss's distances (float32 terms, summed in float64). Re-splitting moved
    # some points and some centroids: recompute exactly the terms it made stale, in float64.
    sq = dist.astype(np.float64)
    if n_empty:
        moved_centroids = np.flatnonzero((centroids != found_centroids).any(axis=1))
        stale = np.flatnonzero((assignments != found) | np.isin(assignments, moved_centroids))
        sq[stale] = _sq_distances(x, stale, assignments, centroids)
    objective = float(sq.sum())
    sizes = np.bincount(assignments, minlength=k)
    known = None if labels is None else np.asarray(labels) >= 0
    has_labels = known is not None and bool(known.any())
    stats = ClusterStats(
        k=k,
        sizes_min=int(sizes.min()),
        sizes_median=float(np.median(sizes)),
        sizes_max=int(sizes.max()),
        empty_before_fix=n_empty,
        objective=objective,
        nmi_previous=None if previous is None else nmi(assignments, previous),
        purity=purity(assignments[known], np.asarray(labels)[known]) if has_labels else None,
        nmi_labels=nmi(assignments[known], np.asarray(labels)[known]) if has_labels else None,
        device=device,
    )
    return Clustering(assignments=assignments, centroids=centroids, stats=stats)
