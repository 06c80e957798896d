"""Finetuning with few labels, from pretrained vs from scratch (the paper's Table 1 protocol).

Reads the encoders the learning benchmark saved (its results file, parts merged or not, names each
run's encoders and their SHA-256) and, per seed and modality, fully finetunes (trunk and a fresh
fc) the pretrained encoder and the same seed's random-init encoder on the same few labelled videos
(``--per-class`` of each class of the train split), with the same schedule and lr, then scores both
on the whole test split. Reports each seed's top-1, and the paired difference (pretrained minus
scratch) pooled over the seeds with a 95% bootstrap interval over the test videos.

Usage: python bench/finetune_bench.py --learning bench/results/learning.json
       --out bench/results/finetune.json [--methods xdc supervised] [--per-class 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from xdc_core.config import MODALITIES, Schedule, load_config
from xdc_core.dataset import ClipDataset
from xdc_core.evaluate import finetune, paired_bootstrap
from xdc_core.steps import init_encoder, load_encoder

sys.path.insert(0, str(Path(__file__).parent))
from learning_bench import encoder_record, git_commit, machine  # noqa: E402  (recorded the same way)

# A short schedule (5 epochs of 640 clips: 100 steps), the same for pretrained and scratch.
SCHEDULE = Schedule(epoch_size=640, batch_size=32, lr=0.01, warmup_epochs=1, total_epochs=5, decay="cosine",
                    weight_decay=0.005)


def trained_encoders(path: Path, learning: dict, methods: list[str]) -> tuple[Path, dict[tuple[str, int], dict]]:
    """The decoded dataset and each (method, seed)'s encoder files, checked against the SHA-256 the
    learning benchmark recorded: a later run in the same --work may have replaced them."""
    rerun = f"rerun bench/learning_bench.py with --methods {' '.join(methods)}"
    encoders = {}
    for method in methods:
        if method not in learning["runs"]:
            raise SystemExit(f"{path} ran no {method} (it ran {', '.join(learning['runs'])}): {rerun}")
        for run in learning["runs"][method]:
            if "encoders" not in run:
                raise SystemExit(f"{path} does not name its runs' encoders (written before they were recorded): "
                                 f"{rerun}")
            encoders[method, run["seed"]] = {}
            for m, enc in run["encoders"].items():
                where = Path(enc["path"])
                if not where.is_file():
                    raise SystemExit(f"{where} ({method} seed {run['seed']}, {path}) is gone: {rerun}")
                if encoder_record(where) != enc:
                    raise SystemExit(f"{where} is not the {m} encoder {path} recorded ({method} seed {run['seed']}; "
                                     f"a later run replaced it): {rerun}, or give each benchmark a --work of its own")
                encoders[method, run["seed"]][m] = where
    decoded = Path(learning["ran"]["decoded"])
    if not decoded.is_dir():
        raise SystemExit(f"{decoded} ({path}'s decoded dataset) is gone: {rerun}")
    return decoded, encoders


def few_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` training videos of every class, drawn by ``seed`` (the same for every init)."""
    rng = np.random.default_rng([seed, 23])
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < per_class:
        raise SystemExit(f"--per-class {per_class}: class {classes[counts.argmin()]} has only {counts.min()} "
                         f"training videos; ask for at most {counts.min()} per class")
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                   for c in classes]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learning", type=Path, default=Path("bench/results/learning.json"),
                    help="the learning benchmark's results: settings, seeds, and the encoders and decoded dataset "
                         "they name")
    ap.add_argument("--methods", nargs="+", default=["xdc"],
                    help="whose encoders to finetune (methods the results ran; each against the same seed's random "
                         "init)")
    ap.add_argument("--per-class", type=int, default=10,
                    help="labelled training videos per class, the same videos for every init")
    ap.add_argument("--epoch-size", type=int, default=SCHEDULE.epoch_size,
                    help="clips per finetuning epoch, 5 epochs (640: 100 steps of 32 clips)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/finetune.json"))
    args = ap.parse_args()
    started = time.perf_counter()
    learning = json.loads(args.learning.read_text())
    ran = learning["ran"]
    cfg = load_config(ran["config"], ran["overrides"])
    decoded, encoders = trained_encoders(args.learning, learning, args.methods)
    schedule = SCHEDULE.model_copy(update={"epoch_size": args.epoch_size})
    device = torch.device("cpu")
    results: dict[str, dict[str, list[dict]]] = {}
    for method in ["scratch", *args.methods]:
        results[method] = {m: [] for m in MODALITIES}
    for m in MODALITIES:
        train = ClipDataset(decoded, cfg.data, "train", cfg.evaluate.train_split, (m,))
        train_eval = ClipDataset(decoded, cfg.data, "eval", cfg.evaluate.train_split, (m,))
        test = ClipDataset(decoded, cfg.data, "eval", cfg.evaluate.test_split, (m,))
        labels = np.asarray(train.labels)
        for seed in ran["seeds"]:
            few = few_labelled(labels, args.per_class, seed)
            c = cfg.model_copy(update={"seed": seed})
            trunks = {"scratch": init_encoder(m, c)} | {
                method: load_encoder(m, c, encoders[method, seed][m]) for method in args.methods}
            for method, trunk in trunks.items():
                r = finetune(trunk, m, Subset(train, few.tolist()), Subset(train_eval, few.tolist()), test,
                             labels[few], np.asarray(test.labels), schedule, [schedule.lr], 0.2, seed, device,
                             cfg.evaluate.workers, progress=False)
                results[method][m].append({"seed": seed, "top1": r["top1"], "correct": r["correct"]})
                print(f"[{method} {m} seed {seed}] finetune top-1 {r['top1']:.3f}", flush=True)
    table: dict[str, dict] = {}
    for method, per_m in results.items():
        table[method] = {}
        for m, entries in per_m.items():
            tops = [e["top1"] for e in entries]
            row = {"mean": round(statistics.mean(tops), 4),
                   "std": round(statistics.stdev(tops), 4) if len(tops) > 1 else 0.0}
            if method != "scratch":
                row["delta_vs_scratch"] = paired_bootstrap([e["correct"] for e in entries],
                                                           [e["correct"] for e in results["scratch"][m]])
            table[method][m] = row
    out = {"learning": str(args.learning), "labelled_videos": int(len(few)), "per_class": args.per_class,
           "schedule": schedule.model_dump(), "seeds": ran["seeds"], "test_videos": len(test),
           "git_commit": git_commit(), "machine": machine(), "command": " ".join(["python", *sys.argv]),
           "table": table, "runs": results, "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("| init | video top-1 | video Δ vs scratch [95% CI] | audio top-1 | audio Δ vs scratch [95% CI] |")
    print("|---|---|---|---|---|")
    for method, row in table.items():
        cells = []
        for m in MODALITIES:
            r = row[m]
            d = r.get("delta_vs_scratch")
            cells += [f"{r['mean']:.3f} ± {r['std']:.3f}",
                      f"{d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else "—"]
        print(f"| {method} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
