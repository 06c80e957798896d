"""The train step: one encoder learns to predict its pseudo-labels (one clustering iteration).

As in DeepCluster and the paper's supplementary (§A, Tables 9-10):

* fresh classification head(s) every iteration (one per target clustering; MDC has two);
* an epoch is ``epoch_size`` clips drawn evenly over the pseudo-classes (DeepCluster's sampler),
  so a few huge clusters cannot dominate;
* SGD with linear warmup then step decay (:func:`lr_at`);
* a held-out slice of the unlabelled videos measures the pseudo-label loss each epoch; training
  stops when it has risen ``patience`` (3) epochs in a row, and the best epoch's weights are kept;
* a checkpoint after every epoch; a rerun resumes from it and, with the same seed, reproduces the
  uninterrupted run (each epoch's randomness is seeded from ``(seed, epoch)``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from .config import Schedule, TrainConfig
from .device import autocast, fast_layout
from .metrics import TrainMonitor
from .models import model_input
from .store import atomic_write


class UniformLabelSampler(Sampler[int]):
    """``size`` indices of ``labels``, drawn evenly over the classes present (with replacement
    only for classes smaller than their share), shuffled. DeepCluster's ``UnifLabelSampler``."""

    def __init__(self, labels: np.ndarray, size: int, seed: int) -> None:
        self.labels = np.asarray(labels)
        self.size = size
        self.seed = seed

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        classes = np.unique(self.labels)
        per_class = self.size // len(classes) + 1
        drawn = []
        for c in classes:
            members = np.flatnonzero(self.labels == c)
            drawn.append(rng.choice(members, per_class, replace=len(members) < per_class))
        out = np.concatenate(drawn)
        rng.shuffle(out)
        return out[: self.size]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.size


def lr_at(s: Schedule, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step`` of ``epoch`` (0-based): linear warmup, then step or cosine decay."""
    if epoch < s.warmup_epochs:
        return s.lr * (epoch * steps_per_epoch + step + 1) / (s.warmup_epochs * steps_per_epoch)
    if s.decay == "cosine":
        done = (epoch - s.warmup_epochs) * steps_per_epoch + step
        total = max(1, (s.total_epochs - s.warmup_epochs) * steps_per_epoch - 1)
        return s.lr * (s.gamma + (1 - s.gamma) * 0.5 * (1 + math.cos(math.pi * min(1.0, done / total))))
    return s.lr * s.gamma ** ((epoch - s.warmup_epochs) // s.step_epochs)


# The held-out pseudo-label loss is a mean over the held-out videos; a per-video cross-entropy
# spreads over about one nat, so below this many videos its standard error (> 0.1 nat) is as large
# as the epoch-to-epoch changes early stopping acts on, and "the best epoch" would be noise.
EARLY_STOP_MIN_HELD_OUT = 100


def early_stopping(cfg: TrainConfig, held_out: int) -> tuple[bool, str]:
    """Whether training stops early on the held-out loss, and why (for the log)."""
    if cfg.early_stop == "auto":
        on = held_out >= EARLY_STOP_MIN_HELD_OUT
        why = (
            f"early stop on: {held_out} held-out videos"
            if on
            else f"early stop off: {held_out} held-out videos < {EARLY_STOP_MIN_HELD_OUT}, too few for a "
            "trustworthy held-out loss"
        )
        return on, why
    on = bool(cfg.early_stop) and held_out > 0
    return on, f"early stop {'on' if on else 'off'} (train.early_stop={cfg.early_stop})"


def chance_loss(classes: Sequence[int]) -> float:
    """The pseudo-label loss of a head that knows nothing (uniform over k classes: ln k), averaged over heads."""
    return float(np.mean([math.log(k) for k in classes]))


class Heads(nn.Module):
    """One linear classifier per target clustering, on the trunk's features."""

    def __init__(self, dim: int, classes: Sequence[int]) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(dim, k) for k in classes)
        for fc in self.fcs:  # as torchvision initialises its classifiers
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        return [fc(features) for fc in self.fcs]


