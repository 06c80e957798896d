"""``xdc regress``: the UCF101 split-1 regression gate.

Runs the ``ucf101-eval`` pipeline on a labelled manifest and the encoders of a change (through
``kfp.local`` with ``--local``, or on a Kubeflow cluster with ``--host``), and compares its
metrics with a committed baseline (:mod:`xdc_core.regression`). Exit status: 0 no metric dropped
by more than its allowed drop; 1 a regression; 2 unusable input (no such checkpoint, an
unreachable host, a malformed baseline). ``--write-baseline`` measures the baseline instead,
over several evaluation seeds.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

from xdc_core.errors import ConfigError, InputError
from xdc_core.regression import GATED, compare, load_baseline, markdown, measure_baseline, report
from xdc_core.report import flat_metrics
from xdc_core.store import write_json

from .settings import add_settings_args, load_settings


def _check_exists(uri: str, flag: str) -> str:
    from xdc_core import store

    if not store.exists(uri):
        raise InputError(f"{flag} {uri}: no such checkpoint")
    return uri


def _evaluate(args: argparse.Namespace, cfg: Any, encoders: dict[str, str]) -> dict[str, Any]:
    """The evaluation report of one ucf101-eval run with the settings ``cfg``."""
    if args.host:
        from xdc_kfp.placement import Placement
        from xdc_kfp.runner import evaluate_on_host

        return evaluate_on_host(args.host, args.manifest, encoders, cfg, args.image, Placement(), args.pipeline_root,
                                args.timeout)
    from xdc_kfp.runner import evaluate_local

    return evaluate_local(args.manifest, encoders, cfg, args.out / "kfp")


def cmd_regress(args: argparse.Namespace) -> int:
    cfg, source = load_settings(args, gpu=True if args.host else None)
    baseline = None if args.write_baseline else load_baseline(args.baseline)  # fail before any work
    encoders = {"video": _check_exists(args.video_encoder, "--video-encoder")}
    if args.audio_encoder:
        encoders["audio"] = _check_exists(args.audio_encoder, "--audio-encoder")
    elif args.host:
        raise ConfigError("--host needs --audio-encoder too (the pipeline evaluates both encoders)")
    else:  # the random init stands in; only the video metrics are compared
        from xdc_core.steps import init_encoder, save_encoder

        encoders["audio"] = str(args.out / "random_audio_encoder.pt")
        save_encoder(init_encoder("audio", cfg), Path(encoders["audio"]))
    about = {"manifest": args.manifest, "encoders": encoders, "settings": str(source),
             "where": args.host or "kfp.local", "date": datetime.date.today().isoformat()}
    gated = [m for m in GATED if args.audio_encoder or m.startswith("video_")]
    if baseline is None:
        return _write_baseline(args, cfg, encoders, about, gated)
    return _gate(args, cfg, encoders, about, {**baseline, "metrics": {
        k: v for k, v in baseline["metrics"].items() if args.audio_encoder or k.startswith("video_")}})


def _write_baseline(args: argparse.Namespace, cfg: Any, encoders: dict[str, str], about: dict[str, Any],
                    gated: list[str]) -> int:
    """Measure the baseline of ``gated`` over ``--seeds`` and write it to ``--baseline``."""
    runs = {}
    for seed in args.seeds:
        report = _evaluate(args, cfg.model_copy(update={"seed": seed}), encoders)
        runs[seed] = flat_metrics(report)
        print(f"seed {seed}: " + ", ".join(f"{k} {runs[seed][k]:.4f}" for k in gated if k in runs[seed]))
    measured = measure_baseline(runs, report["probe"]["video"]["test_videos"], about, gated)
    write_json(args.baseline, measured)
    for name, m in measured["metrics"].items():
        print(f"{name}: {m['value']:.4f} over seeds {m['seeds']} (spread {m['spread']:.4f}), "
              f"allowed drop {m['allowed_drop']:.3f}")
    print(f"baseline → {args.baseline}")
    return 0


def _gate(args: argparse.Namespace, cfg: Any, encoders: dict[str, str], about: dict[str, Any],
          baseline: dict[str, Any]) -> int:
    """One evaluation against ``baseline``: the table (also to $GITHUB_STEP_SUMMARY), the JSON report,
    exit 1 when a metric dropped by more than it may."""
    verdicts = compare(baseline, flat_metrics(_evaluate(args, cfg, encoders)))
    passed = all(v.passed for v in verdicts)
    summary = f"## Regression gate: {'passed' if passed else 'FAILED'}\n\n{markdown(verdicts)}\n"
    print(summary)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as f:
            f.write(summary)
    report_path = args.report or args.out / "regression_report.json"
    write_json(report_path, report(verdicts, {**about, "baseline": str(args.baseline)}))
    print(f"report → {report_path}")
    return 0 if passed else 1


def add_regress_parser(sub: Any) -> None:
    """Register ``xdc regress`` on the ``xdc`` sub-parsers ``sub``."""
    from xdc_kfp import DEFAULT_IMAGE

    p = sub.add_parser("regress", help="the UCF101 split-1 regression gate: evaluate encoders, compare with a baseline",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--manifest", required=True, help="labelled manifest (e.g. xdc dataset ucf101 --split 1), path or URI")
    p.add_argument("--video-encoder", required=True, help="video encoder checkpoint, path or URI")
    p.add_argument("--audio-encoder", help="audio encoder checkpoint (default: only the video metrics are gated)")
    p.add_argument("--baseline", type=Path, required=True, help="baseline file, e.g. regression/ucf101_split1.json")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run the pipeline through kfp.local on this machine")
    where.add_argument("--host", help="Kubeflow Pipelines API address: run the pipeline there and wait for it")
    p.add_argument("--out", type=Path, default=Path("runs/regress"), help="working folder (default runs/regress)")
    p.add_argument("--report", type=Path, help="JSON report (default OUT/regression_report.json)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="--host: seconds to wait for the run (default 6 h)")
    p.add_argument("--pipeline-root", default="minio://mlpipeline/v2/artifacts",
                   help="--host: the cluster's pipeline root, where the report is read from (default: KFP's)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"--host: component image (default {DEFAULT_IMAGE})")
    p.add_argument("--write-baseline", action="store_true",
                   help="measure the baseline over --seeds and write it to --baseline, instead of gating")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--write-baseline: evaluation seeds")
    add_settings_args(p)
    p.set_defaults(func=cmd_regress)
