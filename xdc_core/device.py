"""Where tensors live, and mixed precision when that is a GPU."""

from __future__ import annotations

import contextlib
from typing import TypeVar

import torch
from torch import nn

from .errors import ConfigError

T = TypeVar("T", nn.Module, torch.Tensor)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; asking for ``cuda`` without one is an error.

    On the CPU, denormal floats are flushed to zero: once a head fits its targets, gradients of
    ~1e-40 appear, and x86 handles them in microcode, 5-10x slower (a supervised CPU run's later
    epochs took 369 s instead of ~70 s); values that small change nothing else. On CUDA, cuDNN
    autotuning is switched on."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda (the setting device, or --device)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but torch sees no CUDA GPU; use device: auto or cpu")
    if name == "cpu":
        torch.set_flush_denormal(True)
    else:
        # Every clip has the same shape, so cuDNN's autotuner picks the fastest convolution
        # algorithms once and reuses them (torchvision's video references do the same).
        torch.backends.cudnn.benchmark = True
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast on CUDA (convolutions on tensor cores); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fast_layout(x: T, device: torch.device) -> T:
    """Video trunks and 5-D inputs in channels_last_3d on CUDA: cuDNN's bfloat16 3-D convolutions
    run 1.7x faster that way (full-size R(2+1)D-18 training step on an H200: 265 vs 158 clips/s,
    ``bench/gpu_step_probe.py``). Anything else, and anything on the CPU, is returned unchanged."""
    if device.type != "cuda":
        return x
    if isinstance(x, torch.Tensor):
        return x.contiguous(memory_format=torch.channels_last_3d) if x.dim() == 5 else x
    if any(p.dim() == 5 for p in x.parameters()):
        return x.to(memory_format=torch.channels_last_3d)
    return x
