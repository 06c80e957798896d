"""Did a lever help? Paired comparison of two learning-benchmark results on the same data and seeds.

``bench/learning_bench.py`` compares each method with random init. A lever (a setting, e.g.
``--set train.audio_masks=2``) is judged against the same method without it: the same seeds score
the same test videos, so the per-video outcomes pair up, and the difference gets a bootstrap
interval over test videos (xdc_core.evaluate.paired_bootstrap, seeds stacked), as the benchmark's
own table does.

Usage:
  python bench/lever_compare.py WITHOUT.json WITH.json [--out lever.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from xdc_core.evaluate import paired_bootstrap

MODALITIES = ("video", "audio")


def compare(without: dict[str, Any], with_: dict[str, Any]) -> dict[str, Any]:
    """Per method in both and modality: the paired top-1 difference with - without, pooled over the
    seeds both ran, and per seed."""
    if without["ran"]["dataset"] != with_["ran"]["dataset"] or without["ran"]["sample_spec"] != with_["ran"]["sample_spec"]:
        raise SystemExit(f"the two results are on different data: {without['ran']['dataset']} vs {with_['ran']['dataset']}")
    out: dict[str, Any] = {}
    for method in sorted(set(without["runs"]) & set(with_["runs"])):
        a = {r["seed"]: r for r in without["runs"][method]}
        b = {r["seed"]: r for r in with_["runs"][method]}
        seeds = sorted(set(a) & set(b))
        out[method] = {"seeds": seeds}
        for m in MODALITIES:
            pa = np.array([a[s]["probe"][m]["correct"] for s in seeds])
            pb = np.array([b[s]["probe"][m]["correct"] for s in seeds])
            out[method][m] = paired_bootstrap(pb, pa) | {
                "per_seed": [paired_bootstrap(pb[i], pa[i])["delta"] for i in range(len(seeds))],
                "without": round(float(pa.mean()), 4), "with": round(float(pb.mean()), 4)}
    return out


def markdown(name: str, dataset: str, result: dict[str, Any]) -> str:
    lines = [f"| data | method | lever | video top-1 without → with | Δ [95% CI] | per seed | audio top-1 "
             "without → with | Δ [95% CI] | per seed |", "|---|---|---|---|---|---|---|---|---|"]
    for method, r in result.items():
        cells = []
        for m in MODALITIES:
            x = r[m]
            cells += [f"{x['without']:.3f} → {x['with']:.3f}",
                      f"{x['delta']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]",
                      " ".join(f"{d:+.3f}" for d in x["per_seed"])]
        lines.append(f"| {dataset} | {method} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("without", type=Path, help="learning_bench.py result without the lever")
    ap.add_argument("with_", type=Path, metavar="with", help="the same command's result with the lever")
    ap.add_argument("--lever", help="its name in the table (default: the settings WITH.json overrides)")
    ap.add_argument("--out", type=Path, help="also write the table (markdown) and the numbers (.json beside it)")
    args = ap.parse_args()
    without, with_ = (json.loads(p.read_text()) for p in (args.without, args.with_))
    lever = args.lever or " ".join(f"{k}={v}" for k, v in with_["ran"]["overrides"].items()
                     if without["ran"]["overrides"].get(k) != v) or "(same settings)"
    result = compare(without, with_)
    md = markdown(lever, with_["ran"]["dataset"], result)
    print(md)
    if args.out:
        args.out.write_text(md)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"lever": lever, "without": str(args.without), "with": str(args.with_), "result": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
