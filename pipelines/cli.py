"""``xdc pipeline``: compile the Kubeflow pipelines, run one through ``kfp.local``, or submit it.

    xdc pipeline compile [--iterations N] [--preset paper] --out xdc_pretrain.yaml
    xdc pipeline run-local [--data manifest.csv] --out runs/kfp [--iterations N] [run parameters]
    xdc pipeline submit --host URL [--experiment NAME] [--iterations N] [run parameters]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kfp import compiler

from components import DEFAULT_IMAGE
from xdc_core import store
from xdc_core.cli import PRESETS, format_results, parse_set, preset_path
from xdc_core.config import RUN_PARAMETERS, Config, ConfigError, build_config, load_config

from .placement import Placement
from .ucf101_eval import build_eval_pipeline
from .xdc_pretrain import build_pretrain_pipeline


class PipelineError(RuntimeError):
    """A pipeline could not be compiled, run or submitted; the message says what to do."""


# -- arguments shared by the sub-commands ------------------------------------------------------------


def _add_settings_args(p: argparse.ArgumentParser, default_preset: str) -> None:
    g = p.add_argument_group("settings (the defaults of the pipeline's parameters)")
    g.add_argument("--preset", default=default_preset, help=f"a preset in {PRESETS} (default {default_preset})")
    g.add_argument("--config", type=Path, help="YAML settings file instead of a preset")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting, e.g. cluster.k=64")
    g.add_argument("--iterations", type=int, help="clustering iterations to unroll (default: cluster.iterations)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run parameters (default: the settings')")
    g.add_argument("--method", choices=["xdc", "sdc", "mdc", "cdc"])
    g.add_argument("--k", type=int)
    g.add_argument("--epochs", type=int, help="training epochs per iteration (train.total_epochs)")
    g.add_argument("--lr", type=float, help="base learning rate (train.lr)")
    g.add_argument("--batch-size", dest="batch_size", type=int, help="train.batch_size")
    g.add_argument("--seed", type=int)
    g.add_argument("--no-eval", action="store_true", help="pretrain only (data without labelled splits)")


def _add_placement_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster placement")
    g.add_argument("--image", default=DEFAULT_IMAGE, help=f"component image (default {DEFAULT_IMAGE})")
    g.add_argument("--gpu-node-label", default="nvidia.com/gpu.present=true", metavar="KEY=VALUE",
                   help="node selector of the GPU pool (default nvidia.com/gpu.present=true)")
    g.add_argument("--cpu-node-label", metavar="KEY=VALUE", help="node selector for decode (default: any node)")
    g.add_argument("--s3-endpoint", default=Placement.s3_endpoint,
                   help=f"object store decode reads s3:// data from (default {Placement.s3_endpoint})")
    g.add_argument("--s3-secret", default=Placement.s3_secret,
                   help=f"Kubernetes secret with its keys accesskey/secretkey (default {Placement.s3_secret})")
    g.add_argument("--s3-tls", action="store_true", help="the object store speaks https")


def _label(text: str | None, flag: str) -> tuple[str, str] | None:
    if text is None:
        return None
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{flag} expects KEY=VALUE, e.g. nvidia.com/gpu.present=true (got {text!r})")
    return key, value


def _settings(args: argparse.Namespace) -> tuple[Config, int]:
    path = args.config if args.config is not None else preset_path(args.preset)
    cfg = load_config(path, parse_set(args.set or []))
    iterations = args.iterations if args.iterations is not None else cfg.cluster.iterations
    if iterations < 1:
        raise ConfigError(f"--iterations must be at least 1 (got {iterations})")
    return cfg, iterations


def _run_arguments(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """The pipeline arguments given on the command line, validated as settings first."""
    given = {name: getattr(args, name) for name in RUN_PARAMETERS if getattr(args, name, None) is not None}
    check = cfg.model_dump()
    for name, value in given.items():
        section, _, leaf = RUN_PARAMETERS[name].rpartition(".")
        (check[section] if section else check)[leaf] = value
    build_config(check, "the run parameters")  # a bad value fails here, naming the setting, not inside a pod
    out = dict(given)
    if getattr(args, "no_eval", False):
        out["run_evaluation"] = False
    return out


def _placement(args: argparse.Namespace) -> Placement:
    return Placement(
        gpu_node_label=_label(args.gpu_node_label, "--gpu-node-label") or Placement.gpu_node_label,
        cpu_node_label=_label(args.cpu_node_label, "--cpu-node-label"),
        s3_endpoint=args.s3_endpoint,
        s3_secret=args.s3_secret,
        s3_secure=args.s3_tls,
    )


# -- compile ----------------------------------------------------------------------------------------


def compile_pipeline(which: str, cfg: Config, iterations: int, out: Path, image: str, placement: Placement) -> Path:
    """Compile ``which`` (xdc-pretrain | ucf101-eval) to ``out``, then load it back with kfp's own loader."""
    from kfp.components import load_component_from_file

    func = (
        build_pretrain_pipeline(iterations, cfg, image, placement)
        if which == "xdc-pretrain"
        else build_eval_pipeline(cfg, image, placement)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(func, str(out))
    load_component_from_file(str(out))  # the file a user uploads must load, not just be written
    return out


def cmd_compile(args: argparse.Namespace) -> int:
    cfg, iterations = _settings(args)
    out = compile_pipeline(args.pipeline, cfg, iterations, args.out, args.image, _placement(args))
    what = f"{iterations} iterations, " if args.pipeline == "xdc-pretrain" else ""
    print(f"wrote {out} ({args.pipeline}, {what}image {args.image}); upload it in the KFP UI (Pipelines → Upload)")
    return 0


# -- run-local ----------------------------------------------------------------------------------------


def task_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per task folder of a local run: its output artifacts (name → {uri, metadata})."""
    tasks: dict[str, dict[str, Any]] = {}
    for executor_output in sorted(run_dir.glob("*/executor_output.json")):
        produced = json.loads(executor_output.read_text()).get("artifacts", {})
        tasks[executor_output.parent.name] = {
            name: {"uri": a["artifacts"][0]["uri"], "metadata": a["artifacts"][0].get("metadata", {})}
            for name, a in produced.items()
        }
    return tasks


def run_local(
    data: str | Path | None, out: Path, cfg: Config, iterations: int, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Run the pretraining pipeline through ``kfp.local`` in this Python environment; returns where
    its outputs are and the evaluation report (None with ``run_evaluation=False``)."""
    from kfp import local

    out = out.resolve()
    root = out / "pipeline_root"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),  # the components import xdc_core from this env
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=True,  # rerunning into the same folder skips the tasks that already finished
        cache_root=str(out / "cache"),
    )
    before = set(root.glob("*")) if root.is_dir() else set()
    pipeline = build_pretrain_pipeline(iterations, cfg)
    uri = "" if not data else str(data) if store.is_remote(data) else str(Path(data).resolve())
    pipeline(data_uri=uri, **arguments)
    runs = sorted(set(root.glob("*")) - before, key=lambda p: p.stat().st_mtime)
    if not runs:
        raise PipelineError(f"kfp.local finished but wrote no run folder under {root}")
    run_dir = runs[-1]
    tasks = task_outputs(run_dir)
    encoders = {
        a["metadata"]["modality"]: a["uri"]
        for outputs in tasks.values()
        for name, a in outputs.items()
        if name == "encoder" and a["metadata"].get("iteration") == iterations
    }
    report_uri = tasks.get("evaluate", {}).get("report", {}).get("uri")
    return {
        "run_dir": str(run_dir),
        "decoded": tasks["decode"]["decoded"]["uri"],
        "encoders": encoders,
        # a Metrics artifact's values live in its metadata (the KFP UI reads them from there)
        "metrics": tasks.get("evaluate", {}).get("metrics", {}).get("metadata"),
        "report": report_uri,
        "results": json.loads(Path(report_uri).read_text()) if report_uri else None,
    }


