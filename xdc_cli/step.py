"""``xdc step STEP``: one step of the loop per process, files in and files out (the DVC stages).

Each sub-command is a thin caller of one function of :mod:`xdc_core.steps`, the functions
``xdc run`` and the Kubeflow components call, so ``dvc repro`` computes the same numbers as
``xdc run`` with the same settings. Paths may be object-store URIs (:mod:`xdc_cli.paths`)::

    xdc step init     --out DIR                                  random-init encoders ("iteration 0")
    xdc step embed    --data DECODED --modality video|audio --encoder ENC.pt --out FEATURES.npz
    xdc step kmeans   --video-features F --audio-features F --iteration N --out CLUSTERS.npz
                      --stats KMEANS.json [--previous CLUSTERS.npz] [--data DECODED --gallery GALLERY.html]
    xdc step train    --data DECODED --modality M --iteration N --clusters C --encoder ENC.pt
                      --out ENC.pt --stats TRAIN.json [--checkpoints DIR|s3://…] [--nproc-per-node N]
    xdc step evaluate --data DECODED --video-encoder P --audio-encoder P --out metrics.json
                      [--plots DIR --run DIR]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from xdc_core.config import MODALITIES, Config
from xdc_core.errors import ConfigError

from .paths import local_input, local_output
from .settings import add_settings_args, load_settings, positive_int


@contextmanager
def _step(args: argparse.Namespace, what: str, inputs: dict[str, bool], outputs: dict[str, bool]
          ) -> Iterator[tuple[Config, dict[str, Any]]]:
    """The settings and local paths of a step's path arguments (``{name: is_folder}``): remote
    inputs fetched, remote outputs published when the step succeeds; a bad input is reported
    with the flag that named it."""
    from xdc_core.steps import named_inputs  # torch and the rest: only when a step runs

    cfg, _ = load_settings(args)
    flags = {f"--{n.replace('_', '-')}": getattr(args, n) for n in inputs}
    with ExitStack() as stack, named_inputs(what, flags):
        paths = {n: stack.enter_context(local_input(getattr(args, n), folder)) for n, folder in inputs.items()}
        paths |= {n: stack.enter_context(local_output(getattr(args, n), folder)) for n, folder in outputs.items()}
        yield cfg, paths


def cmd_init(args: argparse.Namespace) -> int:
    from xdc_core.layout import RunLayout
    from xdc_core.steps import init_encoder, save_encoder

    with _step(args, "init", {}, {"out": True}) as (cfg, p):
        for m in MODALITIES:
            save_encoder(init_encoder(m, cfg), p["out"] / RunLayout(Path()).encoder(0, m).name)
    print(f"init: random-init encoders of seed {cfg.seed} → {args.out}")
    return 0


def _launch(args: argparse.Namespace, fn: Any, fn_args: tuple[Any, ...]) -> Any:
    """``fn(*fn_args)`` in ``--nproc-per-node`` data-parallel processes (torchrun's engine), or here."""
    from xdc_core import distributed

    if args.nproc_per_node > 1 and "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc-per-node starts its own processes; under torchrun leave it out "
                          "(torchrun's --nproc-per-node says how many)")
    return distributed.launch(fn, fn_args, args.nproc_per_node)


def cmd_embed(args: argparse.Namespace) -> int:
    from xdc_core.steps import embed_step

    with _step(args, f"embed ({args.modality})", {"data": True, "encoder": False}, {"out": False}) as (cfg, p):
        _launch(args, embed_step, (p["data"], args.modality, cfg, p["encoder"], p["out"], args.progress))
    print(f"embed {args.modality}: encoder {args.encoder or 'random init'} → {args.out}")
    return 0


