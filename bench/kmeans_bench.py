"""What xdc's k-means wrapper costs over bare faiss with the same settings.

Times ``xdc_core.kmeans.kmeans`` (validation, normalisation, faiss k-means, the final assignment,
re-splitting empty clusters, the statistics) against the bare faiss calls a script would make
for the same clustering: copy and ``faiss.normalize_L2`` the features, ``faiss.Kmeans`` with the
same niter, seed, k-means++ seeding and max/min_points_per_centroid, then the final
``index.search``. Runs alternate (bare, wrapper, bare, ...) after one untimed warm-up of each;
reports the medians and the ratio wrapper / bare. The features are random Gaussian (fixed seed):
k-means does a fixed number of iterations, so the timing does not depend on their structure.

Two configurations, each written to its own section of the results file (the other is kept):

  cpu  20k x 512, k = 256, faiss's OpenMP threads set to 1 and to 2 (faiss's BLAS is OpenBLAS
       on the same OpenMP runtime, so that covers the matrix products too):
           python bench/kmeans_bench.py
  gpu  1M x 512, k = 512 with faiss on all visible GPUs (needs faiss-gpu; CPU threads: all):
           python bench/kmeans_bench.py --gpu
       It also reports faiss's k-means++ seeding time, which faiss runs on one CPU thread even
       when the iterations run on the GPU (extrapolated from 80k x 512 on the 2-core dev machine:
       about 40 s per run at 1M x 512, k = 512), so the default is 2 repeats: give it 10 minutes.

Usage: python bench/kmeans_bench.py [--gpu] [--repeats N] [--out bench/results/kmeans.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from xdc_core.kmeans import kmeans

NITER = 20
SEED = 1


def bare_faiss(features: np.ndarray, k: int, gpu: bool) -> tuple[np.ndarray, float]:
    """The same clustering with faiss alone; returns the assignments and faiss's seeding time
    (its first iteration's time less that iteration's search: k-means++ plus one centroid update)."""
    x = np.array(features, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(x)
    n, d = x.shape
    km = faiss.Kmeans(d, k, niter=NITER, seed=SEED, gpu=gpu, verbose=False,
                      init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
                      max_points_per_centroid=n, min_points_per_centroid=1)
    km.train(x)
    _, idx = km.index.search(x, 1)
    first = km.iteration_stats[0]
    return idx[:, 0], first["time"] - first["time_search"]


def time_pair(features: np.ndarray, k: int, gpu: bool, repeats: int) -> dict[str, Any]:
    """Alternating timed runs of bare faiss and of the wrapper, after one warm-up of each."""
    bare_s, wrapper_s, seeding_s = [], [], []
    ref, _ = bare_faiss(features, k, gpu)  # warm-up: faiss's first call sets up its thread pool / GPU
    result = kmeans(features, k, SEED, niter=NITER, use_gpu=gpu)
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, seeding = bare_faiss(features, k, gpu)
        bare_s.append(time.perf_counter() - t0)
        seeding_s.append(seeding)
        t0 = time.perf_counter()
        kmeans(features, k, SEED, niter=NITER, use_gpu=gpu)
        wrapper_s.append(time.perf_counter() - t0)
    bare, wrapper = statistics.median(bare_s), statistics.median(wrapper_s)
    return {
        "threads": faiss.omp_get_max_threads(),
        "device": result.stats.device,
        "bare_faiss_s": [round(s, 3) for s in bare_s],
        "wrapper_s": [round(s, 3) for s in wrapper_s],
        "bare_faiss_median_s": round(bare, 3),
        "wrapper_median_s": round(wrapper, 3),
        "ratio_wrapper_to_bare": round(wrapper / bare, 3),
        # On a shared machine other processes only ever add time: the fastest runs are a second view.
        "ratio_of_fastest": round(min(wrapper_s) / min(bare_s), 3),
        "paired_ratios": [round(w / b, 3) for b, w in zip(bare_s, wrapper_s)],
        "kmeanspp_seeding_median_s": round(statistics.median(seeding_s), 3),
        # Same settings, so the same clusters up to the last bits of the normalisation (numpy's
        # division in xdc, faiss's multiplication by 1/norm in the bare run).
        "assignments_agree": round(float(np.mean(ref == result.assignments)), 5),
        "empty_before_fix": result.stats.empty_before_fix,
    }


def machine() -> dict[str, Any]:
    """The CPU model (from /proc/cpuinfo), its core count, the GPUs faiss sees and the load."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = None
    if faiss.get_num_gpus() > 0:
        try:  # the card's name; a container may lack nvidia-smi, then only the count
            names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                   capture_output=True, text=True).stdout.strip().splitlines()
        except OSError:
            names = []
        gpus = names or faiss.get_num_gpus()
    return {"cpu": model, "cores": os.cpu_count(), "gpus": gpus,
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "faiss": faiss.__version__, "numpy": np.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/kmeans.json"))
    ap.add_argument("--gpu", action="store_true", help="the GPU configuration (1M x 512, k = 512) instead of the CPU one")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of each (default: 7 on the CPU, 2 on the GPU)")
    ap.add_argument("--videos", type=int, default=None, help="rows (default: 20k on the CPU, 1M on the GPU)")
    ap.add_argument("--k", type=int, default=None, help="clusters (default: 256 on the CPU, 512 on the GPU)")
    ap.add_argument("--dims", type=int, default=512)
    args = ap.parse_args()
    if args.gpu and faiss.get_num_gpus() == 0:
        print("--gpu: this faiss has no GPU support or sees no GPU", file=sys.stderr)
        return 2
    n = args.videos or (1_000_000 if args.gpu else 20_000)
    k = args.k or (512 if args.gpu else 256)
    repeats = args.repeats or (2 if args.gpu else 7)
    features = np.random.default_rng(0).standard_normal((n, args.dims), dtype=np.float32)

    section: dict[str, Any] = {"videos": n, "dims": args.dims, "k": k, "niter": NITER,
                               "init": "k-means++", "repeats": repeats, "machine": machine()}
    if args.gpu:
        section["runs"] = [time_pair(features, k, True, repeats)]
    else:
        section["runs"] = []
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            section["runs"].append(time_pair(features, k, False, repeats))
    section["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["gpu" if args.gpu else "cpu"] = section
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(section, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
