"""The ``xdc`` command line: one sub-command per step, each a thin caller of ``xdc_core``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import Config, ConfigError, load_config
from .manifest import ManifestError
from .media.errors import MediaError
from .stage_cli import add_step_parser


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, e.g. data.fps=15 (got {item!r})")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, parse_set(args.set or []))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings file (presets: xdc_core/presets/)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one setting, e.g. --set data.short_side=128"
    )


# -- commands ---------------------------------------------------------------------------------


def cmd_sample_data(args: argparse.Namespace) -> int:
    from .sample_data import SampleSpec, make_sample_dataset

    try:
        spec = SampleSpec(videos=args.videos, classes=args.classes, seed=args.seed)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    manifest = make_sample_dataset(args.out, spec)
    print(f"wrote {spec.videos} videos of {spec.classes} classes (seed {spec.seed}); manifest: {manifest}")
    return 0


def format_summary(summary: dict[str, Any], out: Path) -> str:
    lines = [
        f"decoded dataset: {out}",
        f"  accepted     {summary['accepted']:>6}   ({summary['accepted_duration_s']:.1f} s of video)",
        f"  quarantined  {summary['quarantined']:>6}   (reasons in {out / 'quarantine.csv'})",
    ]
    lines += [f"    {code:<22} {n}" for code, n in summary["reasons"].items()]
    speed = f", {summary['videos_per_s']:.2f} videos/s" if summary.get("videos_per_s") else ""
    lines.append(
        f"  decoded now {summary['decoded_now']}, resumed {summary['resumed']}, "
        f"{summary['elapsed_s']:.1f} s with {summary['workers']} workers{speed}"
    )
    return "\n".join(lines)


def cmd_decode(args: argparse.Namespace) -> int:
    from .decode import decode_dataset

    config = _config(args)
    if args.workers is not None:
        config = config.model_copy(update={"decode": config.decode.model_copy(update={"workers": args.workers})})
    summary = decode_dataset(args.manifest, args.out, config, progress=not args.quiet)
    print(format_summary(summary, Path(args.out)))
    return 0


PRESETS = Path(__file__).resolve().parent / "presets"  # package data: present in installed images too


def preset_path(name: str) -> Path:
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"settings preset {name!r} not found at {path}; pass --config FILE")
    return path


def format_results(metrics: dict[str, Any]) -> str:
    """A small table of top-1 accuracies."""
    rows = [(f"{metrics['method'].upper()} linear probe", metrics["probe"])]
    if "finetune" in metrics:
        rows.append((f"{metrics['method'].upper()} finetune", metrics["finetune"]))
    rows.append(("random init linear probe", metrics["baseline_random"]))
    if "baseline_random_finetune" in metrics:
        rows.append(("random init finetune", metrics["baseline_random_finetune"]))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'top-1 on the test split':<{width}}   video   audio"]
    lines += [f"{name:<{width}}   {r['video']['top1']:.3f}   {r['audio']['top1']:.3f}" for name, r in rows]
    if "probe_vs_random" in metrics:
        lines.append(f"linear probe, {metrics['method'].upper()} minus random init (paired, 95% bootstrap interval "
                     "over the test videos):")
        for m, d in metrics["probe_vs_random"].items():
            lines.append(f"  {m}: {d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .run import run

    overrides = parse_set(args.set or [])
    for flag, key in (("method", "cluster.method"), ("iterations", "cluster.iterations"), ("k", "cluster.k"),
                      ("seed", "seed"), ("device", "device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    config_path, note = args.config, ""
    if config_path is None:
        device = resolve_device(overrides.get("device", "auto"))
        if device.type == "cpu":
            config_path = preset_path("cpu-demo")
            note = f"no GPU and no --config: using the CPU demo preset {config_path}"
        else:
            note = "GPU found and no --config: using the paper's defaults"
    config = load_config(config_path, overrides)
    print(note or f"settings: {config_path}", flush=True)
    metrics = run(args.data, args.out, config, evaluate=not args.no_eval, progress=not args.quiet,
                  log=lambda line: print(line, flush=True))
    if "probe" in metrics:
        print(format_results(metrics))
    out = str(args.out).rstrip("/")
    print(f"metrics: {out}/metrics.json; encoders: {out}/video_encoder.pt, {out}/audio_encoder.pt "
          f"({metrics['seconds']:.0f} s)")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .media import probe

    status = 0
    for path in args.files:
        try:
            print(json.dumps(asdict(probe(path)), indent=2))
        except MediaError as err:
            print(f"{err.path}: {err.reason}", file=sys.stderr)
            status = 1
    return status


def cmd_pipeline(argv: Sequence[str]) -> int:
    try:
        from pipelines.cli import main as pipeline_main
    except ImportError as err:
        print(f"xdc pipeline: error: needs the pipelines extra ({err}): pip install -e '.[pipelines]'", file=sys.stderr)
        return 2
    return pipeline_main(argv)


def cmd_config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(_config(args).model_dump(), sort_keys=False), end="")
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .sample_data import SampleSpec  # its defaults are the help's

    parser = argparse.ArgumentParser(
        prog="xdc",
        description="Self-supervised audio-visual pretraining by Cross-Modal Deep Clustering (XDC).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sample-data", help="write the embedded synthetic sample dataset and its manifest")
    p.add_argument("--out", type=Path, required=True, help="folder for the videos and manifest.csv")
    p.add_argument("--videos", type=int, default=SampleSpec.videos, help=f"number of videos (default {SampleSpec.videos})")
    p.add_argument("--classes", type=int, default=SampleSpec.classes,
                   help=f"number of latent classes (default {SampleSpec.classes}, at most 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("decode", help="validate and decode the videos of a manifest into a training-ready dataset")
    p.add_argument("--manifest", type=Path, required=True, help="CSV with header path,label,split")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerunning on it resumes)")
    p.add_argument("--workers", type=int, help="worker processes (default: decode.workers = 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("run", help="the whole XDC loop on one machine: decode, [embed, k-means, train] x N, evaluate")
    p.add_argument("--data", help="manifest CSV or decoded dataset folder, a path or s3:// URI (default: sample data)")
    p.add_argument("--out", required=True, help="output folder or s3:// URI (rerunning on it resumes)")
    p.add_argument("--method", choices=["xdc", "sdc", "mdc", "cdc"], help="deep-clustering method (default: xdc)")
    p.add_argument("--iterations", type=int, help="clustering iterations")
    p.add_argument("--k", type=int, help="k-means clusters")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto")
    p.add_argument("--no-eval", action="store_true", help="pretrain only (for data without labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    add_step_parser(sub)  # `xdc step STEP`: one step per process, the commands of dvc.yaml's stages

    # Kubeflow lives outside the library: `xdc pipeline` hands its arguments to pipelines.cli, which
    # is imported only when asked for (kfp is an optional extra).
    sub.add_parser("pipeline", help="Kubeflow Pipelines: compile | run-local | submit (see xdc pipeline -h)")

    p = sub.add_parser("probe", help="print the streams, duration and frame rate of media files")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("config", help="print the effective settings (defaults, --config file, --set overrides)")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .decode import DatasetMismatch
    from .steps import RunError, StepInputError
    from .store import StoreError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pipeline"]:  # its own parser, with its own --help
        return cmd_pipeline(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, ManifestError, DatasetMismatch, RunError, StepInputError, StoreError) as err:
        print(f"xdc {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xdc {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
