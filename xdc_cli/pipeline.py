"""``xdc pipeline``: compile the Kubeflow pipelines, run one through ``kfp.local``, or submit it.

    xdc pipeline compile [--pipeline xdc-smoke|ucf101-eval] [--iterations N] [--config FILE|PRESET] --out FILE.yaml
    xdc pipeline packages [--out pipelines]
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

from xdc_core import store
from xdc_core.config import METHODS, Config, is_preset
from xdc_core.errors import ConfigError
from xdc_core.report import format_results
from xdc_kfp import DEFAULT_IMAGE
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import RUN_PARAMETERS, SCALE_PARAMETERS

from .settings import add_settings_args, load_settings


def add_pipeline_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pipeline`` and its commands ``compile``, ``run-local`` and ``submit`` on ``sub``,
    the sub-parsers of the ``xdc`` parser."""
    parser = sub.add_parser("pipeline", help="Kubeflow Pipelines: compile | run-local | submit",
                            description="Kubeflow Pipelines: compile, run locally, submit.")
    commands = parser.add_subparsers(dest="pipeline_command", metavar="COMMAND", required=True)

    p = _command(commands, "compile", cmd_compile, "write a pipeline's YAML, the file a user uploads in the KFP UI")
    p.add_argument("--pipeline", choices=["xdc-pretrain", "xdc-smoke", "ucf101-eval"], default="xdc-pretrain",
                   help="xdc-pretrain (default), xdc-smoke (one iteration; compile it with --config cpu-demo) "
                        "or ucf101-eval")
    p.add_argument("--out", type=Path, required=True, help="output YAML, e.g. xdc-pretrain-5it.yaml")
    _add_placement_args(p)

    p = commands.add_parser("packages", help="write the compiled pipelines shipped in pipelines/",
                            description="Write the compiled pipelines shipped in pipelines/ (the files a KFP UI "
                                        "user uploads), as this code compiles them.")
    p.add_argument("--out", type=Path, default=Path("pipelines"), help="folder (default pipelines)")
    p.set_defaults(func=cmd_packages)

    p = _command(commands, "run-local", cmd_run_local, "run the pretraining pipeline through kfp.local on this machine",
                 on_cluster=False)
    p.add_argument("--data", help="manifest CSV, a path or s3:// URI (default: the embedded sample data)")
    p.add_argument("--out", type=Path, required=True, help="folder for the pipeline root and the task cache")
    p.add_argument("--image", help="run each task in a container of this image (kfp.local's DockerRunner, as on a "
                                   "cluster; needs Docker), e.g. to try an image before pushing it; default: in "
                                   "this Python environment. The containers see only the pipeline root under --out: keep the data "
                                   "there (or in the object store), writable by the image's uid 10001")
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
    for name, param in RUN_PARAMETERS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(param.unset),
                       **({"choices": METHODS} if name == "method" else {}), help=f"{param.help} ({param.setting})")
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
    g.add_argument("--decode-cpu", metavar="CORES",
                   help="CPU request of a decode task (default: the settings' decode.workers)")
    g.add_argument("--gpu-cpu", metavar="CORES",
                   help="CPU request of a GPU task (default: its settings' most DataLoader workers + 1)")
    g.add_argument("--cpu-memory", default=Placement.cpu_memory, metavar="QUANTITY",
                   help=f"memory request of a decode task (default {Placement.cpu_memory})")
    g.add_argument("--gpu-memory", default=Placement.gpu_memory, metavar="QUANTITY",
                   help=f"memory request of a GPU task (default {Placement.gpu_memory}, for the paper's clips)")
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
        cpu_cpu=args.decode_cpu, gpu_cpu=args.gpu_cpu, cpu_memory=args.cpu_memory, gpu_memory=args.gpu_memory,
        decode_parallelism=args.decode_parallelism,
        gpu_node_label=_label(args.gpu_node_label, "--gpu-node-label"),
        cpu_node_label=_label(args.cpu_node_label, "--cpu-node-label") if args.cpu_node_label else None,
        s3_endpoint=args.s3_endpoint,
        s3_secret=args.s3_secret,
        s3_secure=args.s3_tls,
        pushgateway=args.pushgateway,
    )


# -- the commands ------------------------------------------------------------------------------------------


def _config_reference(args: argparse.Namespace) -> str | None:
    """What the compiled pipeline's ``config`` parameter names: the preset or object-store URI given
    (or the default preset), so that the run form shows a name; None (the settings themselves,
    inlined) for a local file or with ``--set``, which a cluster cannot read."""
    if args.set:
        return None
    given = args.config or "paper"
    return given if is_preset(given) or store.is_remote(given) else None


def cmd_compile(args: argparse.Namespace) -> int:
    """``xdc pipeline compile``: write the pipeline's YAML."""
    from xdc_kfp.runner import compile_pipeline

    cfg, _ = load_settings(args, gpu=True)
    iterations = 1 if args.pipeline == "xdc-smoke" else _iterations(args, cfg)
    out = compile_pipeline(args.pipeline, cfg, iterations, args.out, args.image, _placement(args),
                           _config_reference(args))
    what = f"{iterations} iterations, " if args.pipeline != "ucf101-eval" else ""
    print(f"wrote {out} ({args.pipeline}, {what}image {args.image}); upload it in the KFP UI (Pipelines → Upload)")
    return 0


def cmd_packages(args: argparse.Namespace) -> int:
    """``xdc pipeline packages``: write the compiled pipelines shipped in pipelines/."""
    from xdc_kfp.runner import write_packages

    for path in write_packages(args.out, DEFAULT_IMAGE, Placement()):
        print(f"wrote {path}")
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
    found = run_local(args.data, args.out, cfg, iterations, arguments, image=args.image)
    if found["results"]:
        print(format_results({"method": arguments.get("method", cfg.cluster.method), **found["results"]}))
    print(f"kfp.local run: {found['run_dir'] or 'every task reused from the cache'} "
          f"({time.perf_counter() - started:.0f} s)")
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
                    args.experiment, _config_reference(args))
    print(f"submitted run {run_id} to {args.host} (experiment {args.experiment})")
    return 0
