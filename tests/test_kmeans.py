"""The clustering step: k-means recovers blobs, NMI/purity are right, no cluster is ever empty."""

from __future__ import annotations

import json
import logging
import tracemalloc

import faiss
import numpy as np
import pytest

import torch

import xdc_core.kmeans as kmeans_module
import xdc_core.kmeans_torch as kmeans_torch
from xdc_core.kmeans import _fix_empty, kmeans, l2_normalize, nmi, pca_whiten, purity


def blobs(n: int = 300, k: int = 6, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs around random directions (separable after L2 norm too)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 20
    ids = np.arange(n) % k
    return (centres[ids] + rng.normal(size=(n, d))).astype(np.float32), ids


def nmi_formula(a: np.ndarray, b: np.ndarray) -> float:
    """MI / mean(H(a), H(b)), written out with Python loops as an independent check."""
    pa = {x: np.mean(a == x) for x in set(a)}
    pb = {y: np.mean(b == y) for y in set(b)}
    mi = 0.0
    for x in pa:
        for y in pb:
            pxy = np.mean((a == x) & (b == y))
            if pxy > 0:
                mi += pxy * np.log(pxy / (pa[x] * pb[y]))
    h = lambda p: -sum(v * np.log(v) for v in p.values())  # noqa: E731
    return mi / ((h(pa) + h(pb)) / 2)


def test_recovers_blobs_with_correct_stats() -> None:
    x, ids = blobs()
    result = kmeans(x, 6, seed=0, labels=ids, use_gpu=False)
    a = result.assignments
    assert a.dtype == np.int64 and a.shape == (300,)
    assert result.centroids.dtype == np.float32 and result.centroids.shape == (6, 32)
    sizes = np.bincount(a, minlength=6)
    assert sizes.min() > 0 and a.max() < 6
    s = result.stats
    assert (s.k, s.sizes_min, s.sizes_max) == (6, sizes.min(), sizes.max())
    assert s.sizes_median == float(np.median(sizes))
    assert s.nmi_labels > 0.95 and s.purity > 0.95
    assert nmi(a, ids) > 0.95
    # The objective is the sum of squared distances in the clustered (normalised) space.
    xn = l2_normalize(x)
    assert s.objective == pytest.approx(float(((xn - result.centroids[a]) ** 2).sum()), rel=1e-4)
    d = s.to_dict()
    json.dumps(d)
    assert d["nmi_previous"] is None and d["purity"] == round(s.purity, 4)
    assert d["device"] == "cpu"  # use_gpu=False


def test_deterministic_for_a_seed() -> None:
    x, _ = blobs(n=200, k=8, d=16, seed=3)
    r1, r2 = kmeans(x, 8, seed=5), kmeans(x, 8, seed=5)
    np.testing.assert_array_equal(r1.assignments, r2.assignments)
    np.testing.assert_array_equal(r1.centroids, r2.centroids)


def test_pca_whitening_option() -> None:
    x, ids = blobs(n=300, k=6, d=32, seed=1)
    r = kmeans(x, 6, seed=0, pca_dim=8, labels=ids)
    assert r.centroids.shape == (6, 8)
    assert r.stats.nmi_labels > 0.95
    # The output dimension is capped by d and by N-1.
    assert pca_whiten(l2_normalize(x), 100).shape == (300, 32)
    assert kmeans(x[:10], 3, seed=0, pca_dim=64).centroids.shape == (3, 9)
    # Whitened: decorrelated components of equal variance (faiss's scale is 1/N, not 1).
    w = pca_whiten(l2_normalize(x), 8)
    cov = np.cov(w, rowvar=False)
    np.testing.assert_allclose(cov / cov[0, 0], np.eye(8), atol=1e-3)


def test_nmi_known_values() -> None:
    a = np.array([0, 0, 1, 1, 2, 2])
    assert nmi(a, a) == pytest.approx(1.0)
    assert nmi(a, np.array([7, 7, -3, -3, 5, 5])) == pytest.approx(1.0)  # any ints, permuted
    assert nmi([0, 0, 0], [4, 4, 4]) == 1.0  # both a single cluster
    assert nmi([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0  # one trivial labeling: MI = 0
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)  # independent
    # [0,0,1,1] vs [0,0,0,1], by hand: MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2 = 0.215761,
    # H(a) = ln 2 = 0.693147, H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335 -> 0.215761 / 0.627741
    assert nmi([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.343710, abs=1e-5)
    # [0,1,2,3] vs [0,0,1,1]: MI = H(b) = ln 2, H(a) = ln 4 -> ln2 / ((ln4 + ln2) / 2) = 2/3
    assert nmi([0, 1, 2, 3], [0, 0, 1, 1]) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, 5, 2000), rng.integers(0, 7, 2000)
    assert nmi(u, v) < 0.05
    u, v = rng.integers(0, 4, 60), rng.integers(0, 3, 60)
    assert nmi(u, v) == pytest.approx(nmi_formula(u, v), rel=1e-9)
    assert nmi(u, v) == pytest.approx(nmi(v, u), rel=1e-12)
    with pytest.raises(ValueError, match="length"):
        nmi([0, 1], [0, 1, 2])


def test_purity() -> None:
    assert purity(np.array([0, 0, 0, 1, 1]), np.array([3, 3, 4, 4, 4])) == pytest.approx(4 / 5)
    assert purity(np.array([5, 5, 9, 9]), np.array([1, 2, 1, 2])) == pytest.approx(0.5)


def test_fix_empty_splits_the_largest_cluster() -> None:
    x, _ = blobs(n=60, k=3, d=8, seed=2)
    x = l2_normalize(x)
    a = np.zeros(60, dtype=np.int64)
    a[40:] = 1  # clusters 2 and 3 empty; cluster 0 is the largest
    c = np.zeros((4, 8), dtype=np.float32)
    fixed, cents, n_empty = _fix_empty(x, a, c, seed=0)
    assert n_empty == 2
    assert set(np.unique(fixed)) == {0, 1, 2, 3}
    assert (fixed[40:] == 1).all()  # the cluster that was not split keeps its points
    for j in (0, 2, 3):  # the split clusters' centroids are the means of their points
        np.testing.assert_allclose(cents[j], x[fixed == j].mean(axis=0), atol=1e-6)
    assert (a[40:] == 1).all() and (a[:40] == 0).all()  # the input is not modified


def test_fix_empty_with_identical_points() -> None:
    x = np.ones((10, 4), dtype=np.float32) / 2
    a = np.zeros(10, dtype=np.int64)
    fixed, _, n_empty = _fix_empty(x, a, np.zeros((3, 4), dtype=np.float32), seed=0)
    assert n_empty == 2
    # 2-means cannot separate identical points, so half of the largest cluster moves by index:
    # 10 -> 5 + 5, then 5 -> 2 + 3.
    np.testing.assert_array_equal(np.bincount(fixed, minlength=3), [2, 5, 3])


def test_duplicates_more_clusters_than_distinct_points() -> None:
    # 3 distinct points repeated: k=5 forces at least 2 empty clusters in faiss's final assignment.
    base = np.eye(3, 6, dtype=np.float32)
    x = np.repeat(base, 20, axis=0)
    r = kmeans(x, 5, seed=0)
    assert np.bincount(r.assignments, minlength=5).min() > 0
    assert r.stats.empty_before_fix > 0
    assert r.stats.sizes_min > 0
    # All points identical, even through PCA whitening (zero eigenvalues): still k clusters.
    r = kmeans(np.ones((6, 3)), 3, seed=0, pca_dim=4)
    assert sorted(np.bincount(r.assignments, minlength=3)) == [1, 2, 3]
    assert np.isfinite(r.centroids).all() and r.stats.empty_before_fix == 2


def test_previous_and_labels_stats() -> None:
    x, ids = blobs(n=120, k=4, d=16, seed=4)
    r = kmeans(x, 4, seed=0)
    assert (r.stats.nmi_previous, r.stats.purity, r.stats.nmi_labels) == (None, None, None)
    r2 = kmeans(x, 4, seed=1, previous=r.assignments)
    assert r2.stats.nmi_previous == pytest.approx(nmi(r2.assignments, r.assignments))
    # Cluster ids are arbitrary: the same partition under other ids is NMI 1.
    assert kmeans(x, 4, seed=0, previous=(r.assignments + 1) * 10).stats.nmi_previous == pytest.approx(1.0)
    # -1 labels are ignored: scrambling them must not change purity / NMI.
    labels = ids.copy()
    labels[::3] = -1
    known = labels >= 0
    r3 = kmeans(x, 4, seed=0, labels=labels)
    assert r3.stats.purity == pytest.approx(purity(r3.assignments[known], labels[known]))
    assert r3.stats.nmi_labels == pytest.approx(nmi(r3.assignments[known], labels[known]))
    assert r3.stats.purity == pytest.approx(1.0)
    assert kmeans(x, 4, seed=0, labels=np.full(120, -1)).stats.purity is None


def test_bad_inputs() -> None:
    x, _ = blobs(n=20, k=2, d=4)
    with pytest.raises(ValueError, match=r"k \(=21\) must not exceed the number of videos \(=20\)"):
        kmeans(x, 21, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        kmeans(x, 1, seed=0)
    bad = x.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="2 of 20 rows contain NaN or inf"):
        kmeans(bad, 2, seed=0)
    with pytest.raises(ValueError, match="2-D"):
        kmeans(x[:, 0], 2, seed=0)
    with pytest.raises(ValueError, match="labels must have shape"):
        kmeans(x, 2, seed=0, labels=np.zeros(5, dtype=int))


def test_l2_normalize_zero_rows() -> None:
    y = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0]])


