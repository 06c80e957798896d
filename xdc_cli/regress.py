"""``xdc regress``: the regression gates on a labelled split (UCF101 split 1).

Two gates (docs/regression.md). ``--gate evaluation`` runs the ``ucf101-eval`` pipeline on
reference encoders; ``--gate pretraining`` runs the pretraining pipeline at the settings' small
budget on the manifest, then its evaluation. Each runs through ``kfp.local`` with ``--local`` or
on a Kubeflow cluster with ``--host``, with the code under test, and compares the metrics with a
committed baseline (:mod:`xdc_core.regression`). Exit status: 0 no metric dropped by more than its
allowed drop; 1 a regression; 2 unusable input (no such checkpoint, an unreachable host, a
malformed baseline, another budget than the baseline's); 3 no baseline yet (neutral: nothing is
run). ``--write-baseline`` measures the baseline instead, over several seeds.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

from xdc_core.errors import ConfigError, InputError
from xdc_core.regression import (
    GATED, Baseline, Outcome, budget_of, check_budget, compare, load_baseline, markdown, measure_baseline,
    no_baseline_message, outcome, report,
)
from xdc_core.report import flat_metrics
from xdc_core.store import write_json

from .settings import add_settings_args, load_settings

DEFAULT_BASELINES = {"evaluation": Path("regression/ucf101_split1.json"),
                     "pretraining": Path("regression/pretraining_ucf101_split1.json")}


def _check_exists(uri: str, flag: str) -> str:
    from xdc_core import store

    if not store.exists(uri):
        raise InputError(f"{flag} {uri}: no such checkpoint")
    return uri


def code_digest() -> str:
    """A digest of the code the pipeline's tasks import, as this process finds it (a checkout
    first on PYTHONPATH included): kfp.local caches tasks by their inputs, not by the library they
    import, so each version of the code gets a task cache of its own."""
    import xdc_core
    import xdc_kfp
    import xdc_kfp.components
    import xdc_kfp.pipelines

    h = hashlib.sha256()
    for package in (xdc_core, xdc_kfp, xdc_kfp.components, xdc_kfp.pipelines):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.yaml")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _evaluate(args: argparse.Namespace, cfg: Any, encoders: dict[str, str]) -> dict[str, Any]:
    """The evaluation report of one run of the gate's pipeline with the settings ``cfg``."""
    from xdc_kfp.run_parameters import settings_text

    pretraining = args.gate == "pretraining"
    if args.host:
        from xdc_kfp.placement import Placement
        from xdc_kfp.runner import EVAL_PIPELINE, PRETRAIN_PIPELINE, report_on_host

        # A --package holds its settings (compiled by the code under test from the same settings
        # file): passing this code's rendering of them could name settings that code does not know.
        arguments = {"data_uri": args.manifest, **({} if args.package else {"config": settings_text(cfg)})}
        if not pretraining:
            arguments |= {"video_encoder_uri": encoders["video"], "audio_encoder_uri": encoders["audio"]}
        return report_on_host(args.host, PRETRAIN_PIPELINE if pretraining else EVAL_PIPELINE, arguments, cfg,
                              cfg.cluster.iterations, args.image, Placement(), args.pipeline_root, args.timeout,
                              namespace=args.namespace, package=args.package)
    from xdc_kfp.runner import evaluate_local, run_local

    cache = args.out / "kfp" / code_digest()[:16]
    if pretraining:
        results = run_local(args.manifest, cache, cfg, cfg.cluster.iterations, {})["results"]
        if results is None:
            raise InputError(f"the pretraining run in {cache} wrote no evaluation report")
        return results
    return evaluate_local(args.manifest, encoders, cfg, cache)


def _encoders(args: argparse.Namespace, cfg: Any) -> dict[str, str]:
    """The evaluation gate's encoders (modality → URI); none for the pretraining gate."""
    if args.gate == "pretraining":
        if args.video_encoder or args.audio_encoder:
            raise ConfigError("--gate pretraining pretrains its own encoders: drop --video-encoder/--audio-encoder")
        return {}
    if not args.video_encoder:
        raise ConfigError("--gate evaluation needs --video-encoder (and, with --host, --audio-encoder)")
    encoders = {"video": _check_exists(args.video_encoder, "--video-encoder")}
    if args.audio_encoder:
        encoders["audio"] = _check_exists(args.audio_encoder, "--audio-encoder")
    elif args.host:
        raise ConfigError("--host needs --audio-encoder too (the pipeline evaluates both encoders)")
    else:  # the random init stands in; only the video metrics are compared
        from xdc_core.steps import init_encoder, save_encoder

        encoders["audio"] = str(args.out / "random_audio_encoder.pt")
        save_encoder(init_encoder("audio", cfg), Path(encoders["audio"]))
    return encoders


def _summary(text: str) -> None:
    """``text`` on stdout and, in a GitHub workflow, in the job's summary."""
    print(text)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as f:
            f.write(text + "\n")


