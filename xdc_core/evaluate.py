"""The evaluate step: top-1 accuracy of an encoder on a labelled train/test split (paper §4.1, Table 5).

* **Linear probe** ("fc only"): the trunk is frozen; a linear classifier is trained on its
  features of ``eval_clips`` uniformly spaced clips of every training video (features computed
  once, standardised with training statistics).
* **Full finetuning**: trunk and a fresh fc trained together on random clips (train mode).

Both use the paper's Table 11 schedule and cross-validate the base learning rate over Table 12's
grid. Unlike the paper, which reports the best test result over the grid, the lr is chosen on a
held-out slice of the *training* split and only the chosen lr is measured on the test split.
At test time the softmax predictions of ``eval_clips`` uniformly spaced clips are averaged per
video (10 in the paper).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .config import Config, Schedule, TrainConfig
from .dataset import ClipDataset
from .device import resolve_device
from .embed import clip_features
from .train import Heads, lr_at, split_holdout, train_encoder


def top1(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def paired_bootstrap(correct: np.ndarray, baseline: np.ndarray, seed: int = 0, resamples: int = 10_000) -> dict[str, Any]:
    """Top-1 difference between two classifiers scored on the *same* test videos, with a 95%
    percentile-bootstrap interval: the videos are resampled with replacement, the pairing kept.

    ``correct`` and ``baseline`` are 0/1 per test video; pairing removes the spread due to which
    videos are easy, so the interval is much tighter than two separate accuracies' intervals.
    Several runs (seeds) scored on the same videos can be stacked as rows ``[runs, videos]``: the
    videos are resampled, and the difference is the mean over runs.
    """
    a, b = np.atleast_2d(np.asarray(correct, float)), np.atleast_2d(np.asarray(baseline, float))
    if a.shape != b.shape:
        raise ValueError(f"paired_bootstrap: shapes differ {a.shape} vs {b.shape}")
    diff = (a - b).mean(axis=0)  # per test video, averaged over runs
    idx = np.random.default_rng([seed, 17]).integers(0, len(diff), (resamples, len(diff)))
    boot = diff[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"delta": round(float(diff.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "test_videos": int(len(diff)), "runs": int(a.shape[0])}


def _fit_linear(x: np.ndarray, y: np.ndarray, classes: int, s: Schedule, lr: float, seed: int) -> nn.Linear:
    """SGD on clip features ``x [M, D]`` with the schedule ``s`` at base lr ``lr``."""
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(x.shape[1], classes)
    nn.init.normal_(fc.weight, 0, 0.01, generator=gen)
    nn.init.zeros_(fc.bias)
    sched = s.model_copy(update={"lr": lr})
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    steps = math.ceil(s.epoch_size / s.batch_size)
    for epoch in range(s.total_epochs):
        # an epoch is epoch_size examples: as many shuffled passes over the clips as that takes
        order = torch.cat([torch.randperm(len(xt), generator=gen) for _ in range(math.ceil(s.epoch_size / len(xt)))])
        for step in range(steps):
            idx = order[step * s.batch_size : (step + 1) * s.batch_size]
            if len(idx) == 0:
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(sched, epoch, step, steps)
            loss = nn.functional.cross_entropy(fc(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return fc


@torch.no_grad()
def _video_probs(fc: nn.Module, feats: np.ndarray) -> np.ndarray:
    """Softmax averaged over each video's clips: ``[V, clips, D]`` → ``[V, C]``."""
    v, c, d = feats.shape
    return fc(torch.as_tensor(feats).reshape(v * c, d)).softmax(-1).reshape(v, c, -1).mean(1).numpy()


def linear_probe(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    schedule: Schedule,
    lrs: list[float],
    val_fraction: float,
    seed: int,
) -> dict[str, Any]:
    """fc-only top-1 on the test videos; the lr is chosen on a held-out slice of the training videos."""
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    mean = train_feats.reshape(-1, train_feats.shape[-1]).mean(0)
    std = train_feats.reshape(-1, train_feats.shape[-1]).std(0) + 1e-6
    tr, te = (train_feats - mean) / std, (test_feats - mean) / std

    def fit(videos: np.ndarray, lr: float) -> nn.Linear:
        x = tr[videos].reshape(-1, tr.shape[-1])
        y = np.repeat(train_labels[videos], tr.shape[1])
        return _fit_linear(x.astype(np.float32), y, classes, schedule, lr, seed)

    val_scores: dict[str, float] = {}
    best_lr = lrs[0]
    if len(lrs) > 1:
        fit_v, val_v = split_holdout(len(train_labels), val_fraction, seed)
        for lr in lrs:
            val_scores[str(lr)] = round(top1(_video_probs(fit(fit_v, lr), tr[val_v]), train_labels[val_v]), 4)
        best_lr = max(lrs, key=lambda lr: val_scores[str(lr)])  # first best on ties
    fc = fit(np.arange(len(train_labels)), best_lr)
    correct = _video_probs(fc, te.astype(np.float32)).argmax(1) == test_labels
    return {
        "top1": round(float(correct.mean()), 4),
        "lr": best_lr,
        "val_top1_by_lr": val_scores,
        "train_videos": int(len(train_labels)),
        "test_videos": int(len(test_labels)),
        "correct": correct.astype(int).tolist(),  # per test video, in index order: for paired comparisons
    }


