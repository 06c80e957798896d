"""``xdc step STEP``: one step of the loop per process, files in and files out.

The sub-commands are generated from the step declarations (:mod:`xdc_core.step_specs`): one flag
per declared input and output (``--video-features``), ``--modality`` and ``--iteration`` where the
step has them, and each calls its step function through :func:`xdc_core.step_specs.call`, as
``xdc run`` and the Kubeflow components do, so ``dvc repro`` computes the same numbers as ``xdc
run`` with the same settings. Paths may be object-store URIs (:mod:`xdc_cli.paths`); see
``xdc step STEP -h`` for each step's flags. DVC's stages run ``xdc step pretrain`` (the loop:
init, then the iterations' steps) and ``xdc step evaluate``.
"""

from __future__ import annotations

import argparse
import inspect
import os
from contextlib import ExitStack
from typing import Any

from xdc_core.config import MODALITIES
from xdc_core.errors import ConfigError

from .paths import local_input, local_output
from .settings import add_settings_args, load_settings, positive_int


def _what(spec: Any, args: argparse.Namespace) -> str:
    """How messages name the step: ``train (video, iteration 2)``."""
    iteration = getattr(args, "iteration", None)
    parts = [getattr(args, "modality", None), f"iteration {iteration}" if iteration is not None else None]
    parts = [p for p in parts if p]
    return spec.name + (f" ({', '.join(parts)})" if parts else "")


def cmd_step(args: argparse.Namespace) -> int:
    """Run the declared step ``args.spec``: remote inputs fetched, remote outputs published when the
    step succeeds, a bad input reported with the flag that named it."""
    from xdc_core.step_specs import Slot, call
    from xdc_core.steps import named_inputs  # torch and the rest: only when a step runs

    spec = args.spec
    if args.nproc_per_node > 1 and "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc-per-node starts its own processes; under torchrun leave it out "
                          "(torchrun's --nproc-per-node says how many)")
    for port in spec.ports:  # a port that needs another (the gallery its videos, the plots the run folder)
        needs = NEEDS.get((spec.name, port.name))
        if needs and getattr(args, port.name) is not None and getattr(args, needs) is None:
            raise ConfigError(f"--{port.name} needs --{needs}: {port.help}")
    iteration = getattr(args, "iteration", None)
    if iteration is None and "iteration" in inspect.signature(spec.function).parameters:
        raise ConfigError(f"xdc step {spec.name} needs --iteration N (1-based): it seeds the step")
    cfg, _ = load_settings(args)
    slot = Slot(iteration or 0, (iteration or 1) - 1, cfg.cluster.iterations, getattr(args, "modality", ""))
    flags = {f"--{p.name.replace('_', '-')}": getattr(args, p.name) for p in spec.inputs}
    with ExitStack() as stack, named_inputs(_what(spec, args), flags):
        paths = {p.name: getattr(args, p.name) if p.direct else
                 stack.enter_context(local_input(getattr(args, p.name), p.folder)) for p in spec.inputs}
        paths |= {p.name: getattr(args, p.name) if p.direct else
                  stack.enter_context(local_output(getattr(args, p.name), p.folder)) for p in spec.outputs}
        result = call(spec, cfg, paths, slot, progress=args.progress, processes=args.nproc_per_node,
                      log=lambda line: print(line, flush=True))
    if spec.report is not None:
        print(spec.report(result, cfg, slot))
    print(f"{_what(spec, args)} → " + ", ".join(f"{p.name} {getattr(args, p.name)}" for p in spec.outputs
                                                 if getattr(args, p.name) is not None))
    return 0


# Ports that make sense only with another port of the same step.
NEEDS = {("kmeans", "gallery"): "data", ("evaluate", "plots"): "run"}


def _common(p: argparse.ArgumentParser) -> None:
    add_settings_args(p)
    p.add_argument("--progress", action="store_true", help="show progress bars (default: off)")


def _data_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc-per-node", type=positive_int, default=1, metavar="N",
                   help="data-parallel processes on this machine, one per GPU (default 1); train.batch_size is per "
                   "process and train.lr_scaling says how the lr follows. Several machines: run the step under "
                   "torchrun, as the Kubeflow PyTorchJob does (docs/kubeflow.md)")


def add_step_parser(sub: Any) -> None:
    """Register ``xdc step`` and its sub-commands on the ``xdc`` sub-parsers ``sub``."""
    step = sub.add_parser(
        "step", help="one step of the loop, files in and files out (the DVC stages of dvc.yaml; see xdc step -h)",
        description="One step of the XDC loop per process (dvc.yaml runs pretrain and evaluate). "
                    "Each calls the step function of xdc_core.steps that xdc run and the Kubeflow components call.",
    )
    steps = step.add_subparsers(dest="step", metavar="STEP", required=True)
    from xdc_core.step_specs import STEPS  # noqa: PLC0415 (declarations only: no torch until a step runs)

    for spec in STEPS:
        p = steps.add_parser(spec.name, help=spec.help)
        if spec.per_modality:
            p.add_argument("--modality", choices=MODALITIES, required=True)
        if spec.per_iteration:
            p.add_argument("--iteration", type=positive_int,
                           help="iteration number (1-based): seeds k-means and training, where they need it; "
                           "embedding takes any encoder, so it is optional there")
        for port in spec.ports:
            p.add_argument(f"--{port.name.replace('_', '-')}", dest=port.name, required=not port.optional,
                           help=port.help)
        if spec.data_parallel:
            _data_parallel(p)
        else:
            p.set_defaults(nproc_per_node=1)
        _common(p)
        p.set_defaults(func=cmd_step, spec=spec)
