"""Released video checkpoints → our encoder format (``xdc checkpoint import``).

The released XDC video models (github.com/HumamAlwassel/XDC, ``xdc.py``) are ``.pth`` files
holding a plain state dict of a VMZ R(2+1)D-18 with its classifier: ``xdc_video_encoder`` passes
the downloaded dict straight to ``model.load_state_dict(state_dict, strict=False)``, the
``strict=False`` leaving the fc to the user. No other wrapper appears in the official code, so
none is unwrapped here: a file holding anything but name → tensor is reported as such.

Import is that load made strict for the trunk: every trunk tensor present, none unknown, every
shape right, the classifier (``fc.*``) dropped. The result is the trunk's state dict as
:func:`xdc_core.steps.save_encoder` writes it, which :func:`xdc_core.steps.load_encoder` reads
under ``model.video_arch`` (and ``model.video_width: 64``, the released width).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .config import VIDEO_ARCHS
from .errors import InputError
from .models import build_trunk, count_parameters
from .steps import save_encoder

# The released models are full size; a slim width has no official checkpoint to import.
RELEASED_WIDTH = 64
# The classifier of the released models (Kinetics or pretraining heads): not part of an encoder.
CLASSIFIER_PREFIX = "fc."
# BatchNorm's counter: torch fills it in when a plain state dict lacks it, so a file may omit it.
OPTIONAL_SUFFIX = ".num_batches_tracked"


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_checkpoint` wrote."""

    arch: str
    tensors: int  # tensors of the written state dict
    parameters: int  # parameters of the trunk
    dropped: tuple[str, ...]  # keys of the file left out: the classifier


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The plain state dict (parameter name → tensor) stored at ``path``.

    Raises :class:`InputError` naming the file when it is missing, is not a PyTorch file
    (truncated, another format) or holds something else than name → tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        # weights_only: a downloaded file must not run code when it is unpickled
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        hint = " (the Caffe2 .pkl releases are not supported: use the PyTorch .pth)" if path.suffix == ".pkl" else ""
        raise InputError(f"{path} is not a PyTorch checkpoint{hint}: {_load_failure(err)}") from None
    if not isinstance(state, Mapping):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state dict (parameter name → tensor)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(
                f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor: expected a plain state "
                "dict, as the released XDC .pth files are"
            )
    return dict(state)


def _load_failure(err: Exception) -> str:
    """The reason in a ``torch.load`` error: its first sentence, or for the weights-only unpickler
    the reason it gives after its advice to unpickle without ``weights_only``, which a downloaded
    file must not get."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """The first difference between ``state`` and the ``expected`` keys and shapes, in words, or
    None when ``state`` loads strictly (``num_batches_tracked`` counters may be absent)."""
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        return f"{first} ({len(missing)} missing, {len(unexpected)} unexpected)"
    for key, value in state.items():
        if value.shape != expected[key].shape:
            return f"{key!r} has shape {list(value.shape)} where {list(expected[key].shape)} is expected"
    return None


def _matching_archs(state: Mapping[str, torch.Tensor], but: str) -> list[str]:
    """The other video archs ``state`` would load into: the hint for a wrong ``--arch``."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        shapes = {a: build_trunk("video", RELEASED_WIDTH, a).state_dict() for a in VIDEO_ARCHS if a != but}
    return [a for a, expected in shapes.items() if mismatch(state, expected) is None]


def load_released(path: Path, arch: str) -> tuple[nn.Module, tuple[str, ...]]:
    """The video trunk of ``arch`` (width 64) with the weights of the released checkpoint at
    ``path``, and the classifier keys left out. Raises :class:`InputError` naming the file and the
    first missing or unexpected key or wrong shape."""
    if arch not in VIDEO_ARCHS:
        raise InputError(f"unknown video arch {arch!r}; expected one of {', '.join(VIDEO_ARCHS)}")
    state = read_state_dict(path)
    dropped = tuple(k for k in state if k.startswith(CLASSIFIER_PREFIX))
    trunk_state = {k: v for k, v in state.items() if k not in dropped}
    trunk = build_trunk("video", RELEASED_WIDTH, arch)
    expected = trunk.state_dict()
    problem = mismatch(trunk_state, expected)
    if problem is not None:
        others = _matching_archs(trunk_state, but=arch)
        hint = f"; it matches --arch {others[0]}" if others else ""
        raise InputError(f"{path} is not a {arch} video encoder of width {RELEASED_WIDTH}: {problem}{hint}")
    # Counters the file lacks keep the trunk's own value, so the load below is strict.
    trunk_state |= {k: expected[k] for k in expected if k not in trunk_state}
    trunk.load_state_dict(trunk_state, strict=True)
    return trunk, dropped


def import_checkpoint(src: Path, arch: str, out: Path) -> ImportSummary:
    """Import the released checkpoint ``src`` as a ``arch`` video encoder written to ``out``
    (atomically, in the format of :func:`xdc_core.steps.save_encoder`)."""
    trunk, dropped = load_released(src, arch)
    save_encoder(trunk, out)
    return ImportSummary(arch=arch, tensors=len(trunk.state_dict()), parameters=count_parameters(trunk),
                         dropped=dropped)
