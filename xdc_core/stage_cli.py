"""``xdc step STEP``: one step of the loop per process, files in and files out (the DVC stages).

Each sub-command is a thin caller of one function of :mod:`xdc_core.steps` — the functions
``xdc run`` and the Kubeflow components call — so ``dvc repro`` (``dvc.yaml``) computes the same
numbers as ``xdc run`` with the same settings::

    xdc step init     --out DIR                                  random-init encoders ("iteration 0")
    xdc step decode   --manifest M --out DIR [--no-eval]
    xdc step embed    --data DECODED --modality video|audio --encoder ENC.pt --out FEATURES.npz
    xdc step kmeans   --video-features F --audio-features F --iteration N --out CLUSTERS.npz
                      --stats STATS.json [--previous CLUSTERS.npz]
    xdc step train    --data DECODED --modality M --iteration N --clusters C --encoder ENC.pt
                      --out ENC.pt --stats STATS.json [--checkpoints DIR]
    xdc step evaluate --data DECODED --video-encoder P --audio-encoder P --out metrics.json
                      [--plots DIR --iterations-dir RUN | --stats FILE...]

Every one reads its settings from ``--config`` (default ``params.yaml``, DVC's parameters file)
and ``--set KEY=VALUE``. Bad inputs and settings exit with status 2 and a message naming the
flag and the file at fault.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, load_config

MODALITY_CHOICES = ("video", "audio")


def _config(args: argparse.Namespace) -> Config:
    from .cli import parse_set

    return load_config(args.config, parse_set(args.set or []))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("params.yaml"),
                   help="YAML settings file (default: params.yaml, DVC's parameters file)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, e.g. --set cluster.k=32")
    p.add_argument("--progress", action="store_true", help="show progress bars (default: off)")


def _inputs(args: argparse.Namespace, *flags: str) -> dict[str, str | None]:
    """``{"--flag": path}`` for the input flags of a step (for error messages)."""
    return {f"--{f.replace('_', '-')}": (str(getattr(args, f)) if getattr(args, f) is not None else None)
            for f in flags}


# -- commands ------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from .models import MODALITIES
    from .steps import init_encoder, save_encoder

    cfg = _config(args)
    for m in MODALITIES:
        path = args.out / f"{m}_encoder.pt"
        save_encoder(init_encoder(m, cfg), path)
        print(f"init: random-init {m} encoder (seed {cfg.seed}, width {getattr(cfg.model, f'{m}_width')}) → {path}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from .cli import format_summary
    from .steps import decode_step

    cfg = _config(args)
    summary = decode_step(args.manifest, args.out, cfg, evaluate=not args.no_eval, progress=args.progress)
    print(format_summary(summary, args.out))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .steps import embed_step, named_inputs

    cfg = _config(args)
    with named_inputs(f"embed ({args.modality})", _inputs(args, "data", "encoder")):
        out = embed_step(args.data, args.modality, cfg, args.encoder, args.out, args.progress)
    with np.load(out) as z:
        shape = z["features"].shape
    print(f"embed {args.modality}: {shape[0]} videos x {shape[1]} features "
          f"(encoder {args.encoder or 'random init'}) → {out}")
    return 0


def _check_k(features: Path, cfg: Config) -> None:
    """The plan check of ``xdc run`` for a k changed after decoding (the decode stage does not rerun)."""
    import numpy as np

    from .steps import RunError

    try:
        with np.load(features) as z:
            n = len(z["index"])
    except Exception:  # noqa: BLE001 - kmeans_step reports unreadable features with their name
        return
    if cfg.cluster.k > n:
        raise RunError(f"k={cfg.cluster.k} (cluster.k) is larger than the number of pretraining videos "
                       f"({n} in {features}): choose k at most that, or add videos")


def cmd_kmeans(args: argparse.Namespace) -> int:
    from .steps import CROSS_MODAL, kmeans_step, named_inputs, write_json

    cfg = _config(args)
    # The previous iteration's clusters only feed a statistic (NMI); iteration 1 has none.
    previous = args.previous if args.previous is not None and args.previous.is_file() else None
    inputs = _inputs(args, "video_features", "audio_features") | {"--previous": str(previous) if previous else None}
    with named_inputs(f"kmeans (iteration {args.iteration})", inputs):
        _check_k(args.video_features, cfg)
        stats = kmeans_step({"video": args.video_features, "audio": args.audio_features}, cfg, args.iteration,
                            args.out, previous)
    write_json(args.stats, {"step": "kmeans", "iteration": args.iteration, "method": cfg.cluster.method,
                            "k": cfg.cluster.k, "clusters": stats})
    for name, c in stats.items():
        if name == CROSS_MODAL:
            print(f"kmeans iteration {args.iteration}: video-audio cluster nmi {c['nmi']:.3f} "
                  f"(chance {c['nmi_chance']:.3f})")
            continue
        nmi = f", nmi-prev {c['nmi_previous']:.2f}" if c.get("nmi_previous") is not None else ""
        purity = f", purity {c['purity']:.2f}" if c.get("purity") is not None else ""
        print(f"kmeans iteration {args.iteration}: {name} clusters k={c['k']} sizes "
              f"{c['sizes_min']}/{c['sizes_median']:g}/{c['sizes_max']}{nmi}{purity}")
    print(f"clusters → {args.out}; statistics → {args.stats}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .steps import named_inputs, train_step, write_json

    cfg = _config(args)
    with named_inputs(f"train ({args.modality}, iteration {args.iteration})",
                      _inputs(args, "data", "clusters", "encoder")):
        result = train_step(args.data, args.modality, cfg, args.iteration, args.clusters, args.encoder, args.out,
                            args.checkpoints, args.progress)
    write_json(args.stats, {"step": "train", "iteration": args.iteration, "modality": args.modality,
                            "method": cfg.cluster.method, **result})
    loss = (f"loss {result['train_loss'][0]:.3f}→{result['train_loss'][-1]:.3f}" if result["train_loss"] else "no epochs")
    val = f", held-out {min(result['val_loss']):.3f}" if result["val_loss"] else ""
    print(f"train {args.modality} iteration {args.iteration}: {result['epochs']} epochs, {loss}{val} "
          f"({result['stop_reason']}) → {args.out}")
    return 0


# -- evaluate and the plot data ------------------------------------------------------------------------


def read_iteration_stats(files: list[Path]) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """``(clusters, train)``: per iteration, the cluster statistics (by clustering) and the training
    results (by modality) found in stats files of ``xdc step kmeans|train`` or ``xdc run`` (stats.json)."""
    from .steps import StepInputError

    clusters: dict[int, dict[str, Any]] = {}
    train: dict[int, dict[str, Any]] = {}
    for path in files:
        try:
            s = json.loads(Path(path).read_text())
            it = int(s["iteration"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StepInputError(f"iteration statistics {path} are not readable: {err}") from None
        if s.get("step") == "kmeans" or "clusters" in s:
            clusters.setdefault(it, {}).update(s.get("clusters") or {})
        if s.get("step") == "train":
            train.setdefault(it, {})[s["modality"]] = s
        elif isinstance(s.get("train"), dict):  # xdc run's iter_NN/stats.json
            for m, r in s["train"].items():
                train.setdefault(it, {})[m] = r
    return clusters, train


def iteration_stats_files(run_dir: Path, iterations: int) -> list[Path]:
    """The .json statistics of iterations 1..N under ``run_dir/iter_NN`` (later iterations left
    over from a longer run are ignored)."""
    from .steps import StepInputError

    files = []
    for it in range(1, iterations + 1):
        found = sorted((run_dir / f"iter_{it:02d}").glob("*.json"))
        if not found:
            raise StepInputError(f"no iteration statistics (*.json) in {run_dir / f'iter_{it:02d}'} "
                                 f"(cluster.iterations = {iterations})")
        files += found
    return files


def write_plots(out: Path, metrics: dict[str, Any], clusters: dict[int, dict[str, Any]],
                train: dict[int, dict[str, Any]]) -> list[Path]:
    """Plot data for ``dvc plots show`` (JSON lists of rows, ``null`` where a value does not exist):

    * ``clusters_{video,audio|joint}.json``: per iteration, cluster sizes (min/median/max), NMI with
      the previous iteration's clusters, purity and NMI against the labels;
    * ``loss_{video,audio}.json``: per epoch (counted over all iterations), the pseudo-label
      training loss and held-out loss, with the iteration and its epoch;
    * ``probe.json``: linear-probe top-1 of the pretrained and the random-init encoders
      (and finetuning when enabled).
    """
    from .steps import CROSS_MODAL, write_json

    written = []
    names = sorted({name for per_it in clusters.values() for name in per_it})
    for name in names:
        rows = []
        for it in sorted(clusters):
            c = clusters[it].get(name)
            if c is None:
                continue
            if name == CROSS_MODAL:
                rows.append({"iteration": it, "nmi": c.get("nmi"), "nmi_chance": c.get("nmi_chance")})
                continue
            rows.append({"iteration": it, "k": c.get("k"), "sizes_min": c.get("sizes_min"),
                         "sizes_median": c.get("sizes_median"), "sizes_max": c.get("sizes_max"),
                         "nmi_previous": c.get("nmi_previous"), "purity": c.get("purity"),
                         "nmi_labels": c.get("nmi_labels"), "objective": c.get("objective")})
        write_json(out / f"clusters_{name}.json", rows)
        written.append(out / f"clusters_{name}.json")
    for m in MODALITY_CHOICES:
        rows, epoch = [], 0
        for it in sorted(train):
            r = train[it].get(m)
            if r is None:
                continue
            tl, vl = r.get("train_loss") or [], r.get("val_loss") or []
            for e in range(max(len(tl), len(vl))):
                epoch += 1
                rows.append({"epoch": epoch, "iteration": it, "iteration_epoch": e + 1,
                             "train_loss": tl[e] if e < len(tl) else None, "val_loss": vl[e] if e < len(vl) else None})
        if rows:
            write_json(out / f"loss_{m}.json", rows)
            written.append(out / f"loss_{m}.json")
    method = str(metrics.get("method", "pretrained")).upper()
    rows = []
    for key, label in (("probe", f"{method} linear probe"), ("baseline_random", "random init linear probe"),
                       ("finetune", f"{method} finetune"), ("baseline_random_finetune", "random init finetune")):
        for m, r in (metrics.get(key) or {}).items():
            rows.append({"encoder": f"{m}: {label}", "modality": m, "model": label, "top1": r["top1"]})
    write_json(out / "probe.json", rows)
    written.append(out / "probe.json")
    return written


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` without the validation top-1 of each lr of the grid (keys like ``0.01`` make
    confusing columns): top-1, the chosen lr and the video counts, what ``dvc metrics show`` tabulates."""
    def prune(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        return {k: prune(v) for k, v in node.items() if not isinstance(v, list) and k != "val_top1_by_lr"}

    return prune(metrics)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .cli import format_results
    from .steps import evaluate_step, named_inputs, write_json

    cfg = _config(args)
    stats_files: list[Path] = []
    if args.plots is not None:  # check the statistics exist before the (long) evaluation
        if args.stats:
            stats_files = list(args.stats)
        elif args.iterations_dir is not None:
            with named_inputs("evaluate", _inputs(args, "iterations_dir")):
                stats_files = iteration_stats_files(args.iterations_dir, cfg.cluster.iterations)
        else:
            raise ConfigError("--plots needs the iteration statistics: --iterations-dir DIR or --stats FILE...")
    with named_inputs("evaluate", _inputs(args, "data", "video_encoder", "audio_encoder")):
        results = evaluate_step(args.data, cfg, {"video": args.video_encoder, "audio": args.audio_encoder},
                                args.progress, log=lambda line: print(line, flush=True))
    metrics = {"method": cfg.cluster.method, "k": cfg.cluster.k, "iterations": cfg.cluster.iterations, **results}
    write_json(args.out, metrics_summary(metrics))
    print(format_results(metrics))
    print(f"metrics → {args.out}")
    if args.plots is not None:
        with named_inputs("evaluate", {"--stats": " ".join(map(str, stats_files))}):
            clusters, train = read_iteration_stats(stats_files)
        written = write_plots(args.plots, metrics, clusters, train)
        print(f"plot data → {', '.join(str(p) for p in written)}")
    return 0


# -- parser --------------------------------------------------------------------------------------


def add_step_parser(sub: Any) -> None:
    """Register ``xdc step`` and its sub-commands on the ``xdc`` sub-parsers ``sub``."""
    step = sub.add_parser(
        "step", help="one step of the loop, files in and files out (the DVC stages of dvc.yaml; see xdc step -h)",
        description="One step of the XDC loop per process: the commands of dvc.yaml's stages. "
                    "Each calls the step function of xdc_core.steps that xdc run and the Kubeflow components call.",
    )
    steps = step.add_subparsers(dest="step", metavar="STEP", required=True)

    p = steps.add_parser("init", help="random-init encoders (iteration 0) → DIR/{video,audio}_encoder.pt")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _common(p)
    p.set_defaults(func=cmd_init)

    p = steps.add_parser("decode", help="validate and decode the videos of a manifest (as xdc decode, plus the plan checks)")
    p.add_argument("--manifest", type=Path, required=True, help="CSV with header path,label,split")
    p.add_argument("--out", type=Path, required=True, help="decoded dataset folder")
    p.add_argument("--no-eval", action="store_true", help="pretrain only: do not require labelled train/test splits")
    _common(p)
    p.set_defaults(func=cmd_decode)

    p = steps.add_parser("embed", help="per-video features of the pretraining videos → .npz")
    p.add_argument("--data", type=Path, required=True, help="decoded dataset folder")
    p.add_argument("--modality", choices=MODALITY_CHOICES, required=True)
    p.add_argument("--encoder", type=Path, help="encoder checkpoint (default: the random init of the seed)")
    p.add_argument("--out", type=Path, required=True, help="features file (.npz)")
    _common(p)
    p.set_defaults(func=cmd_embed)

    p = steps.add_parser("kmeans", help="cluster the features as cluster.method says → pseudo-labels (.npz)")
    p.add_argument("--video-features", type=Path, required=True)
    p.add_argument("--audio-features", type=Path, required=True)
    p.add_argument("--iteration", type=int, required=True, help="iteration number (1-based; seeds k-means)")
    p.add_argument("--previous", type=Path,
                   help="the previous iteration's clusters, for the NMI statistic (ignored if the file does not exist)")
    p.add_argument("--out", type=Path, required=True, help="clusters file (.npz)")
    p.add_argument("--stats", type=Path, required=True, help="cluster statistics (.json)")
    _common(p)
    p.set_defaults(func=cmd_kmeans)

    p = steps.add_parser("train", help="train one encoder on the pseudo-labels its method assigns it")
    p.add_argument("--data", type=Path, required=True, help="decoded dataset folder")
    p.add_argument("--modality", choices=MODALITY_CHOICES, required=True)
    p.add_argument("--iteration", type=int, required=True, help="iteration number (1-based; seeds training)")
    p.add_argument("--clusters", type=Path, required=True, help="clusters file of this iteration (.npz)")
    p.add_argument("--encoder", type=Path, help="encoder to start from (default: the random init of the seed)")
    p.add_argument("--out", type=Path, required=True, help="trained encoder checkpoint (.pt)")
    p.add_argument("--stats", type=Path, required=True, help="training history (.json)")
    p.add_argument("--checkpoints", type=Path, help="per-epoch checkpoints: a rerun resumes from them")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = steps.add_parser("evaluate", help="linear probe of the encoders and of the random init → metrics.json")
    p.add_argument("--data", type=Path, required=True, help="decoded dataset folder (labelled train/test splits)")
    p.add_argument("--video-encoder", type=Path, required=True)
    p.add_argument("--audio-encoder", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="metrics file (.json)")
    p.add_argument("--plots", type=Path, help="folder for plot data (clusters_*.json, loss_*.json, probe.json)")
    p.add_argument("--iterations-dir", type=Path,
                   help="run folder whose iter_01..iter_NN (N = cluster.iterations) hold the statistics (*.json)")
    p.add_argument("--stats", type=Path, nargs="+", help="the iteration statistics files, instead of --iterations-dir")
    _common(p)
    p.set_defaults(func=cmd_evaluate)