def brute_force_objective(x: np.ndarray, result) -> float:
    """Sum of squared distances of the clustered points to their centroids, in float64."""
    return float(((x.astype(np.float64) - result.centroids[result.assignments].astype(np.float64)) ** 2).sum())


@pytest.mark.parametrize("case", ["blobs", "pca", "duplicates", "float64 noise"])
def test_objective_is_the_brute_force_sum(case: str) -> None:
    # kmeans() sums faiss's own float32 distances instead of recomputing them: same value.
    rng = np.random.default_rng(7)
    if case == "duplicates":  # 3 distinct points, k = 5: clusters faiss left empty were re-split
        x, k, pca = np.repeat(np.eye(3, 6, dtype=np.float32), 20, axis=0), 5, 0
    elif case == "float64 noise":
        x, k, pca = rng.standard_normal((2000, 40)), 30, 0
    else:
        x, k, pca = blobs(n=400, k=8, d=32, seed=5)[0], 8, (8 if case == "pca" else 0)
    r = kmeans(x, k, seed=3, pca_dim=pca, use_gpu=False)
    xn = l2_normalize(pca_whiten(l2_normalize(x), pca)) if pca else l2_normalize(x)
    # faiss's terms are float32: a relative error far below 1e-6 once summed (1e-9 measured).
    assert r.stats.objective == pytest.approx(brute_force_objective(xn, r), rel=1e-6, abs=1e-9)
    if case == "duplicates":
        assert r.stats.empty_before_fix == 2


