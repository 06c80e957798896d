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


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, e.g. data.fps=15 (got {item!r})")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, _parse_set(args.set or []))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings file (see configs/)")
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


def cmd_config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(_config(args).model_dump(), sort_keys=False), end="")
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdc",
        description="Self-supervised audio-visual pretraining by Cross-Modal Deep Clustering (XDC).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sample-data", help="write the embedded synthetic sample dataset and its manifest")
    p.add_argument("--out", type=Path, required=True, help="folder for the videos and manifest.csv")
    p.add_argument("--videos", type=int, default=48, help="number of videos (default 48)")
    p.add_argument("--classes", type=int, default=4, help="number of latent classes (default 4, at most 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("decode", help="validate and decode the videos of a manifest into a training-ready dataset")
    p.add_argument("--manifest", type=Path, required=True, help="CSV with header path,label,split")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerunning on it resumes)")
    p.add_argument("--workers", type=int, help="worker processes (default: decode.workers = 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("probe", help="print the streams, duration and frame rate of media files")
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("config", help="print the effective settings (defaults, --config file, --set overrides)")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .decode import DatasetMismatch

    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, ManifestError, DatasetMismatch) as err:
        print(f"xdc {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xdc {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
