"""The train step: one encoder learns to predict its pseudo-labels (one clustering iteration).

As in DeepCluster and the paper's supplementary (§A, Tables 9-10):

* fresh classification head(s) every iteration (one per target clustering; MDC has two);
* an epoch is ``epoch_size`` clips drawn evenly over the pseudo-classes (DeepCluster's sampler),
  so a few huge clusters cannot dominate;
* SGD with linear warmup then step decay (:func:`lr_at`);
* a held-out slice of the unlabelled videos measures the pseudo-label loss each epoch; training
  stops when it has risen ``patience`` (3) epochs in a row, and the best epoch's weights are kept;
* a checkpoint after every epoch and every ``checkpoint_minutes`` (to a folder or the object
  store); a rerun resumes from it, mid-epoch too, and with the same seed reproduces the
  uninterrupted run (each epoch's samples and each item's augmentation are seeded from
  ``(seed, epoch)``, :func:`epoch_samples`);
* data parallel over the ranks of :mod:`xdc_core.distributed` (DistributedDataParallel).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import posixpath
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import distributed, store
from .config import Schedule, TrainConfig
from .device import autocast, fast_layout
from .errors import ConfigError, RunError
from .metrics import TrainMonitor
from .models import model_input


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
    """A dataset whose item ``i`` also carries ``targets[:, i]`` (one label per head).

    An item may also be asked for as ``(i, seed)``: its random augmentation (drawn from torch's
    RNG, see :class:`~xdc_core.dataset.ClipDataset`) then depends on ``seed`` alone, not on which
    process or DataLoader worker reads it, nor on what that process read before.
    """

    def __init__(self, dataset: Dataset[dict[str, Any]], targets: np.ndarray) -> None:
        self.dataset, self.targets = dataset, torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return self.targets.shape[1]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(key, int):
            return self.dataset[key] | {"targets": self.targets[:, key]}
        i, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[i] | {"targets": self.targets[:, i]}


@dataclass
class TrainResult:
    """What happened in one training run (for logs and metrics)."""

    epochs: int = 0
    stop_reason: str = ""
    best_epoch: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_loss_se: list[float] = field(default_factory=list)  # standard error of each val_loss
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


def split_holdout(n: int, fraction: float, seed: int, at_least: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, held-out positions): a seeded random ``fraction`` of ``n`` held out, at least
    ``at_least`` of them (never all; none when ``fraction`` is 0)."""
    perm = np.random.default_rng([seed, 7]).permutation(n)
    n_val = held_out_count(n, fraction, at_least)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def held_out_count(n: int, fraction: float, at_least: int = 0) -> int:
    """How many of ``n`` videos :func:`split_holdout` holds out."""
    return min(n - 1, max(math.ceil(fraction * n), at_least)) if fraction > 0 else 0