def test_objective_exact_after_empty_clusters_are_fixed(monkeypatch) -> None:
    # faiss's final search leaves a cluster empty (forced here: cluster 4's points handed to
    # cluster 0, with their distances to centroid 0, as faiss would report them). Re-splitting
    # then moves points and centroids, so faiss's distances are stale for those clusters.
    x, _ = blobs(n=200, k=5, d=16, seed=6)
    xn = l2_normalize(x)
    real = kmeans_module._train_kmeans
    naive = {}

    def faiss_left_cluster_4_empty(xs, k, seed, niter, device="cpu"):
        a, c, dist = real(xs, k, seed, niter, device)
        if k == 5:  # the main clustering, not _fix_empty's 2-means
            a = np.where(a == 4, 0, a)
            dist = ((xs - c[a]) ** 2).sum(axis=1, dtype=np.float32)
            naive["objective"] = float(dist.sum(dtype=np.float64))
        return a, c, dist

    monkeypatch.setattr(kmeans_module, "_train_kmeans", faiss_left_cluster_4_empty)
    r = kmeans(x, 5, seed=0, use_gpu=False)
    assert r.stats.empty_before_fix == 1 and np.bincount(r.assignments, minlength=5).min() > 0
    brute = brute_force_objective(xn, r)
    assert r.stats.objective == pytest.approx(brute, rel=1e-6)
    # Summing the stale distances would be far off: the check above can tell the two apart.
    assert abs(naive["objective"] - brute) > 0.05 * brute


