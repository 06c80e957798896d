"""The library's k-means on a GPU, in torch: the algorithm faiss runs on the CPU path.

faiss-gpu's wheels bring their own CUDA 12 runtime beside torch's, which is unverified in one
process and too large for the images (docs/benchmarks.md); torch is already on the GPU. So the
GPU path is this module, and faiss stays the CPU path (xdc_core/kmeans.py picks one):

- **Seeding**: k-means++, each centroid drawn with probability proportional to the squared
  distance to the nearest one drawn before; here its greedy form (scikit-learn's default): each
  draw tries ``2 + ln k`` candidates and keeps the best, which costs one matrix product per
  centroid on the GPU and reaches a lower objective than faiss's single draws (tests/test_kmeans.py).
  faiss runs its seeding serially on one CPU thread (about 40 s at 1M x 512, k = 512).
- **Lloyd iterations** on all the points: assign to the nearest centroid, move each centroid to
  its points' mean; a cluster left empty takes over a perturbed copy of a large cluster's centroid,
  picked with probability proportional to its size minus one (faiss's ``split_clusters``).
- **The final assignment** to the final centroids, with each point's squared distance.

Distances are ``|x|^2 - 2 x.c + |c|^2`` in float32 matrix products (TF32 off), in blocks of rows
so the [N, k] matrix never exists whole. Seeded by a ``torch.Generator`` on the data's device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

# faiss's perturbation of a split centroid (Clustering.cpp, EPS)
_SPLIT_EPS = 1.0 / 1024
_BLOCK_ELEMENTS = 1 << 24  # of the [rows, k] distance block: 64 MB


@contextlib.contextmanager
def _exact_matmul() -> Iterator[None]:
    """float32 products without TF32 (its 10-bit mantissa would move points between close centroids)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centroid (int64) and squared distance to it (float32, clamped at 0)."""
    c_sq = (centroids * centroids).sum(1)
    step = max(1, _BLOCK_ELEMENTS // max(len(centroids), 1))
    idx = torch.empty(len(x), dtype=torch.int64, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float32, device=x.device)
    for start in range(0, len(x), step):
        block = x[start : start + step]
        d = torch.addmm(c_sq, block, centroids.T, alpha=-2.0)  # |c|^2 - 2 x.c, [rows, k]
        best, arg = d.min(1)
        idx[start : start + step] = arg
        dist[start : start + step] = (best + (block * block).sum(1)).clamp_(min=0)
    return idx, dist


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k centroids drawn from the rows of ``x`` by greedy k-means++: each draws ``2 + ln k``
    candidates with probability proportional to the squared distance to the nearest centroid so
    far (D^2 sampling) and keeps the one that lowers the sum of those distances most."""
    n = len(x)
    trials = 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = torch.randint(n, (1,), generator=generator, device=x.device)[0]
    centroids[0] = x[first]
    d2 = (x_sq - 2 * (x @ x[first]) + x_sq[first]).clamp_(min=0)
    for i in range(1, k):
        # every point on a centroid already (duplicates): any point will do
        weights = d2 if bool(d2.sum() > 0) else torch.ones_like(d2)
        candidates = torch.multinomial(weights, trials, replacement=True, generator=generator)
        # one [N, trials] product: no [N, d] temporary
        to_candidate = torch.addmm(x_sq[candidates][None], x, x[candidates].T, alpha=-2.0)
        after = torch.minimum(d2[:, None], (to_candidate + x_sq[:, None]).clamp_(min=0))
        best = int(after.sum(0).argmin())
        centroids[i] = x[candidates[best]]
        d2 = after[:, best].contiguous()
    return centroids


def _update(x: torch.Tensor, assign: torch.Tensor, centroids: torch.Tensor, generator: torch.Generator) -> int:
    """Move each centroid to its points' mean, in place; split a large cluster into each empty one
    as faiss does. Returns how many were empty."""
    k, d = centroids.shape
    sums = torch.zeros_like(centroids).index_add_(0, assign, x)
    sizes = torch.bincount(assign, minlength=k).to(x.dtype)
    full = sizes > 0
    centroids[full] = sums[full] / sizes[full, None]
    empty = torch.nonzero(~full).flatten().tolist()
    if not empty:
        return 0
    sign = torch.where(torch.arange(d, device=x.device) % 2 == 0, 1.0, -1.0).to(x.dtype)
    for ci in empty:
        cj = int(torch.multinomial((sizes - 1).clamp(min=0), 1, generator=generator)[0])
        centroids[ci] = centroids[cj] * (1 + sign * _SPLIT_EPS)
        centroids[cj] = centroids[cj] * (1 - sign * _SPLIT_EPS)
        sizes[ci] = torch.floor(sizes[cj] / 2)
        sizes[cj] -= sizes[ci]
    return len(empty)


def train_kmeans(x: np.ndarray, k: int, seed: int, niter: int, device: str | torch.device
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means of the float32 rows ``x`` on ``device``; returns, as faiss's path does, the
    nearest-centroid assignments (int64), the centroids (float32) and each point's squared
    distance to its centroid (float32). ``N >= k`` is the caller's to check."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    with torch.no_grad(), _exact_matmul():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        centroids = kmeans_plus_plus(xt, k, generator)
        for _ in range(niter):
            assign, _ = nearest(xt, centroids)
            _update(xt, assign, centroids, generator)
        assign, dist = nearest(xt, centroids)
        return assign.cpu().numpy(), centroids.cpu().numpy(), dist.cpu().numpy()