class WithTargets(Dataset[dict[str, Any]]):
    """A dataset whose item ``i`` also carries ``targets[:, i]`` (one label per head)."""

    def __init__(self, dataset: Dataset[dict[str, Any]], targets: np.ndarray) -> None:
        self.dataset, self.targets = dataset, torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return self.targets.shape[1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[i] | {"targets": self.targets[:, i]}


@dataclass
class TrainResult:
    """What happened in one training run (for logs and metrics)."""

    epochs: int = 0
    stop_reason: str = ""
    best_epoch: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    resumed_from: int = 0
    early_stop: str = ""  # whether early stopping was on, and why


def rising_streak(losses: Sequence[float]) -> int:
    """How many epochs in a row, up to the last, the loss has risen (early stop at ``patience``)."""
    streak = 0
    for prev, cur in zip(losses[-2::-1], losses[::-1], strict=False):
        if cur <= prev:
            break
        streak += 1
    return streak


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, held-out positions): a seeded random ``fraction`` of ``n`` held out."""
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_val = min(n - 1, math.ceil(fraction * n)) if fraction > 0 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _fingerprint(targets: np.ndarray, cfg: TrainConfig, modality: str, seed: int) -> str:
    h = hashlib.sha1(np.ascontiguousarray(targets).tobytes())
    h.update(json.dumps([cfg.model_dump(), modality, seed], sort_keys=True).encode())
    return h.hexdigest()


def _batches(
    dataset: Dataset[dict[str, Any]], sampler: Sequence[int], batch_size: int, workers: int, seed: int
) -> DataLoader[dict[str, Any]]:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),  # seeds the workers' augmentation RNG
        pin_memory=torch.cuda.is_available(),
    )


def _logits(trunk: nn.Module, heads: Heads, modality: str, x: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    with autocast(device):
        inputs = fast_layout(model_input(modality, x.to(device, non_blocking=True)), device)
        return [h.float() for h in heads(trunk(inputs))]


@torch.no_grad()
def _val_loss(
    trunk: nn.Module, heads: Heads, modality: str, loader: DataLoader[dict[str, Any]], device: torch.device
) -> float:
    trunk.eval()
    total, n = 0.0, 0
    for batch in loader:
        x = batch[modality].flatten(0, 1)  # eval mode: [B, clips, ...]; one clip per video here
        logits = _logits(trunk, heads, modality, x, device)
        t = batch["targets"].to(device)
        total += sum(nn.functional.cross_entropy(lg, t[:, h], reduction="sum").item() for h, lg in enumerate(logits))
        n += len(x) * len(logits)
    trunk.train()
    return total / max(n, 1)


def train_encoder(
    trunk: nn.Module,
    modality: str,
    train_set: Dataset[dict[str, Any]],
    val_set: Dataset[dict[str, Any]],
    targets: Sequence[np.ndarray],
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    ckpt_dir: Path | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, TrainResult], None] | None = None,
    classes: Sequence[int] | None = None,
    monitor: TrainMonitor | None = None,
) -> tuple[TrainResult, Heads]:
    """Train ``trunk`` in place to predict ``targets`` (one array per head, aligned with the datasets).

    ``classes`` is the size of each head (default: the largest label + 1). Returns what happened
    and the trained heads.
    ``train_set`` yields training-mode items, ``val_set`` eval-mode items of the same videos; a
    ``cfg.val_fraction`` slice of them is held out for the pseudo-label validation loss.
    ``monitor`` gets each step's loss, lr and data wait, and each epoch's held-out loss (metrics).
    """
    y = np.stack([np.asarray(t, dtype=np.int64) for t in targets])  # [heads, N]
    train_pos, val_pos = split_holdout(y.shape[1], cfg.val_fraction, seed)
    classes = list(classes) if classes is not None else [int(t.max()) + 1 for t in y]
    stop_early, stop_why = early_stopping(cfg, len(val_pos))
    with torch.random.fork_rng(devices=[]):  # the heads' init depends on the seed alone, not on the process
        torch.manual_seed(seed)
        heads = Heads(int(trunk.out_dim), classes)
    fast_layout(trunk.to(device), device).train()
    heads.to(device)
    params = [p for m in (trunk, heads) for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    result = TrainResult(early_stop=stop_why)
    # With early stopping, an epoch is kept only if its held-out loss beats chance (ln k): targets
    # that the trunk can only memorise (no better than chance on held-out videos) teach it nothing,
    # and it keeps the weights it started from (epoch 0), as the paper's early stop would.
    best: dict[str, Any] = {"val": math.inf, "epoch": 0, "trunk": None}
    if stop_early:
        best = {"val": chance_loss(classes), "epoch": 0, "trunk": copy.deepcopy(trunk.state_dict())}
    start_epoch = 0
    fingerprint = _fingerprint(y, cfg, modality, seed)
    ckpt = ckpt_dir / "last.pt" if ckpt_dir else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state["fingerprint"] == fingerprint:
            trunk.load_state_dict(state["trunk"])
            heads.load_state_dict(state["heads"])
            opt.load_state_dict(state["optimizer"])
            result = TrainResult(**state["result"])
            best, start_epoch = state["best"], state["epoch"] + 1
            result.resumed_from = start_epoch
            if result.stop_reason:  # finished before; nothing left to do
                _restore_best(trunk, best)
                return result, heads

    labelled = WithTargets(train_set, y)
    val_loader = DataLoader(
        torch.utils.data.Subset(WithTargets(val_set, y), val_pos.tolist()),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
    )
    steps = math.ceil(cfg.epoch_size / cfg.batch_size)
    for epoch in range(start_epoch, cfg.total_epochs):
        epoch_seed = int(np.random.default_rng([seed, epoch]).integers(2**62))
        torch.manual_seed(epoch_seed)  # augmentation RNG when loading in this process
        sampler = train_pos[UniformLabelSampler(y[0, train_pos], cfg.epoch_size, epoch_seed).indices()]
        loader = _batches(labelled, sampler.tolist(), cfg.batch_size, cfg.workers, epoch_seed)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"train {modality} epoch {epoch + 1}", leave=False, disable=not progress or None)
        ready = time.perf_counter()
        for step, batch in enumerate(bar):
            fetched = time.perf_counter()  # since `ready`: waiting for the loader
            lr = lr_at(cfg, epoch, step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            logits = _logits(trunk, heads, modality, batch[modality], device)
            t = batch["targets"].to(device)
            loss = sum(nn.functional.cross_entropy(lg, t[:, h]) for h, lg in enumerate(logits)) / len(logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            step_loss = loss.item()  # type: ignore[union-attr]
            total += step_loss * len(t)
            count += len(t)
            if monitor is not None:
                now = time.perf_counter()
                monitor.step(step_loss, lr, len(t), fetched - ready, now - fetched)
            ready = time.perf_counter()
        result.train_loss.append(round(total / max(count, 1), 5))
        result.epochs = epoch + 1
        if len(val_pos):
            val = _val_loss(trunk, heads, modality, val_loader, device)
            result.val_loss.append(round(val, 5))
            rises = rising_streak(result.val_loss)
            if stop_early and val < best["val"]:
                best = {"val": val, "epoch": epoch + 1, "trunk": copy.deepcopy(trunk.state_dict())}
            if stop_early and rises >= cfg.patience:
                result.stop_reason = f"early stop: held-out loss rose {rises} epochs in a row"
        if not result.stop_reason and epoch + 1 == cfg.total_epochs:
            result.stop_reason = f"completed {cfg.total_epochs} epochs"
        if result.stop_reason and stop_early:
            result.stop_reason += (
                f"; kept epoch {best['epoch']}" if best["epoch"] else
                f"; kept the starting weights: no epoch's held-out loss beat chance (ln k = {chance_loss(classes):.2f})"
            )
        if result.stop_reason and best["trunk"] is not None and stop_early:
            _restore_best(trunk, best)
        result.best_epoch = best["epoch"] if best["trunk"] is not None else result.epochs
        if ckpt is not None:
            with atomic_write(ckpt) as f:
                torch.save({"fingerprint": fingerprint, "epoch": epoch, "trunk": trunk.state_dict(),
                            "heads": heads.state_dict(), "optimizer": opt.state_dict(), "result": asdict(result),
                            "best": best}, f)
        if monitor is not None:
            gpu_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            monitor.epoch(result.epochs, result.val_loss[-1] if result.val_loss else None, gpu_peak)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, result)
        if result.stop_reason:
            break
    return result, heads


def _restore_best(trunk: nn.Module, best: dict[str, Any]) -> None:
    if best.get("trunk") is not None:
        trunk.load_state_dict(best["trunk"])