def test_blockwise_passes_match_whole_array(monkeypatch) -> None:
    x, _ = blobs(n=300, k=6, d=32, seed=8)
    x[5] = 0.0  # a zero row stays zero
    whole = kmeans(x, 6, seed=1, use_gpu=False)
    monkeypatch.setattr(kmeans_module, "_BLOCK_ELEMENTS", 7 * 32 + 5)  # 7 rows a block, last one short
    xn = l2_normalize(x)
    # Bit-identical to the one-shot numpy formula, so a seed gives the same clusters as before.
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(xn, x / np.maximum(norms, 1e-12))
    assert (xn[5] == 0).all()
    blocked = kmeans(x, 6, seed=1, use_gpu=False)
    np.testing.assert_array_equal(blocked.assignments, whole.assignments)
    assert blocked.stats.objective == pytest.approx(whole.stats.objective, rel=1e-12)
    bad = x.copy()
    bad[[0, 6, 7, 299], 3] = np.nan  # rows in the first, in a middle and in the last block
    with pytest.raises(ValueError, match="4 of 300 rows contain NaN or inf"):
        kmeans(bad, 6, seed=0, use_gpu=False)


def test_memory_is_one_copy_of_the_features(monkeypatch) -> None:
    # numpy's allocations are traced: the peak must stay near the one float32 copy kmeans()
    # normalises (plus O(N) arrays), not the several N x d temporaries it used to make
    # (float64 differences for the objective alone were 2 copies). faiss's own C++ buffers are
    # not traced; bare faiss needs them too.
    x, _ = blobs(n=20_000, k=16, d=64, seed=9)
    monkeypatch.setattr(kmeans_module, "_BLOCK_ELEMENTS", 1 << 14)  # 64 KB blocks: below the noise
    kmeans(x[:200], 16, seed=0, use_gpu=False)  # faiss's first call allocates its own state
    tracemalloc.start()
    try:
        kmeans(x, 16, seed=0, use_gpu=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.3 * x.nbytes, f"peak {peak / x.nbytes:.2f} x the features"


def test_gpu_fallback_logs_one_warning(monkeypatch, caplog) -> None:
    x, _ = blobs(n=120, k=4, d=16, seed=4)
    caplog.set_level(logging.INFO, logger="xdc_core.kmeans")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)  # the warning names the thread count
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        r = kmeans(x, 4, seed=0, use_gpu=True)
        assert r.stats.device == "cpu"
        [rec] = caplog.records
        assert rec.levelno == logging.WARNING and rec.name == "xdc_core.kmeans"
        assert "CPU with 2 threads" in rec.getMessage()
        assert "torch sees no CUDA GPU (CUDA_VISIBLE_DEVICES='')" in rec.getMessage()
        # No GPU asked for: nothing to warn about, same clusters.
        caplog.clear()
        r_cpu = kmeans(x, 4, seed=0, use_gpu=False)
        assert caplog.records == [] and r_cpu.stats.device == "cpu"
        np.testing.assert_array_equal(r_cpu.assignments, r.assignments)
    finally:
        faiss.omp_set_num_threads(threads)


