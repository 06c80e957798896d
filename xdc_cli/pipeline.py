"""``xdc pipeline``: compile the Kubeflow pipelines, run one through ``kfp.local``, or submit it.

    xdc pipeline compile [--pipeline ucf101-eval] [--iterations N] [--config FILE|PRESET] --out xdc_pretrain.yaml
    xdc pipeline run-local [--data manifest.csv] --out runs/kfp [--iterations N] [run parameters]
    xdc pipeline submit --host URL [--experiment NAME] [--iterations N] [run parameters]

Building the parser imports no kfp (its defaults come from kfp-free modules of ``xdc_kfp``);
each command imports :mod:`xdc_kfp.runner`, and so kfp, when it runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xdc_core.config import METHODS, RUN_PARAMETERS, Config
from xdc_core.errors import ConfigError
from xdc_core.report import format_results
from xdc_kfp import DEFAULT_IMAGE
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import SCALE_PARAMETERS

from .settings import add_settings_args, load_settings


def add_pipeline_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pipeline`` and its commands ``compile``, ``run-local`` and ``submit`` on ``sub``,
    the sub-parsers of the ``xdc`` parser."""
    parser = sub.add_parser("pipeline", help="Kubeflow Pipelines: compile | run-local | submit",
                            description="Kubeflow Pipelines: compile, run locally, submit.")
    commands = parser.add_subparsers(dest="pipeline_command", metavar="COMMAND", required=True)

    p = _command(commands, "compile", cmd_compile, "write a pipeline's YAML, the file a user uploads in the KFP UI")
    p.add_argument("--pipeline", choices=["xdc-pretrain", "ucf101-eval"], default="xdc-pretrain")
    p.add_argument("--out", type=Path, required=True, help="output YAML, e.g. xdc_pretrain.yaml")
    _add_placement_args(p)

    p = _command(commands, "run-local", cmd_run_local, "run the pretraining pipeline through kfp.local on this machine",
                 on_cluster=False)
    p.add_argument("--data", help="manifest CSV, a path or s3:// URI (default: the embedded sample data)")
    p.add_argument("--out", type=Path, required=True, help="folder for the pipeline root and the task cache")
    _add_run_args(p)

    p = _command(commands, "submit", cmd_submit,
                 "compile the pretraining pipeline and start a run on a Kubeflow cluster")
    p.add_argument("--host", required=True, help="KFP API address, e.g. http://localhost:8080")
    p.add_argument("--experiment", default="xdc", help="experiment name (default xdc)")
    p.add_argument("--run-name", help="run name (default: kfp's)")
    p.add_argument("--data-uri", help="manifest URI the decode task reads (default: the embedded sample data)")
    _add_run_args(p)
    _add_placement_args(p)


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, func: Callable[[argparse.Namespace], int],
    summary: str, on_cluster: bool = True,
) -> argparse.ArgumentParser:
    """A command's parser with the settings arguments; ``on_cluster``: its settings default to the paper's."""
    where = ("Settings default to the paper preset (a cluster has GPUs)." if on_cluster
             else "Settings default to this machine's: paper with a GPU, cpu-demo without.")
    p = commands.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {where}")
    add_settings_args(p)
    p.add_argument("--iterations", type=int, help="clustering iterations to unroll (default: cluster.iterations)")
    p.set_defaults(func=func)
    return p


# -- arguments shared by the commands ----------------------------------------------------------------


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run parameters (the pipeline's arguments; default: the settings')")
    g.add_argument("--method", choices=METHODS, help="cluster.method")
    g.add_argument("--k", type=int, help="cluster.k")
    g.add_argument("--epochs", type=int, help="training epochs per iteration (train.total_epochs)")
    g.add_argument("--lr", type=float, help="base learning rate (train.lr)")
    g.add_argument("--batch-size", dest="batch_size", type=int, help="train.batch_size")
    g.add_argument("--seed", type=int, help="seed")
    g.add_argument("--no-eval", action="store_true", help="pretrain only (data without labelled splits)")
    g = p.add_argument_group("scale-out parameters (the pipeline's arguments: more machines for one run)")
    for name, what in SCALE_PARAMETERS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, metavar="N", help=f"{what} (default 1)")


