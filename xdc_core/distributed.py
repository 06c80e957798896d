"""Data parallelism: one process per GPU (or CPU slot), joined by ``torch.distributed``.

A step joins the process group that ``torchrun`` describes in its environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; the Kubeflow Training Operator
sets the same for a multi-node PyTorchJob); without it, the step is a single process and nothing
here changes its behaviour. :func:`launch` starts the processes on one machine with torchrun's
own engine (``torch.distributed.launcher``), for a Kubeflow task that holds several GPUs.

NCCL joins GPUs, gloo CPUs (the tests run two CPU ranks). Only rank 0 writes files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and logs."""
        return self.rank == 0


def world() -> World:
    """The process group joined (or the single process)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def _env_world() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: its own GPU (``cuda:LOCAL_RANK``) on CUDA, the CPU otherwise."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", _env_world().local_rank)
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the process group of the environment for the block (left afterwards); a no-op for a
    single process or when a group is already joined (a caller's block owns it)."""
    env = _env_world()
    if env.size == 1 or dist.is_initialized():
        yield world()
        return
    if device.type == "cuda":
        torch.cuda.set_device(rank_device(device))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64; the values themselves alone)."""
    if world().size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(arrays: tuple[np.ndarray, ...], order_by: int = 0) -> tuple[np.ndarray, ...]:
    """Concatenate each rank's ``arrays`` (same row count within a rank) and sort all rows by
    ``arrays[order_by]`` (e.g. video index): every rank gets the whole result in that order."""
    if world().size == 1:
        return arrays
    parts: list[Any] = [None] * world().size
    dist.all_gather_object(parts, arrays)
    joined = tuple(np.concatenate([p[i] for p in parts]) for i in range(len(arrays)))
    order = np.argsort(joined[order_by], kind="stable")
    return tuple(a[order] for a in joined)


def barrier() -> None:
    """Wait for every rank (a no-op for one process)."""
    if world().size > 1:
        dist.barrier()


def launch(fn: Callable[..., Any], args: tuple[Any, ...], nproc: int) -> Any:
    """Run ``fn(*args)`` in ``nproc`` processes on this machine, joined as one process group
    (torchrun's engine, rendezvous on 127.0.0.1); returns rank 0's result. ``fn`` and ``args``
    must be picklable (the processes are spawned). One process: ``fn`` runs here. As torchrun,
    sets ``OMP_NUM_THREADS=1`` for the processes unless it is set."""
    if nproc <= 1:
        return fn(*args)
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun gives each of several processes one OpenMP thread unless told otherwise; so do we,
    # so that a step launched here computes what the same step under torchrun does, bit for bit
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,  # a failure fails the task; the Kubeflow retry resumes from the checkpoint
        monitor_interval=0.5,
    )
    return elastic_launch(config, fn)(*args)[0]
