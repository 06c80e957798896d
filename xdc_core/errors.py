"""The errors a user can fix, one hierarchy for the whole library.

Every caller maps :class:`XdcError` the same way: the ``xdc`` command prints the message and exits
with status 2; a Kubeflow component lets it surface with the step and the input named
(:func:`xdc_core.steps.named_inputs`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class XdcError(Exception):
    """Unusable input, settings or storage; the message says which and what to do."""


class ConfigError(XdcError, ValueError):
    """A setting is missing, unknown or out of range. The message names each bad field."""


class InputError(XdcError, ValueError):
    """An input file is missing or is not what the step expects."""


class RunError(XdcError, ValueError):
    """Settings and data that cannot make a run; raised before any work starts."""