def pretraining_holdout(n: int, cfg: TrainConfig, seed: int, run_seed: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, held-out positions) of ``n`` pretraining videos for a training run with ``seed``.

    Where early stopping is on, the same videos are held out from both encoders in every iteration
    of a run (drawn with ``run_seed``): when an encoder memorises the other modality's clusters of
    its training videos, only videos neither encoder has trained on show that the targets do not
    generalise (a set drawn again each iteration was mostly trained on the iteration before).
    Where it is off, the held-out loss is only reported, and each training run draws its own set
    with ``seed`` so that every video is trained on in some iteration. ``cfg.val_fraction`` of the
    videos, raised to ``EARLY_STOP_MIN_HELD_OUT`` where early stopping may be on and that leaves
    three quarters to train on, so that early stopping also protects small datasets.
    """
    enough = cfg.early_stop is not False and n // 4 >= EARLY_STOP_MIN_HELD_OUT
    at_least = EARLY_STOP_MIN_HELD_OUT if enough else 0
    kept = run_seed is not None and early_stopping(cfg, held_out_count(n, cfg.val_fraction, at_least))[0]
    return split_holdout(n, cfg.val_fraction, run_seed if kept else seed, at_least=at_least)


def _fingerprint(targets: np.ndarray, cfg: TrainConfig, modality: str, seed: int, world_size: int) -> str:
    h = hashlib.sha1(np.ascontiguousarray(targets).tobytes())
    h.update(json.dumps([cfg.model_dump(), modality, seed, world_size], sort_keys=True).encode())
    return h.hexdigest()


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """The peak lr of a run on ``world_size`` processes: ``train.batch_size`` is per process (the
    paper's bs is per GPU), so the global batch is ``batch_size × world_size``; with
    ``lr_scaling: linear`` the lr grows with it (Goyal et al. 2017: the same lr per example, the
    warmup keeps the first steps stable), with ``none`` it stays ``train.lr``."""
    return cfg.lr * world_size if cfg.lr_scaling == "linear" else cfg.lr


def epoch_samples(
    labels: np.ndarray, train_pos: np.ndarray, cfg: TrainConfig, seed: int, epoch: int, world_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """What one epoch trains on, for every rank: ``(videos, seeds)``, both ``[steps, world_size, batch]``.

    ``videos[s, r]`` is rank r's batch at step s (dataset positions, drawn evenly over the
    pseudo-classes of ``labels``), ``seeds[s, r]`` the augmentation seed of each of its items. A
    pure function of (seed, epoch, world size): the ranks' samples partition the epoch without
    talking to each other, and a run resumed at step s reads exactly the items it would have.
    The epoch is ``epoch_size`` rounded up to whole global batches.
    """
    epoch_seed = int(np.random.default_rng([seed, epoch]).integers(2**62))
    steps = math.ceil(cfg.epoch_size / (cfg.batch_size * world_size))
    n = steps * world_size * cfg.batch_size
    videos = train_pos[UniformLabelSampler(labels[train_pos], n, epoch_seed).indices()]
    seeds = np.random.default_rng([epoch_seed, 1]).integers(2**62, size=n)
    shape = (steps, world_size, cfg.batch_size)
    return videos.reshape(shape), seeds.reshape(shape)


class EpochKeys(Sampler[tuple[int, int]]):
    """The items of the current epoch, in order: ``(position, augmentation seed)`` pairs. One
    sampler for the whole run, its ``keys`` replaced every epoch, so that one DataLoader and its
    worker processes live through all epochs (starting workers costs seconds per epoch)."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class Classifier(nn.Module):
    """The trunk and its heads as one module (what DistributedDataParallel wraps)."""

    def __init__(self, trunk: nn.Module, heads: Heads) -> None:
        super().__init__()
        self.trunk, self.heads = trunk, heads

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.heads(self.trunk(x))


# SpecAugment's masks, each at most this share of its axis (the LibriSpeech policies mask up to
# ~20-30% of the bands and frames per mask).
MASK_SHARE = 0.2


def mask_spectrograms(x: torch.Tensor, masks: int) -> torch.Tensor:
    """SpecAugment of normalised log-mel spectrograms ``[B, 1, Q, P]``: ``masks`` frequency and
    ``masks`` time masks per clip, each set to 0 (the spectrogram's mean after normalisation).
    Without it, an audio encoder that sees the few windows of each video memorises its targets
    within an iteration (docs/benchmarks.md, levers)."""
    q, p = x.shape[-2:]
    freq = torchaudio.transforms.FrequencyMasking(max(1, int(MASK_SHARE * q)), iid_masks=True)
    time_ = torchaudio.transforms.TimeMasking(max(1, int(MASK_SHARE * p)), iid_masks=True)
    for _ in range(masks):
        x = time_(freq(x))
    return x


def _logits(model: nn.Module, modality: str, x: torch.Tensor, device: torch.device,
            audio_masks: int = 0) -> list[torch.Tensor]:
    """The heads' logits of a batch; ``audio_masks`` > 0 (training only) masks audio spectrograms."""
    x = model_input(modality, x.to(device, non_blocking=True))
    if audio_masks and modality == "audio":
        x = mask_spectrograms(x, audio_masks)
    with autocast(device):
        return [h.float() for h in model(fast_layout(x, device))]


