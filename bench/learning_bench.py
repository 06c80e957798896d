"""Learning benchmark (issue: learning core), in the spirit of the paper's Table 1.

On the embedded sample dataset, with the same settings, budget and seeds for every row:
random-init, SDC, MDC, CDC, XDC, and a supervised upper bound (the same loop with the true labels
as targets for both encoders). Reports linear-probe top-1 on the test split for video and audio,
mean ± std over the seeds, and run time. Writes JSON and prints a Markdown table.

Usage: python bench/learning_bench.py --out bench/results/learning.json [--seeds 0 1 2]
       [--config xdc_core/presets/cpu-demo.yaml] [--methods sdc mdc cdc xdc supervised]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from xdc_core.config import load_config
from xdc_core.dataset import ClipDataset
from xdc_core.decode import decode_dataset
from xdc_core.run import run
from xdc_core.sample_data import SampleSpec, make_sample_dataset


def mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/learning.json"))
    ap.add_argument("--config", type=Path, default=Path("xdc_core/presets/cpu-demo.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["sdc", "mdc", "cdc", "xdc", "supervised"])
    ap.add_argument("--videos", type=int, default=128)
    ap.add_argument("--work", type=Path, default=Path("bench/work/learning"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_config(args.config, overrides)
    manifest = args.work / "sample" / "manifest.csv"
    if not manifest.is_file():
        make_sample_dataset(manifest.parent, SampleSpec(videos=args.videos))
    decoded = args.work / "decoded"
    decode_dataset(manifest, decoded, cfg, progress=False)
    pretrain_labels = np.asarray(ClipDataset(decoded, cfg.data, "eval", cfg.train.split, ("audio",)).labels)

    runs: dict[str, list[dict]] = {m: [] for m in ["random-init", *args.methods]}
    for seed in args.seeds:
        for method in args.methods:
            out = args.work / f"{method}_seed{seed}"
            c = cfg.model_copy(update={"seed": seed})
            if method != "supervised":
                c = c.model_copy(update={"cluster": cfg.cluster.model_copy(update={"method": method})})
            t0 = time.perf_counter()
            m = run(decoded, out, c, progress=False, log=lambda line, tag=f"[{method} seed {seed}]": print(tag, line, flush=True),
                    fixed_targets=pretrain_labels if method == "supervised" else None)
            entry = {"seed": seed, "video": m["probe"]["video"]["top1"], "audio": m["probe"]["audio"]["top1"],
                     "seconds": round(time.perf_counter() - t0, 1),
                     "purity_last": {k: v.get("purity") for k, v in m["iterations"][-1]["clusters"].items()}}
            runs[method].append(entry)
            if method == args.methods[0]:  # the random-init probe is the same for every method of a seed
                runs["random-init"].append({"seed": seed, "video": m["baseline_random"]["video"]["top1"],
                                            "audio": m["baseline_random"]["audio"]["top1"], "seconds": 0.0})

    table = {}
    for method, entries in runs.items():
        table[method] = {
            "video_top1": mean_std([e["video"] for e in entries]),
            "audio_top1": mean_std([e["audio"] for e in entries]),
            "seconds_per_run": round(statistics.mean(e["seconds"] for e in entries), 1),
            "runs": entries,
        }
    results = {
        "config": str(args.config),
        "overrides": overrides,
        "seeds": args.seeds,
        "videos": args.videos,
        "test_videos": int(len(ClipDataset(decoded, cfg.data, "eval", cfg.evaluate.test_split, ("audio",)))),
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("| method | video top-1 | audio top-1 | run time (s) |\n|---|---|---|---|")
    for method, row in table.items():
        print(f"| {method} | {row['video_top1']} | {row['audio_top1']} | {row['seconds_per_run']} |")
    print(f"results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
