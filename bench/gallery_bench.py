"""What a cluster gallery costs at scale: k = 1024 clusters of a million videos, two clusterings.

The features and assignments are synthetic (N x 512, float32); the thumbnails are read from a
real decoded sample dataset (row r shows video r mod its size), so the page holds what a real
run's would: 64 clusters per clustering with 6 thumbnails each, every cluster listed. Reports
the wall time of ``write_gallery`` (median of --repeats) and the page's size.

Usage: python bench/gallery_bench.py --out bench/results/gallery.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from xdc_core.config import load_config
from xdc_core.decode import decode_dataset
from xdc_core.gallery import write_gallery
from xdc_core.sample_data import SampleSpec, make_sample_dataset

PRESET = Path(__file__).resolve().parents[1] / "xdc_core" / "presets" / "cpu-demo.yaml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/gallery.json"))
    ap.add_argument("--work", type=Path, default=Path("bench/work/gallery"))
    ap.add_argument("--videos", type=int, default=1_000_000, help="rows clustered (default 1 M)")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--dims", type=int, default=512)
    ap.add_argument("--decoded-videos", type=int, default=800, help="real videos the thumbnails come from")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cfg = load_config(PRESET, {"cluster.k": args.k})
    decoded = args.work / "decoded"
    if not (decoded / "index.csv").is_file():
        manifest = make_sample_dataset(args.work / "sample", SampleSpec(videos=args.decoded_videos))
        decode_dataset(manifest, decoded, cfg, progress=False)
    rng = np.random.default_rng(0)
    index = np.arange(args.videos) % args.decoded_videos
    labels = rng.integers(0, 8, args.videos)
    clusterings, stats = {}, {}
    for name in ("video", "audio"):
        features = rng.standard_normal((args.videos, args.dims), dtype=np.float32)
        assignments = rng.integers(0, args.k, args.videos)
        sizes = np.bincount(assignments, minlength=args.k)
        clusterings[name] = (features, assignments)
        stats[name] = {"k": args.k, "sizes_min": int(sizes.min()), "sizes_median": float(np.median(sizes)),
                       "sizes_max": int(sizes.max()), "nmi_previous": None, "purity": None, "nmi_labels": None}
    page = args.work / "gallery.html"
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        write_gallery(page, decoded, cfg, 1, clusterings, labels, index, stats)
        seconds.append(time.perf_counter() - t0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"videos": args.videos, "k": args.k, "dims": args.dims, "clusterings": 2,
              "thumbnail_source_videos": args.decoded_videos, "seconds": [round(s, 2) for s in seconds],
              "median_seconds": round(statistics.median(seconds), 2), "page_bytes": page.stat().st_size,
              "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
              "commit": commit}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
