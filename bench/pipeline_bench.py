"""kfp.local overhead (issue: Kubeflow): `xdc pipeline run-local` vs `xdc run`, same data, same settings.

Both commands run as real subprocesses, from the same manifest of the embedded sample dataset,
with the same settings preset and seed, each into a fresh folder (both decode the manifest
themselves). Reports wall times, their ratio (target <= 1.3x) and whether the two runs' final
linear-probe results agree. Writes JSON.

Usage: python bench/pipeline_bench.py --out bench/results/pipeline.json [--preset cpu-demo] [--videos 512]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from xdc_core.config import preset_path
from xdc_core.config import load_config
from xdc_core.sample_data import SampleSpec, make_sample_dataset


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--videos", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("bench/work/pipeline"))
    args = ap.parse_args()

    manifest = args.work / "sample" / "manifest.csv"
    if not manifest.is_file():
        make_sample_dataset(manifest.parent, SampleSpec(videos=args.videos))
    xdc = str(Path(sys.executable).parent / "xdc")
    config = str(preset_path(args.preset))
    iterations = load_config(config).cluster.iterations
    for sub in ("run", "kfp"):
        shutil.rmtree(args.work / sub, ignore_errors=True)

    run_s, _ = timed([xdc, "run", "--data", str(manifest), "--out", str(args.work / "run"), "--config", config,
                      "--seed", str(args.seed), "--quiet"])
    kfp_s, kfp_out = timed([xdc, "pipeline", "run-local", "--data", str(manifest), "--out", str(args.work / "kfp"),
                            "--config", config, "--seed", str(args.seed)])
    ours = json.loads((args.work / "run" / "metrics.json").read_text())
    report = next(line.split(": ", 1)[1] for line in kfp_out.splitlines() if "evaluation report:" in line)
    theirs = json.loads(Path(report).read_text())
    top1 = {
        kind: {m: {"xdc_run": ours[kind][m]["top1"], "run_local": theirs[kind][m]["top1"]} for m in ("video", "audio")}
        for kind in ("probe", "baseline_random")
    }
    result = {
        "preset": args.preset,
        "videos": args.videos,
        "iterations": iterations,
        "tasks": 3 + 5 * iterations,  # settings, decode, evaluate, and 5 per iteration
        "xdc_run_s": round(run_s, 1),
        "run_local_s": round(kfp_s, 1),
        "ratio": round(kfp_s / run_s, 3),
        "target_ratio": 1.3,
        "top1": top1,
        "same_top1": all(v["xdc_run"] == v["run_local"] for kind in top1.values() for v in kind.values()),
        "note": "one run of each, sequential, same machine; both include decoding the manifest",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
