"""The settings as a pipeline passes them between tasks, the run parameters merged into them, and
the run parameters that only scale a run out.

kfp-free: the settings component runs it inside the pipeline, :func:`xdc_kfp.runner.run_arguments`
on the command line before anything is submitted, so both reject the same values with the same
message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from xdc_core.config import RUN_PARAMETERS, Config, parse_config
from xdc_core.errors import ConfigError

# The run parameters that scale a run out over more machines (name → what it counts); the
# decode shards leave the results as they are, more GPUs make the global batch larger.
# Not settings: the pipeline's structure reads them (how many decode tasks, how many GPUs a task
# asks for), so they are pipeline parameters of their own, not merged into the settings.
SCALE_PARAMETERS: dict[str, str] = {
    "decode_shards": "the decode tasks the manifest is split over",
    "gpus_per_node": "the GPUs of each train-encoder task (one training process each)",
    "nodes": "the nodes each train-encoder task trains on",
}


def settings_text(cfg: Config) -> str:
    """The settings as the text every component receives: one line of JSON (a YAML subset), since
    kfp copies parameter defaults into a comment header of the compiled file, line breaks and all."""
    return json.dumps(cfg.model_dump(), separators=(",", ":"))


def merge_run_parameters(settings: str, values: Mapping[str, Any], source: str) -> Config:
    """``settings`` (YAML or JSON text) with the run parameters ``values`` applied and validated.

    ``values`` maps names of :data:`xdc_core.config.RUN_PARAMETERS` to values, None meaning "the
    settings' own"; a bad value raises :class:`~xdc_core.errors.ConfigError` naming the setting
    (``cluster.k``, not ``k``), with ``source`` saying where the settings came from.
    """
    overrides = {RUN_PARAMETERS[name]: value for name, value in values.items() if value is not None}
    return parse_config(settings, overrides, source=source)


def check_scale_parameters(values: Mapping[str, Any]) -> None:
    """Raise :class:`~xdc_core.errors.ConfigError` naming each of ``values`` (names of
    :data:`SCALE_PARAMETERS`; None: not given) that is not a whole number of at least 1."""
    bad = [f"{name} must be a whole number of at least 1 (got {value!r}): {SCALE_PARAMETERS[name]}"
           for name, value in values.items()
           if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)]
    if bad:
        raise ConfigError("; ".join(bad))
