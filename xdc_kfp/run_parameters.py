"""The pipelines' run parameters: what a user sets per run in the KFP UI, and how they become the
settings every task reads.

A run names its settings by ``config`` (a preset, an ``s3://`` URI of a YAML file, or the settings
themselves as YAML/JSON text), then overrides a few typed values (:data:`RUN_PARAMETERS`) and any
other setting (``overrides``, ``KEY=VALUE`` pairs as ``--set``). A typed value left at its
"unset" value (0, "" or -1: never a valid setting) keeps the config's own, so choosing another
preset at run time is never silently undone by the defaults of the compiled one.

kfp-free: the ``settings`` component runs it inside the pipeline, :func:`xdc_kfp.runner.run_arguments`
on the command line before anything is submitted, so both reject the same values with the same message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from xdc_core import store
from xdc_core.config import Config, is_preset, parse_config, preset_path
from xdc_core.errors import ConfigError


@dataclass(frozen=True)
class RunParameter:
    setting: str  # the dotted setting it overrides
    unset: Any  # the value that means "the config's own"
    help: str


RUN_PARAMETERS: dict[str, RunParameter] = {
    "method": RunParameter("cluster.method", "", "the clustering method: xdc (each encoder learns the other "
                           "modality's clusters), sdc (its own), mdc (both, two heads) or cdc (clusters of both "
                           "joined); paper §3"),
    "k": RunParameter("cluster.k", 0, "clusters of each k-means: at most the pretraining videos"),
    "epochs": RunParameter("train.total_epochs", 0, "training epochs of each encoder per clustering iteration"),
    "epoch_size": RunParameter("train.epoch_size", 0, "clips per training epoch (with epochs, the training budget)"),
    "lr": RunParameter("train.lr", 0.0, "base learning rate per GPU (the peak lr follows the global batch)"),
    "batch_size": RunParameter("train.batch_size", 0, "training clips per GPU per step"),
    "seed": RunParameter("seed", -1, "seed of every random choice: the same seed and data give the same encoders"),
}

# The run parameters that scale a run out over more machines (name → what it counts); the
# decode shards leave the results as they are, more GPUs make the global batch larger.
# Not settings: the pipeline's structure reads them (how many decode tasks, how many GPUs a task
# asks for), so they are pipeline parameters of their own, not merged into the settings.
SCALE_PARAMETERS: dict[str, str] = {
    "decode_shards": "the decode tasks the manifest is split over",
    "gpus_per_node": "the GPUs of each train-encoder task (one training process each)",
    "nodes": "the nodes each train-encoder task trains on",
}

# A run on the embedded sample data (2000 synthetic videos, for trying the pipeline out) may train
# each encoder on at most this many clips per iteration: the CPU demo preset uses 16,000; the
# paper's 30,000,000 would spend GPU-days learning a toy dataset by heart.
SAMPLE_BUDGET_CLIPS = 200_000


def settings_text(cfg: Config) -> str:
    """The settings as the text every component receives: one line of JSON (a YAML subset), since
    kfp copies parameter defaults into a comment header of the compiled file, line breaks and all."""
    return json.dumps(cfg.model_dump(), separators=(",", ":"))


def config_text(config: str) -> tuple[str, str]:
    """(settings text, where it came from) of a ``config`` run parameter: a preset name, an
    ``s3://``/``minio://`` URI of a YAML file, or the settings themselves as YAML/JSON text."""
    config = config.strip()
    if not config:
        raise ConfigError("config is empty: give a preset (paper, cpu-demo), an s3:// URI of a settings file, "
                          "or the settings as YAML")
    if is_preset(config):
        return preset_path(config).read_text(), f"preset {config}"
    if store.is_remote(config):
        return store.read_bytes(config).decode(), config
    if "\n" not in config and ":" not in config:  # one word: meant as a preset name
        preset_path(config)  # raises, listing the presets
    return config, "the config parameter"


def parse_overrides(text: str) -> dict[str, Any]:
    """``"train.epoch_size=2000 cluster.pca_dim=256"`` (space- or comma-separated, values as YAML) →
    ``{"train.epoch_size": 2000, "cluster.pca_dim": 256}``."""
    overrides: dict[str, Any] = {}
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"overrides expects KEY=VALUE pairs, e.g. train.epoch_size=2000 (got {item!r})")
        overrides[key] = yaml.safe_load(value)
    return overrides


def resolve_settings(
    config: str, values: Mapping[str, Any], overrides: str = "", iterations: int | None = None,
    sample_data: bool = False,
) -> Config:
    """The settings of a run: ``config`` (see :func:`config_text`) with ``overrides``, then the typed
    run parameters ``values`` (names of :data:`RUN_PARAMETERS`; their unset value or None keeps
    the config's), then the compiled ``iterations``; validated. A bad value raises
    :class:`~xdc_core.errors.ConfigError` naming the setting (``cluster.k``, not ``k``).

    ``sample_data``: the run pretrains on the embedded sample; a training budget above
    :data:`SAMPLE_BUDGET_CLIPS` is refused, saying what to set."""
    text, source = config_text(config)
    changes = parse_overrides(overrides)
    for name, value in values.items():
        if value is not None and value != RUN_PARAMETERS[name].unset:
            changes[RUN_PARAMETERS[name].setting] = value
    if iterations is not None:
        changes["cluster.iterations"] = iterations
    cfg = parse_config(text, changes, source=source)
    clips = cfg.train.epoch_size * cfg.train.total_epochs
    if sample_data and clips > SAMPLE_BUDGET_CLIPS:
        raise ConfigError(
            f"data_uri is empty, so this run would pretrain on the embedded sample data (2000 synthetic videos), "
            f"but the settings ({source}) train each encoder on {cfg.train.epoch_size:,} clips x "
            f"{cfg.train.total_epochs} epochs = {clips:,} clips per iteration, a paper-scale budget for a toy "
            f"dataset. Set data_uri to your manifest (an s3:// URI of a CSV path,label,split), or, to try the "
            f"pipeline on the sample, set config to cpu-demo (or upload pipelines/xdc-smoke.yaml).")
    return cfg


def check_scale_parameters(values: Mapping[str, Any]) -> None:
    """Raise :class:`~xdc_core.errors.ConfigError` naming each of ``values`` (names of
    :data:`SCALE_PARAMETERS`; None: not given) that is not a whole number of at least 1."""
    bad = [f"{name} must be a whole number of at least 1 (got {value!r}): {SCALE_PARAMETERS[name]}"
           for name, value in values.items()
           if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)]
    if bad:
        raise ConfigError("; ".join(bad))