def finetune(
    trunk: nn.Module,
    modality: str,
    train_set: Dataset,
    train_eval_set: Dataset,
    test_set: Dataset,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    schedule: Schedule,
    lrs: list[float],
    val_fraction: float,
    seed: int,
    device: torch.device,
    workers: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Full finetuning top-1 (a copy of ``trunk`` is trained; ``trunk`` itself is untouched).

    ``train_set`` is the training split in train mode, ``train_eval_set`` the same videos in eval
    mode (for lr selection), ``test_set`` the test split in eval mode.
    """
    cfg = TrainConfig(**schedule.model_dump(), early_stop=False, val_fraction=0.0, workers=workers, split=None)
    classes = int(max(train_labels.max(), test_labels.max())) + 1

    def fit(videos: np.ndarray, lr: float) -> tuple[nn.Module, Heads]:
        model = copy.deepcopy(trunk)
        subset = Subset(train_set, videos.tolist())
        _, heads = train_encoder(
            model, modality, subset, subset, [train_labels[videos]], cfg.model_copy(update={"lr": lr}), seed, device,
            progress=progress, classes=[classes],
        )
        return model, heads

    def probs(model: nn.Module, heads: Heads, dataset: Dataset) -> np.ndarray:
        feats, _, _ = clip_features(model, dataset, modality, schedule.batch_size, workers, device, progress)
        return _video_probs(heads.fcs[0].cpu(), feats)

    val_scores: dict[str, float] = {}
    best_lr = lrs[0]
    if len(lrs) > 1:
        fit_v, val_v = split_holdout(len(train_labels), val_fraction, seed)
        for lr in lrs:
            model, heads = fit(fit_v, lr)
            p = probs(model, heads, Subset(train_eval_set, val_v.tolist()))
            val_scores[str(lr)] = round(top1(p, train_labels[val_v]), 4)
        best_lr = max(lrs, key=lambda lr: val_scores[str(lr)])
    model, heads = fit(np.arange(len(train_labels)), best_lr)
    correct = probs(model, heads, test_set).argmax(1) == test_labels
    return {
        "top1": round(float(correct.mean()), 4),
        "lr": best_lr,
        "val_top1_by_lr": val_scores,
        "correct": correct.astype(int).tolist(),  # per test video, for paired comparisons
    }


def probe_encoder(root: Path, cfg: Config, modality: str, trunk: nn.Module, progress: bool = True) -> dict[str, Any]:
    """Linear-probe top-1 of one frozen ``trunk``: fc on ``evaluate.train_split``, scored on ``test_split``."""
    ev = cfg.evaluate
    device = resolve_device(cfg.device)
    feats = {}
    for split in (ev.train_split, ev.test_split):
        dataset = ClipDataset(root, cfg.data, "eval", split, (modality,))
        x, _, y = clip_features(trunk, dataset, modality, cfg.embed.batch_size, ev.workers, device, progress)
        feats[split] = x[y >= 0], y[y >= 0]  # unlabelled videos cannot be scored
    (tr_x, tr_y), (te_x, te_y) = feats[ev.train_split], feats[ev.test_split]
    return linear_probe(tr_x, tr_y, te_x, te_y, ev.probe, ev.probe_lrs, ev.val_fraction, cfg.seed)


def evaluate_encoders(
    root: Path,
    cfg: Config,
    trunks: dict[str, nn.Module],
    random_init: dict[str, nn.Module],
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Linear probe (and finetuning when ``evaluate.finetune``) of ``trunks`` and, as the baseline,
    of the ``random_init`` trunks, trained on ``evaluate.train_split`` and scored on ``test_split``;
    ``probe_vs_random`` is their paired difference on the same test videos."""
    ev, d = cfg.evaluate, cfg.data
    device = resolve_device(cfg.device)
    results: dict[str, Any] = {"probe": {}, "baseline_random": {}, "probe_vs_random": {}}
    if ev.finetune:
        results["finetune"], results["baseline_random_finetune"] = {}, {}
    for m in trunks:
        for key, trunk in (("probe", trunks[m]), ("baseline_random", random_init[m])):
            results[key][m] = probe_encoder(root, cfg, m, trunk, progress)
        if ev.finetune:
            train_set = ClipDataset(root, d, "train", ev.train_split, (m,))
            train_eval = ClipDataset(root, d, "eval", ev.train_split, (m,))
            test_eval = ClipDataset(root, d, "eval", ev.test_split, (m,))
            labels = np.asarray(train_set.labels)
            for key, trunk in (("finetune", trunks[m]), ("baseline_random_finetune", random_init[m])):
                results[key][m] = finetune(
                    trunk, m, train_set, train_eval, test_eval, labels, np.asarray(test_eval.labels),
                    ev.finetune_schedule, ev.finetune_lrs, ev.val_fraction, cfg.seed, device, ev.workers, progress,
                )
        results["probe_vs_random"][m] = paired = paired_bootstrap(
            results["probe"][m]["correct"], results["baseline_random"][m]["correct"], cfg.seed
        )
        log(
            f"evaluate {m}: linear probe top-1 {results['probe'][m]['top1']:.3f} "
            f"(random init {results['baseline_random'][m]['top1']:.3f}; difference {paired['delta']:+.3f}, "
            f"95% CI [{paired['ci95'][0]:+.3f}, {paired['ci95'][1]:+.3f}] over {paired['test_videos']} test videos)"
            + (f", finetune {results['finetune'][m]['top1']:.3f}" if ev.finetune else "")
        )
    return results
