"""How every command gets its settings: ``--config FILE|PRESET`` and ``--set KEY=VALUE``.

The one default rule: without ``--config``, a command that computes here uses the paper's
settings when this machine has a GPU and the CPU demo preset otherwise; a command that targets a
Kubeflow cluster (``xdc pipeline compile|submit``) uses the paper's settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from xdc_core import store
from xdc_core.config import PRESETS, Config, load_config, parse_config, preset_path
from xdc_core.errors import ConfigError


# The section of DVC's parameters file (params.yaml) that holds the pipeline's own parameters
# (dvc.yaml reads them: the dataset), not settings; every other key there is a setting.
DVC_SECTION = "dvc"


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse exits 2 naming the option otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_settings_args(p: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set`` on a command's parser."""
    g = p.add_argument_group("settings")
    g.add_argument("--config", metavar="FILE|PRESET",
                   help=f"YAML settings file, or a preset name from {PRESETS} (paper, cpu-demo); default: "
                        "paper on a GPU machine or cluster, cpu-demo on a CPU")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set cluster.k=64 (repeatable)")


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["cluster.k=64"]`` → ``{"cluster.k": 64}`` (values parsed as YAML)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, e.g. data.fps=15 (got {item!r})")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def config_path(given: str | None, gpu: bool) -> Path:
    """The settings file: ``given`` (a path, else a preset name), or the default for the target."""
    if given is None:
        return preset_path("paper" if gpu else "cpu-demo")
    return Path(given) if Path(given).is_file() or "/" in given or given.endswith((".yaml", ".yml")) \
        else preset_path(given)


def flag_overrides(args: argparse.Namespace, flags: Mapping[str, str]) -> dict[str, Any]:
    """``{setting: value}`` for the shortcut flags (``{"k": "cluster.k"}``) given on the command line."""
    return {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag, None) is not None}


def load_settings(
    args: argparse.Namespace, gpu: bool | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[Config, Path]:
    """The validated settings of a command and the file they came from. ``gpu``: whether the target
    has one (None: this machine, unless ``device: cpu`` is asked for). ``overrides`` (dotted keys
    as ``--set``) come before ``--set``, which wins."""
    values = {**(overrides or {}), **parse_set(args.set or [])}
    if gpu is None:
        from xdc_core.device import resolve_device

        gpu = resolve_device(values.get("device", "auto")).type == "cuda"
    if args.config is not None and store.is_remote(args.config):  # e.g. a PyTorchJob's pods: no shared disk
        return parse_config(store.read_bytes(args.config).decode(), values, args.config), Path(args.config)
    path = config_path(args.config, gpu)
    return load_settings_file(path, values), path


def load_settings_file(path: Path, values: Mapping[str, Any] | None = None) -> Config:
    """:func:`~xdc_core.config.load_config`, but a ``dvc`` section (in DVC's params.yaml) is left out."""
    tree = yaml.safe_load(path.read_text()) if path.is_file() else None
    if isinstance(tree, dict) and DVC_SECTION in tree:
        tree.pop(DVC_SECTION)
        return parse_config(yaml.safe_dump(tree), dict(values or {}), str(path))
    return load_config(path, dict(values or {}))