def cmd_regress(args: argparse.Namespace) -> int:
    cfg, source = load_settings(args, gpu=True if args.host else None)
    args.baseline = args.baseline or DEFAULT_BASELINES[args.gate]
    if args.package and not args.host:
        raise ConfigError("--package is for --host (a pipeline compiled for the cluster)")
    baseline = None
    if not args.write_baseline:  # before any work: a missing or unusable baseline needs no run to tell
        baseline = load_baseline(args.baseline, args.gate)
        if baseline is None:
            _summary(f"## Regression gate ({args.gate}): no baseline yet\n\n"
                     f"{no_baseline_message(args.baseline, args.gate)}\n")
            return int(Outcome.NO_BASELINE)
        if args.gate == "pretraining":
            check_budget(baseline, budget_of(cfg.model_dump()), args.baseline)
    encoders = _encoders(args, cfg)
    about = {"gate": args.gate, "manifest": args.manifest, "encoders": encoders, "settings": str(source),
             "where": args.host or "kfp.local", "date": datetime.date.today().isoformat(),
             "code": os.environ.get("GITHUB_SHA") or f"sha256:{code_digest()[:16]}"}
    if args.gate == "pretraining":
        about["budget"] = budget_of(cfg.model_dump())
    only = None if args.gate == "pretraining" or args.audio_encoder else [m for m in GATED if m.startswith("video_")]
    if baseline is None:
        return _write_baseline(args, cfg, encoders, about, [m for m in GATED if only is None or m in only])
    return _gate(args, cfg, encoders, about, baseline, only)


def _write_baseline(args: argparse.Namespace, cfg: Any, encoders: dict[str, str], about: dict[str, Any],
                    gated: list[str]) -> int:
    """Measure the baseline of ``gated`` over ``--seeds`` and write it to ``--baseline``."""
    runs, test_videos = {}, 0
    for seed in args.seeds:
        evaluation = _evaluate(args, cfg.model_copy(update={"seed": seed}), encoders)
        runs[seed] = flat_metrics(evaluation)
        test_videos = evaluation["probe"]["video"]["test_videos"]
        print(f"seed {seed}: " + ", ".join(f"{k} {runs[seed][k]:.4f}" for k in gated if k in runs[seed]))
    measured = measure_baseline(runs, test_videos, about, gated)
    write_json(args.baseline, measured.model_dump())
    for name, m in measured.metrics.items():
        print(f"{name}: {m.value:.4f} over seeds {m.seeds} (spread {m.spread:.4f}), allowed drop {m.allowed_drop:.3f}")
    print(f"baseline → {args.baseline}")
    return 0


def _gate(args: argparse.Namespace, cfg: Any, encoders: dict[str, str], about: dict[str, Any],
          baseline: Baseline, only: list[str] | None) -> int:
    """One run against ``baseline``: the table (also to $GITHUB_STEP_SUMMARY), the JSON report,
    exit 1 when a metric dropped by more than it may."""
    verdicts = compare(baseline, flat_metrics(_evaluate(args, cfg, encoders)), only)
    result = outcome(verdicts)
    _summary(f"## Regression gate ({args.gate}): {'passed' if result is Outcome.PASSED else 'FAILED'}\n\n"
             f"{markdown(verdicts)}\n")
    report_path = args.report or args.out / "regression_report.json"
    write_json(report_path, report(verdicts, {**about, "seed": cfg.seed, "baseline": str(args.baseline)}))
    print(f"report → {report_path}")
    return int(result)


def add_regress_parser(sub: Any) -> None:
    """Register ``xdc regress`` on the ``xdc`` sub-parsers ``sub``."""
    from xdc_kfp import DEFAULT_IMAGE

    p = sub.add_parser("regress", help="the regression gates: evaluate reference encoders, or pretrain and evaluate, "
                       "and compare with a baseline", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--gate", choices=list(DEFAULT_BASELINES), default="evaluation",
                   help="evaluation: the reference encoders evaluated (default); pretraining: a short pretraining at "
                        "the settings' budget on --manifest, then the same evaluation")
    p.add_argument("--manifest", required=True, help="labelled manifest (e.g. xdc dataset ucf101 --split 1), path or "
                   "URI; the pretraining gate also pretrains on it")
    p.add_argument("--video-encoder", help="evaluation gate: video encoder checkpoint, path or URI")
    p.add_argument("--audio-encoder", help="evaluation gate: audio encoder checkpoint (default: only the video metrics "
                   "are gated)")
    p.add_argument("--baseline", type=Path, help="baseline file (default: "
                   + ", ".join(f"{g}: {b}" for g, b in DEFAULT_BASELINES.items()) + ")")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run the pipeline through kfp.local on this machine")
    where.add_argument("--host", help="Kubeflow Pipelines API address: run the pipeline there and wait for it (signed "
                       "in with the token file $KF_PIPELINES_SA_TOKEN_PATH names, if set)")
    p.add_argument("--namespace", help="--host: the Profile namespace of a multi-user KFP (default $KFP_NAMESPACE)")
    p.add_argument("--package", type=Path, help="--host: submit this compiled pipeline (`xdc pipeline compile`, "
                   "with the image to test) instead of compiling one here")
    p.add_argument("--out", type=Path, default=Path("runs/regress"), help="working folder (default runs/regress)")
    p.add_argument("--report", type=Path, help="JSON report (default OUT/regression_report.json)")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="--host: seconds to wait for the run (default 6 h)")
    p.add_argument("--pipeline-root", default="minio://mlpipeline/v2/artifacts",
                   help="--host: the cluster's pipeline root, where the report is read from (default: KFP's)")
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"--host: component image (default {DEFAULT_IMAGE})")
    p.add_argument("--write-baseline", action="store_true",
                   help="measure the baseline over --seeds and write it to --baseline, instead of gating")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--write-baseline: seeds (the "
                   "pretraining gate's seed also seeds the pretraining)")
    add_settings_args(p)
    p.set_defaults(func=cmd_regress)
