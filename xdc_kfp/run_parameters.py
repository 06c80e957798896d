"""The settings as a pipeline passes them between tasks, and the run parameters merged into them.

kfp-free: the settings component runs it inside the pipeline, :func:`xdc_kfp.runner.run_arguments`
on the command line before anything is submitted, so both reject the same values with the same
message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from xdc_core.config import RUN_PARAMETERS, Config, parse_config


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