def cmd_kmeans(args: argparse.Namespace) -> int:
    from xdc_core.report import format_clusters
    from xdc_core.steps import kmeans_step

    if args.gallery is not None and args.data is None:
        raise ConfigError("--gallery needs --data DECODED: the gallery's thumbnails come from the decoded videos")
    # The previous iteration's clusters only feed a statistic (NMI); iteration 1 has none.
    inputs = {"video_features": False, "audio_features": False} | ({"previous": False} if args.iteration > 1 else {})
    inputs |= {"data": True} if args.gallery is not None else {}  # the videos: only for the gallery
    outputs = {"out": False, "stats": False, "gallery": False}
    with _step(args, f"kmeans (iteration {args.iteration})", inputs, outputs) as (cfg, p):
        features = {m: p[f"{m}_features"] for m in MODALITIES}
        stats = kmeans_step(features, cfg, args.iteration, p["out"], p.get("previous"), stats=p["stats"],
                            decoded=p.get("data"), gallery=p["gallery"])
    for name, c in stats.items():
        print(f"kmeans iteration {args.iteration}: {format_clusters(name, c)}")
    gallery = f"; gallery → {args.gallery}" if args.gallery else ""
    print(f"clusters → {args.out}; statistics → {args.stats}{gallery}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from xdc_core.report import format_train
    from xdc_core.steps import train_step

    inputs = {"data": True, "clusters": False, "encoder": False}
    outputs = {"out": False, "stats": False}
    with _step(args, f"train ({args.modality}, iteration {args.iteration})", inputs, outputs) as (cfg, p):
        # the checkpoints go straight to their folder or bucket: a preempted machine's disk is lost
        result = _launch(args, train_step, (p["data"], args.modality, cfg, args.iteration, p["clusters"],
                                             p["encoder"], p["out"], args.checkpoints, args.progress, p["stats"]))
    print(f"train iteration {args.iteration}: {format_train(args.modality, result)} → {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from xdc_core.layout import RunLayout
    from xdc_core.plots import write_plots
    from xdc_core.report import format_results
    from xdc_core.steps import evaluate_step, metrics_summary
    from xdc_core.store import write_json

    if args.plots is not None and args.run is None:
        raise ConfigError("--plots needs --run RUN_DIR: the plot data gathers the statistics of its iterations")
    inputs = {"data": True, "video_encoder": False, "audio_encoder": False, "run": True}
    with _step(args, "evaluate", inputs, {"out": False, "plots": True}) as (cfg, p):
        # the iteration statistics are read first: a missing one fails before the (long) evaluation
        its = range(1, cfg.cluster.iterations + 1)
        iterations = [RunLayout(p["run"]).iteration_stats(it) for it in its] if p["run"] is not None else []
        results = evaluate_step(p["data"], cfg, {m: p[f"{m}_encoder"] for m in MODALITIES}, args.progress,
                                log=lambda line: print(line, flush=True))
        metrics = metrics_summary(cfg, results)
        write_json(p["out"], metrics)
        if p["plots"] is not None:
            write_plots(p["plots"], iterations, metrics)
    print(format_results(metrics))
    print(f"metrics → {args.out}" + (f"; plot data → {args.plots}" if args.plots else ""))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    add_settings_args(p)
    p.add_argument("--progress", action="store_true", help="show progress bars (default: off)")


def _data_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc-per-node", type=positive_int, default=1, metavar="N",
                   help="data-parallel processes on this machine, one per GPU (default 1); train.batch_size is per "
                   "process and train.lr_scaling says how the lr follows. Several machines: run the step under "
                   "torchrun, as the Kubeflow PyTorchJob does (docs/kubeflow.md)")


def _one_encoder(p: argparse.ArgumentParser, encoder: str) -> None:
    p.add_argument("--data", required=True, help="decoded dataset folder")
    p.add_argument("--modality", choices=MODALITIES, required=True)
    p.add_argument("--encoder", help=f"{encoder} (default: the random init of the seed)")


def add_step_parser(sub: Any) -> None:
    """Register ``xdc step`` and its sub-commands on the ``xdc`` sub-parsers ``sub``."""
    step = sub.add_parser(
        "step", help="one step of the loop, files in and files out (the DVC stages of dvc.yaml; see xdc step -h)",
        description="One step of the XDC loop per process: the commands of dvc.yaml's stages. "
                    "Each calls the step function of xdc_core.steps that xdc run and the Kubeflow components call.",
    )
    steps = step.add_subparsers(dest="step", metavar="STEP", required=True)

    p = steps.add_parser("init", help="random-init encoders (iteration 0) → DIR/{video,audio}_encoder.pt")
    p.add_argument("--out", required=True, help="output folder")
    _common(p)
    p.set_defaults(func=cmd_init)

    p = steps.add_parser("embed", help="per-video features of the pretraining videos → .npz")
    _one_encoder(p, "encoder checkpoint")
    p.add_argument("--out", required=True, help="features file (.npz)")
    _data_parallel(p)
    _common(p)
    p.set_defaults(func=cmd_embed)

    p = steps.add_parser("kmeans", help="cluster the features as cluster.method says → pseudo-labels (.npz)")
    p.add_argument("--video-features", required=True)
    p.add_argument("--audio-features", required=True)
    p.add_argument("--iteration", type=int, required=True, help="iteration number (1-based; seeds k-means)")
    p.add_argument("--previous", help="the previous iteration's clusters, for the NMI statistic (iteration > 1)")
    p.add_argument("--out", required=True, help="clusters file (.npz)")
    p.add_argument("--stats", required=True, help="cluster statistics (kmeans.json)")
    p.add_argument("--data", help="decoded dataset folder: the videos of the gallery's thumbnails")
    p.add_argument("--gallery", help="also write the cluster gallery (one self-contained .html page); needs --data")
    _common(p)
    p.set_defaults(func=cmd_kmeans)

    p = steps.add_parser("train", help="train one encoder on the pseudo-labels its method assigns it")
    _one_encoder(p, "encoder to start from")
    p.add_argument("--iteration", type=int, required=True, help="iteration number (1-based; seeds training)")
    p.add_argument("--clusters", required=True, help="clusters file of this iteration (.npz)")
    p.add_argument("--out", required=True, help="trained encoder checkpoint (.pt)")
    p.add_argument("--stats", required=True, help="training history (train_<modality>.json)")
    p.add_argument("--checkpoints", help="folder or object-store prefix (s3://…) of the resumable checkpoints, "
                   "written every epoch and every train.checkpoint_minutes: a rerun continues from the last one")
    _data_parallel(p)
    _common(p)
    p.set_defaults(func=cmd_train)

    p = steps.add_parser("evaluate", help="linear probe of the encoders and of the random init → metrics.json")
    p.add_argument("--data", required=True, help="decoded dataset folder (labelled train/test splits)")
    p.add_argument("--video-encoder", required=True)
    p.add_argument("--audio-encoder", required=True)
    p.add_argument("--out", required=True, help="metrics file (.json)")
    p.add_argument("--plots", help="folder for plot data (clusters_*.json, loss_*.json, probe.json); needs --run")
    p.add_argument("--run", help="run folder whose iter_01..iter_NN (N = cluster.iterations) hold the statistics")
    _common(p)
    p.set_defaults(func=cmd_evaluate)