@torch.no_grad()
def _val_loss(
    model: Classifier, modality: str, loader: DataLoader[dict[str, Any]], device: torch.device
) -> tuple[float, float]:
    """The held-out pseudo-label loss (mean over held-out videos and heads) and the standard error of
    that mean; each rank scores its share of the held-out videos."""
    model.eval()
    total, squares, n = 0.0, 0.0, 0
    for batch in loader:
        x = batch[modality].flatten(0, 1)  # eval mode: [B, clips, ...]; one clip per video here
        logits = _logits(model, modality, x, device)
        t = batch["targets"].to(device)
        for h, lg in enumerate(logits):
            loss = nn.functional.cross_entropy(lg, t[:, h], reduction="none").double()
            total, squares = total + loss.sum().item(), squares + loss.square().sum().item()
        n += len(x) * len(logits)
    model.train()
    total, squares, n = distributed.all_sum([total, squares, n], device)
    mean = total / max(n, 1)
    variance = max(squares / max(n, 1) - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, math.sqrt(variance / max(n, 1))


class EarlyStopping:
    """Early stopping on the held-out pseudo-label loss: keeps the best epoch's trunk weights and says
    when the loss has risen ``patience`` epochs in a row.

    An epoch is kept only if its held-out loss beats chance (ln k) by ``held_out_margin`` standard
    errors: targets that the trunk can only memorise (no better than chance on held-out videos) teach
    it nothing, and it keeps the weights it started from (epoch 0), as the paper's early stop would.
    Switched off, it keeps the last epoch.
    """

    def __init__(self, cfg: TrainConfig, held_out: int, classes: Sequence[int], trunk: nn.Module) -> None:
        self.on, self.why = early_stopping(cfg, held_out)
        self.patience, self.chance, self.margin = cfg.patience, chance_loss(classes), cfg.held_out_margin
        # The checkpointed state: the loss to beat, the epoch that beat it, its trunk weights.
        self.best: dict[str, Any] = {"val": math.inf, "epoch": 0, "trunk": None}
        if self.on:
            self.best = {"val": self.chance, "epoch": 0, "trunk": copy.deepcopy(trunk.state_dict())}

    def update(self, trunk: nn.Module, epoch: int, val: float, stderr: float, val_losses: Sequence[float]) -> str:
        """After ``epoch`` (1-based) with held-out loss ``val`` (standard error ``stderr``): why to stop
        now, "" to go on."""
        if not self.on:
            return ""
        if val < self.best["val"] and val + self.margin * stderr < self.chance:
            self.best = {"val": val, "epoch": epoch, "trunk": copy.deepcopy(trunk.state_dict())}
        rises = rising_streak(val_losses)
        return f"early stop: held-out loss rose {rises} epochs in a row" if rises >= self.patience else ""

    def finish(self, trunk: nn.Module, reason: str) -> str:
        """Training ends for ``reason``: ``trunk`` gets the kept weights; the reason says which they are."""
        if not self.on:
            return reason
        self.restore(trunk)
        if self.best["epoch"]:
            return f"{reason}; kept epoch {self.best['epoch']}"
        by = f" by {self.margin:g} standard errors" if self.margin else ""
        return f"{reason}; kept the starting weights: no epoch's held-out loss beat chance (ln k = {self.chance:.2f}){by}"

    def restore(self, trunk: nn.Module) -> None:
        if self.best["trunk"] is not None:
            trunk.load_state_dict(self.best["trunk"])

    def best_epoch(self, epochs: int) -> int:
        return self.best["epoch"] if self.best["trunk"] is not None else epochs


@dataclass
class TrainState:
    """What a checkpoint holds and a resumed run continues from: the model, the optimizer, the early
    stopping, the result so far, and where the run is: the next ``step`` of ``epoch`` (0-based),
    with the summed loss and item count of that epoch so far (``totals``)."""

    model: Classifier
    opt: torch.optim.Optimizer
    stopper: EarlyStopping
    result: TrainResult
    epoch: int = 0
    step: int = 0
    totals: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def end_epoch(self, val: tuple[float, float] | None, total_epochs: int) -> None:
        """Epoch ``self.epoch`` ended with held-out loss ``val`` (mean, standard error; None: nothing
        held out): record it, and whether and why training stops (``result.stop_reason``, then with
        the kept weights)."""
        r, trunk = self.result, self.model.trunk
        r.train_loss.append(round(self.totals[0] / max(self.totals[1], 1), 5))
        self.epoch, self.step, self.totals = self.epoch + 1, 0, [0.0, 0.0]
        r.epochs = self.epoch
        if val is not None:
            r.val_loss.append(round(val[0], 5))
            r.val_loss_se.append(round(val[1], 5))
            r.stop_reason = self.stopper.update(trunk, self.epoch, val[0], val[1], r.val_loss)
        if not r.stop_reason and self.epoch == total_epochs:
            r.stop_reason = f"completed {total_epochs} epochs"
        if r.stop_reason:
            r.stop_reason = self.stopper.finish(trunk, r.stop_reason)
        r.best_epoch = self.stopper.best_epoch(r.epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "totals": self.totals, "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(), "result": asdict(self.result), "best": self.stopper.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.result = TrainResult(**state["result"])
        self.stopper.best = state["best"]
        self.epoch, self.step, self.totals = state["epoch"], state["step"], state["totals"]
        self.result.resumed_from = self.epoch


class Checkpoints:
    """The resumable state of one training run at ``where``/last.pt: a folder or an object-store
    prefix (``s3://…``; a preempted pod's disk is gone, the bucket is not). Rank 0 writes."""

    def __init__(self, where: str | Path | None, fingerprint: str, log: Callable[[str], None]) -> None:
        self.uri = None if where is None else f"{str(where).rstrip('/')}/last.pt"
        self.fingerprint, self.log = fingerprint, log
        self.saved_at = time.monotonic()
        self.in_place: str | None = None  # the SHA-256 of the checkpoint file now at uri, once known

    def resume(self, state: TrainState, device: torch.device) -> bool:
        """Load the saved state into ``state`` if there is one for this very run."""
        saved = self.load(device)
        if saved is None:
            return False
        state.load_state_dict(saved)
        return True

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state if there is one for this very run (same targets, settings, seed, ranks).

        Checked before use: its SHA-256 must be one the digest file beside it lists (a damaged or
        replaced file is refused), and it is unpickled with ``weights_only`` (tensors and plain
        containers only: a pickle that would run code is refused, not run)."""
        if self.uri is None or not store.exists(self.uri):
            return None
        fix = "delete it (and its .sha256) to start this training over, or give another checkpoint folder"
        data = store.read_bytes(self.uri)
        digests, self.in_place = self._digests(), hashlib.sha256(data).hexdigest()
        if self.in_place not in digests:
            why = (f"no digest file {self.digest_uri} beside it" if not digests else
                   f"its SHA-256 is not the one {self.digest_uri} lists: damaged or replaced")
            raise RunError(f"{self.uri} is not a training checkpoint xdc wrote ({why}); {fix}")
        try:
            with warnings.catch_warnings():  # its advice on foreign pickle protocols is not the user's business
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
            if not isinstance(state, dict) or "fingerprint" not in state:
                raise ValueError("no training state in it")
        except Exception as err:  # torch raises several types for foreign, damaged or code-carrying files
            raise RunError(f"{self.uri} is not a training checkpoint xdc wrote ({type(err).__name__}: "
                           f"{_first_line(err)}); {fix}") from None
        if state["fingerprint"] != self.fingerprint:
            self.log(f"checkpoint {self.uri} is of another run (targets, settings or ranks differ): starting over")
            return None
        return state

    @property
    def digest_uri(self) -> str:
        return f"{self.uri}.sha256"

    def _digests(self) -> list[str]:
        """The SHA-256 digests the digest file lists (``sha256sum`` lines), [] if there is none."""
        if not store.exists(self.digest_uri):
            return []
        text = store.read_bytes(self.digest_uri).decode(errors="replace")
        return [line.split()[0] for line in text.splitlines() if line.split()]

    def due(self, minutes: float) -> bool:
        """Whether ``minutes`` have passed since the last save (0: always)."""
        return time.monotonic() - self.saved_at >= minutes * 60

    def save(self, state: TrainState) -> None:
        if self.uri is None or not distributed.world().main:
            return
        buf = io.BytesIO()
        torch.save({"fingerprint": self.fingerprint} | state.state_dict(), buf)
        data = buf.getbuffer().tobytes()
        # The digest file first, listing the new digest and the one of the file still in place:
        # killed between the two writes, either file verifies (each write is atomic on its own).
        name = posixpath.basename(self.uri)
        digest = hashlib.sha256(data).hexdigest()
        if self.in_place is None and store.exists(self.uri):
            self.in_place = hashlib.sha256(store.read_bytes(self.uri)).hexdigest()
        lines = [f"{d}  {name}" for d in dict.fromkeys([digest, self.in_place]) if d]
        store.write_bytes(self.digest_uri, ("\n".join(lines) + "\n").encode())
        store.write_bytes(self.uri, data)
        self.in_place = digest
        self.saved_at = time.monotonic()


def _first_line(err: Exception) -> str:
    """The reason in a load error: its first sentence, or for the weights-only unpickler the reason
    it gives (what it refused) after its advice to unpickle without ``weights_only``, which a
    checkpoint must never get."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    refused = [line for line in text.splitlines() if "unsupported global" in line.lower()]
    text = (refused or text.splitlines() or [""])[0]
    return "refused to unpickle: " + text.strip().rstrip(".") if refused else text.split(". ")[0].rstrip(".")


@dataclass(frozen=True)
class Step:
    """One SGD step, as an :class:`Observer` hears it. ``epoch`` counts from 1, ``step`` is the
    number of steps done in it; ``loss`` is the mean over the global batch of ``clips`` items."""

    epoch: int
    step: int
    loss: float
    lr: float
    clips: int
    waited_s: float  # waiting for the loader
    busy_s: float  # computing the step


class Observer:
    """What a training run tells its caller as it goes: log lines (rank 0 only), every step and every
    epoch (every rank). This one prints the log lines and ignores the rest; subclass it to watch
    steps and epochs (metrics, benchmarks, tests). An exception it raises stops the run there, as a
    preemption would: the checkpoint written just before is where a rerun resumes."""

    def log(self, line: str) -> None:
        print(line)

    def step(self, step: Step) -> None:
        pass

    def epoch(self, result: TrainResult, gpu_peak_bytes: int | None) -> None:
        """After each epoch, its checkpoint written; ``result.epochs`` epochs are done."""


class Reporter(Observer):
    """Rank 0's report of a run: log lines to ``log``, steps and epochs to Prometheus."""

    def __init__(self, log: Callable[[str], None], monitor: TrainMonitor) -> None:
        self._log, self.monitor = log, monitor

    def log(self, line: str) -> None:
        self._log(line)

    def step(self, step: Step) -> None:
        if distributed.world().main:
            self.monitor.step(step.loss, step.lr, step.clips, step.waited_s, step.busy_s)

    def epoch(self, result: TrainResult, gpu_peak_bytes: int | None) -> None:
        if distributed.world().main:
            self.monitor.epoch(result.epochs, result.val_loss[-1] if result.val_loss else None, gpu_peak_bytes)


def train_encoder(
    trunk: nn.Module,
    modality: str,
    train_set: Dataset[dict[str, Any]],
    val_set: Dataset[dict[str, Any]],
    targets: Sequence[np.ndarray],
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    ckpt_dir: str | Path | None = None,
    progress: bool = True,
    classes: Sequence[int] | None = None,
    observer: Observer | None = None,
    run_seed: int | None = None,
) -> tuple[TrainResult, Heads]:
    """Train ``trunk`` in place to predict ``targets`` (one array per head, aligned with the datasets).

    ``classes`` is the size of each head (default: the largest label + 1). Returns what happened
    and the trained heads.
    ``train_set`` yields training-mode items, ``val_set`` eval-mode items of the same videos; a
    slice of them is held out for the pseudo-label loss of :class:`EarlyStopping`
    (:func:`pretraining_holdout`: with early stopping on and ``run_seed`` given, the same videos in
    every iteration of a run).
    ``observer`` hears the log lines, steps and epochs (default: the log printed).

    Data parallel when the process group of :mod:`xdc_core.distributed` has several ranks: each
    rank trains on its share of every global batch (:func:`epoch_samples`), gradients are averaged
    by DistributedDataParallel, the held-out loss is summed over the ranks, and only rank 0 writes.
    BatchNorm statistics are per process (as the paper's Caffe2 setup) unless ``cfg.sync_bn``.
    ``ckpt_dir`` (a folder or an object-store prefix) receives a checkpoint after every epoch and
    every ``cfg.checkpoint_minutes``; a rerun resumes from it, at the step it was written, and
    ends with the weights of an uninterrupted run.
    """
    w, observer = distributed.world(), observer or Observer()
    say = observer.log if w.main else (lambda _line: None)
    y = np.stack([np.asarray(t, dtype=np.int64) for t in targets])  # [heads, N]
    train_pos, val_pos = pretraining_holdout(y.shape[1], cfg, seed, run_seed)
    classes = list(classes) if classes is not None else [int(t.max()) + 1 for t in y]
    model = _classifier(trunk, classes, cfg, seed, device)
    schedule = cfg.model_copy(update={"lr": effective_lr(cfg, w.size)})
    opt = torch.optim.SGD(model.parameters(), lr=schedule.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    stopper = EarlyStopping(cfg, len(val_pos), classes, model.trunk)
    state = TrainState(model, opt, stopper, TrainResult(early_stop=stopper.why))
    ckpts = Checkpoints(ckpt_dir, _fingerprint(y, cfg, modality, seed, w.size), say)
    if ckpts.resume(state, device):
        say(f"resumed {modality} training from checkpoint {ckpts.uri}: epoch {state.epoch + 1}, step {state.step}")
        if state.result.stop_reason:  # finished before; nothing left to do
            stopper.restore(model.trunk)
            return state.result, model.heads
    distributed.barrier()  # every rank has read the checkpoint before rank 0 may write a newer one
    trained: nn.Module = model
    if w.size > 1:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile_step(cfg, device):
        trained = CompiledOrEager(trained, say)
    sampler = EpochKeys()
    loader, val_loader = _loaders(WithTargets(train_set, y), WithTargets(val_set, y), sampler, val_pos, cfg, device)
    while state.epoch < cfg.total_epochs and not state.result.stop_reason:
        videos, seeds = epoch_samples(y[0], train_pos, cfg, seed, state.epoch, w.size)
        keys = list(zip(videos[:, w.rank].ravel().tolist(), seeds[:, w.rank].ravel().tolist(), strict=True))
        sampler.keys = keys[state.step * cfg.batch_size :]  # a resumed run goes on at the step it stopped at
        bar = tqdm(loader, desc=f"train {modality} epoch {state.epoch + 1}", leave=False,
                   disable=not progress or not w.main or None)
        train_one_epoch(trained, bar, modality, schedule, len(videos), device, state, ckpts, observer)
        val = _val_loss(model, modality, val_loader, device) if len(val_pos) else None
        state.end_epoch(val, cfg.total_epochs)
        ckpts.save(state)
        observer.epoch(state.result, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
    return state.result, model.heads


class CompiledOrEager(nn.Module):
    """``model`` compiled by torch.compile, or ``model`` itself from the first call that fails to
    compile (one warning, then eager: slower, same results). Logs the compile time, paid once per
    training run: the first step's forward is traced and compiled at its call, its backward at
    ``loss.backward()``, so the time is logged when the caller says the step is done (:meth:`stepped`)."""

    def __init__(self, model: nn.Module, say: Callable[[str], None]) -> None:
        super().__init__()
        self.model, self.say = model, say
        # dynamic=False: every batch of an epoch has the same shape (epochs are whole batches)
        self.compiled: Callable[..., Any] | None = torch.compile(model, dynamic=False)
        self.started: float | None = None  # when the first compiled step began
        self.logged = False

    def forward(self, x: torch.Tensor) -> Any:
        if self.compiled is None:
            return self.model(x)
        first = self.started is None
        if first:
            self.started = time.perf_counter()
        try:
            return self.compiled(x)
        except Exception as err:  # any backend's failure: the eager model still trains
            if not first:
                raise
            warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                          "training eagerly (slower, same results); set train.compile: false to skip the attempt",
                          RuntimeWarning, stacklevel=2)
            self.compiled = None
            return self.model(x)

    def stepped(self) -> None:
        """After each training step's backward: logs the compile time once, after the first."""
        if self.compiled is not None and self.started is not None and not self.logged:
            self.say(f"compiled the training step in {time.perf_counter() - self.started:.1f} s "
                     "(forward and backward; train.compile)")
            self.logged = True


def compile_step(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether to compile the training step: ``cfg.compile``, where auto means on CUDA."""
    return device.type == "cuda" if cfg.compile == "auto" else bool(cfg.compile)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    modality: str,
    schedule: TrainConfig,
    steps: int,
    device: torch.device,
    state: TrainState,
    ckpts: Checkpoints,
    observer: Observer,
) -> None:
    """SGD on ``batches``: the rest of epoch ``state.epoch`` (``steps`` in all) from step ``state.step``,
    with a checkpoint every ``schedule.checkpoint_minutes``. ``model`` is ``state.model`` or its DDP
    wrapper."""
    opt = state.opt
    ready = time.perf_counter()
    for step, batch in enumerate(batches, start=state.step):
        fetched = time.perf_counter()  # since `ready`: waiting for the loader
        lr = lr_at(schedule, state.epoch, step, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        logits = _logits(model, modality, batch[modality], device, schedule.audio_masks)
        t = batch["targets"].to(device)
        loss = sum(nn.functional.cross_entropy(lg, t[:, h]) for h, lg in enumerate(logits)) / len(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if isinstance(model, CompiledOrEager):
            model.stepped()
        step_loss, n = distributed.all_sum([loss.item() * len(t), len(t)], device)  # type: ignore[union-attr]
        busy = time.perf_counter() - fetched
        state.step, state.totals = step + 1, [state.totals[0] + step_loss, state.totals[1] + n]
        if state.step < steps and ckpts.due(schedule.checkpoint_minutes):
            ckpts.save(state)
        observer.step(Step(state.epoch + 1, state.step, step_loss / n, lr, int(n), fetched - ready, busy))
        ready = time.perf_counter()


def _loaders(train_set: WithTargets, val_set: WithTargets, sampler: EpochKeys, val_pos: np.ndarray,
             cfg: TrainConfig, device: torch.device) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """The training loader (its items: ``sampler``'s keys) and this rank's share of the held-out videos."""
    w = distributed.world()
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler,  # type: ignore[arg-type]
                        num_workers=cfg.workers, persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda")
    val_loader = DataLoader(torch.utils.data.Subset(val_set, val_pos[w.rank :: w.size].tolist()),
                            batch_size=cfg.batch_size, num_workers=cfg.workers)
    return loader, val_loader


def _classifier(trunk: nn.Module, classes: Sequence[int], cfg: TrainConfig, seed: int,
                device: torch.device) -> Classifier:
    """``trunk`` with fresh heads, on ``device``, in training mode."""
    with torch.random.fork_rng(devices=[]):  # the heads' init depends on the seed alone, not on the process
        torch.manual_seed(seed)
        heads = Heads(int(trunk.out_dim), classes)
    if cfg.sync_bn and distributed.world().size > 1:
        if device.type != "cuda":
            raise ConfigError("train.sync_bn needs GPUs (SyncBatchNorm runs on CUDA only); set it to false on CPUs")
        trunk = nn.SyncBatchNorm.convert_sync_batchnorm(trunk)  # swaps the layers in place
    model = Classifier(trunk, heads)
    fast_layout(model.to(device), device).train()
    return model
