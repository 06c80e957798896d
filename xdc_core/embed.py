"""The embed step: one feature vector per video from an encoder, for clustering.

Each video's deterministic clip(s) (``embed.clips`` uniformly spaced; 1 = the middle clip) go
through the trunk in eval mode, without gradients (bfloat16 autocast on GPU); the clip features
are averaged. The result is a float32 array whose row i belongs to the i-th video of the dataset.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from . import distributed
from .device import autocast, fast_layout
from .models import model_input


@torch.no_grad()
def clip_features(
    trunk: nn.Module,
    dataset: Dataset,
    modality: str,
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every clip of an eval-mode ClipDataset: ``[V, clips, D]`` float32, video indices
    ``[V]`` and labels ``[V]`` (-1 when unlabelled). The trunk's train/eval mode is restored."""
    was_training = trunk.training
    fast_layout(trunk.eval().to(device), device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    feats, index, labels = [], [], []
    for batch in tqdm(loader, desc=f"features {modality}", unit="batch", disable=not progress or None, leave=False):
        x = batch[modality]  # [B, clips, ...]
        b, c = x.shape[:2]
        with autocast(device):
            f = trunk(fast_layout(model_input(modality, x.flatten(0, 1).to(device, non_blocking=True)), device))
        feats.append(f.float().view(b, c, -1).cpu())
        index.append(batch["index"])
        labels.append(batch["label"])
    trunk.train(was_training)
    return (
        torch.cat(feats).numpy().astype(np.float32),
        torch.cat(index).numpy().astype(np.int64),
        torch.cat(labels).numpy().astype(np.int64),
    )


def embed(
    trunk: nn.Module,
    dataset: Dataset,
    modality: str,
    batch_size: int,
    workers: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-video features ``[N, D]`` (the mean over its clips), video indices ``[N]`` and labels ``[N]``.

    With several ranks (:mod:`xdc_core.distributed`), rank r embeds videos r, r + ranks, ... and
    every rank returns all of them, gathered in video order."""
    world = distributed.world()
    part = dataset if world.size == 1 else Subset(dataset, range(world.rank, len(dataset), world.size))  # type: ignore[arg-type]
    feats, index, labels = clip_features(trunk, part, modality, batch_size, workers, device,
                                         progress and world.main)
    index, feats, labels = distributed.gather_rows((index, feats.mean(axis=1), labels))
    return feats, index, labels