def cmd_run_local(args: argparse.Namespace) -> int:
    cfg, iterations = _settings(args)
    arguments = _run_arguments(args, cfg)
    if args.data is None:
        print("no --data: the decode task writes and decodes the embedded sample dataset", flush=True)
    started = time.perf_counter()
    found = run_local(args.data, args.out, cfg, iterations, arguments)
    if found["results"]:
        method = arguments.get("method", cfg.cluster.method)
        print(format_results({"method": method, **found["results"]}))
    print(f"kfp.local run: {found['run_dir']} ({time.perf_counter() - started:.0f} s)")
    print(f"  decoded dataset: {found['decoded']}")
    for m, uri in sorted(found["encoders"].items()):
        print(f"  {m} encoder: {uri}")
    if found["report"]:
        print(f"  evaluation report: {found['report']}")
    return 0


# -- submit --------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    import tempfile

    import kfp

    cfg, iterations = _settings(args)
    arguments = _run_arguments(args, cfg)
    if args.data_uri:
        arguments["data_uri"] = args.data_uri
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline("xdc-pretrain", cfg, iterations, Path(tmp) / "xdc_pretrain.yaml", args.image,
                                   _placement(args))
        try:
            client = kfp.Client(host=args.host)
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments, run_name=args.run_name, experiment_name=args.experiment
            )
        except Exception as err:  # kfp raises urllib3, requests and ApiException types for the same cause
            raise PipelineError(
                f"cannot submit to the Kubeflow Pipelines API at {args.host}: {type(err).__name__}: "
                f"{str(err).splitlines()[0][:300]}\n  check --host (the KFP API or UI address, e.g. "
                "http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`) "
                "and that you are signed in"
            ) from None
    print(f"submitted run {result.run_id} to {args.host} (experiment {args.experiment})")
    return 0


# -- parser -----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdc pipeline", description="Kubeflow Pipelines: compile, run locally, submit."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", help="write a pipeline's YAML, the file a user uploads in the KFP UI")
    p.add_argument("--pipeline", choices=["xdc-pretrain", "ucf101-eval"], default="xdc-pretrain")
    p.add_argument("--out", type=Path, required=True, help="output YAML, e.g. xdc_pretrain.yaml")
    _add_settings_args(p, "paper")
    _add_placement_args(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run-local", help="run the pretraining pipeline through kfp.local on this machine")
    p.add_argument("--data", help="manifest CSV, a path or s3:// URI (default: the embedded sample data)")
    p.add_argument("--out", type=Path, required=True, help="folder for the pipeline root and the task cache")
    _add_settings_args(p, "cpu-demo")
    _add_run_args(p)
    p.set_defaults(func=cmd_run_local)

    p = sub.add_parser("submit", help="compile the pretraining pipeline and start a run on a Kubeflow cluster")
    p.add_argument("--host", required=True, help="KFP API address, e.g. http://localhost:8080")
    p.add_argument("--experiment", default="xdc", help="experiment name (default xdc)")
    p.add_argument("--run-name", help="run name (default: kfp's)")
    p.add_argument("--data-uri", help="manifest URI the decode task reads (default: the embedded sample data)")
    _add_settings_args(p, "paper")
    _add_run_args(p)
    _add_placement_args(p)
    p.set_defaults(func=cmd_submit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xdc pipeline``; errors the user can fix exit with status 2."""
    import sys

    from xdc_core.steps import RunError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, RunError, PipelineError) as err:
        print(f"xdc pipeline {args.command}: error: {err}", file=sys.stderr)
        return 2