def test_a_gpu_runs_the_torch_kmeans_and_is_reported(monkeypatch, caplog) -> None:
    # No GPU here: pretend torch sees one, and check that the torch k-means gets that device (it
    # then runs on the CPU) and the stats name it, with no warning.
    x, ids = blobs(n=120, k=4, d=16, seed=4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    asked, real = [], kmeans_torch.train_kmeans

    def on_cpu(xs, k, seed, niter, device):
        asked.append(device)
        return real(xs, k, seed, niter, "cpu")

    monkeypatch.setattr(kmeans_torch, "train_kmeans", on_cpu)
    caplog.set_level(logging.INFO, logger="xdc_core.kmeans")
    r = kmeans(x, 4, seed=0, use_gpu=True, labels=ids)
    assert asked == ["cuda:1"] and r.stats.device == "cuda:1" and caplog.records == []
    assert r.stats.nmi_labels == pytest.approx(1.0)


# -- the GPU path's k-means (torch), run here on the CPU ----------------------------------------


def mixture(n: int, d: int, centres: int, seed: int) -> np.ndarray:
    """Overlapping Gaussian clusters of unequal sizes, L2-normalised: k-means has local optima here."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)) * 1.5
    ids = rng.choice(centres, size=n, p=rng.dirichlet(np.ones(centres)))
    return l2_normalize(means[ids] + rng.normal(size=(n, d)))


@pytest.mark.parametrize("n, d, k", [(4000, 32, 16), (3000, 64, 64)])
def test_torch_kmeans_reaches_the_objective_of_faiss(n, d, k) -> None:
    """The same algorithm (k-means++, Lloyd, splitting), the seeding greedy: with each seed its
    objective is at most 1% above faiss's, and on average below it."""
    ratios = []
    for seed in range(4):
        x = mixture(n, d, 2 * k, seed)
        _, _, faiss_dist = kmeans_module._train_kmeans(x, k, seed, 20, "cpu")
        assign, centroids, dist = kmeans_torch.train_kmeans(x, k, seed, 20, "cpu")
        # the distances it returns are those of its assignment to its centroids, and the nearest ones
        exact = ((x.astype(np.float64) - centroids[assign]) ** 2).sum(1)
        np.testing.assert_allclose(dist, exact, atol=1e-5)
        assert (((x[:, None, :] - centroids[None]) ** 2).sum(-1).min(1) >= dist - 1e-5).all()
        ratios.append(dist.sum() / faiss_dist.sum())
    assert max(ratios) < 1.01 and np.mean(ratios) < 1.0, ratios


def test_torch_kmeans_is_seeded_and_recovers_blobs() -> None:
    x, ids = blobs(n=600, k=8, d=32, seed=1)
    x = l2_normalize(x)
    a1, c1, _ = kmeans_torch.train_kmeans(x, 8, 5, 20, "cpu")
    a2, c2, _ = kmeans_torch.train_kmeans(x, 8, 5, 20, "cpu")
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1, c2)
    assert nmi(a1, ids) == pytest.approx(1.0)


def test_torch_kmeans_splits_clusters_left_empty() -> None:
    """Ten distinct points, each repeated, and k = 16: the seeding must reuse points and the
    iterations leave clusters empty; each is refilled with a perturbed copy of a large one."""
    rng = np.random.default_rng(0)
    x = l2_normalize(np.repeat(rng.normal(size=(10, 8)), 30, axis=0))
    assign, centroids, dist = kmeans_torch.train_kmeans(x, 16, 0, 10, "cpu")
    assert np.isfinite(centroids).all() and len(np.unique(assign)) == 10 and dist.max() < 1e-5
    r = kmeans(np.repeat(rng.normal(size=(10, 8)), 30, axis=0), 16, seed=0, use_gpu=False)
    assert r.stats.sizes_min >= 1