def _add_placement_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster placement")
    g.add_argument("--image", default=DEFAULT_IMAGE, help=f"component image (default {DEFAULT_IMAGE})")
    gpu_label = "=".join(Placement.gpu_node_label)
    g.add_argument("--gpu-node-label", default=gpu_label, metavar="KEY=VALUE",
                   help=f"node selector of the GPU pool (default {gpu_label})")
    g.add_argument("--cpu-node-label", metavar="KEY=VALUE", help="node selector for decode (default: any node)")
    g.add_argument("--decode-parallelism", type=int, default=Placement.decode_parallelism, metavar="N",
                   help="at most this many decode shards run at once; 0: no limit; fixed when the pipeline is "
                        f"compiled (default {Placement.decode_parallelism})")
    g.add_argument("--s3-endpoint", default=Placement.s3_endpoint,
                   help=f"object store decode reads s3:// data from (default {Placement.s3_endpoint})")
    g.add_argument("--s3-secret", default=Placement.s3_secret,
                   help=f"Kubernetes secret with its keys accesskey/secretkey (default {Placement.s3_secret})")
    g.add_argument("--s3-tls", action="store_true", help="the object store speaks https")
    g.add_argument("--pushgateway", metavar="HOST:PORT",
                   help="Pushgateway every task pushes its Prometheus metrics to, e.g. pushgateway.xdc:9091 "
                        "(manifests/); default: none")


def _iterations(args: argparse.Namespace, cfg: Config) -> int:
    iterations = args.iterations if args.iterations is not None else cfg.cluster.iterations
    if iterations < 1:
        raise ConfigError(f"--iterations must be at least 1 (got {iterations})")
    return iterations


def _arguments(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """The pipeline's arguments from the run-parameter flags, validated against ``cfg``."""
    from xdc_kfp.runner import run_arguments

    arguments = run_arguments({name: getattr(args, name) for name in (*RUN_PARAMETERS, *SCALE_PARAMETERS)}, cfg)
    if args.no_eval:
        arguments["run_evaluation"] = False
    return arguments


def _label(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{flag} expects KEY=VALUE, e.g. nvidia.com/gpu.present=true (got {text!r})")
    return key, value


def _placement(args: argparse.Namespace) -> Placement:
    if args.decode_parallelism < 0:
        raise ConfigError(f"--decode-parallelism must be 0 (no limit) or more (got {args.decode_parallelism})")
    return Placement(
        decode_parallelism=args.decode_parallelism,
        gpu_node_label=_label(args.gpu_node_label, "--gpu-node-label"),
        cpu_node_label=_label(args.cpu_node_label, "--cpu-node-label") if args.cpu_node_label else None,
        s3_endpoint=args.s3_endpoint,
        s3_secret=args.s3_secret,
        s3_secure=args.s3_tls,
        pushgateway=args.pushgateway,
    )


# -- the commands ------------------------------------------------------------------------------------------


def cmd_compile(args: argparse.Namespace) -> int:
    """``xdc pipeline compile``: write the pipeline's YAML."""
    from xdc_kfp.runner import compile_pipeline

    cfg, _ = load_settings(args, gpu=True)
    iterations = _iterations(args, cfg)
    out = compile_pipeline(args.pipeline, cfg, iterations, args.out, args.image, _placement(args))
    what = f"{iterations} iterations, " if args.pipeline == "xdc-pretrain" else ""
    print(f"wrote {out} ({args.pipeline}, {what}image {args.image}); upload it in the KFP UI (Pipelines → Upload)")
    return 0


def cmd_run_local(args: argparse.Namespace) -> int:
    """``xdc pipeline run-local``: the pretraining pipeline through kfp.local; prints where its outputs are."""
    from xdc_kfp.runner import run_local

    cfg, _ = load_settings(args)
    iterations = _iterations(args, cfg)
    arguments = _arguments(args, cfg)
    if args.data is None:
        print("no --data: the decode task writes and decodes the embedded sample dataset", flush=True)
    started = time.perf_counter()
    found = run_local(args.data, args.out, cfg, iterations, arguments)
    if found["results"]:
        print(format_results({"method": arguments.get("method", cfg.cluster.method), **found["results"]}))
    print(f"kfp.local run: {found['run_dir']} ({time.perf_counter() - started:.0f} s)")
    print(f"  decoded dataset: {found['decoded']}")
    for m, uri in sorted(found["encoders"].items()):
        print(f"  {m} encoder: {uri}")
    if found["report"]:
        print(f"  evaluation report: {found['report']}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """``xdc pipeline submit``: compile the pretraining pipeline and start a run on a cluster."""
    from xdc_kfp.runner import submit

    cfg, _ = load_settings(args, gpu=True)
    iterations = _iterations(args, cfg)
    arguments = _arguments(args, cfg)
    if args.data_uri:
        arguments["data_uri"] = args.data_uri
    run_id = submit(args.host, cfg, iterations, arguments, args.image, _placement(args), args.run_name,
                    args.experiment)
    print(f"submitted run {run_id} to {args.host} (experiment {args.experiment})")
    return 0
