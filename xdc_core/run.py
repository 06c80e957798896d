"""``xdc run``: the whole loop on one machine, calling the step functions in order.

    decode (manifest) → [embed video, embed audio → k-means (method) → train video, train audio] × N
                      → evaluate (linear probe, optionally finetuning; random-init baseline)

Everything a step produces is a file under OUT, so an interrupted run resumes: decoding skips
finished videos, a finished iteration (``iter_NN/done.json``) is loaded instead of recomputed, and
a training run continues from its last epoch checkpoint.

    OUT/decoded/                     the decoded dataset (when given a manifest)
    OUT/random_init/{video,audio}_encoder.pt
    OUT/iter_NN/features_{video,audio}.npz, clusters.npz, {video,audio}_encoder.pt, stats.json
    OUT/iter_NN/train_{video,audio}/last.pt
    OUT/{video,audio}_encoder.pt     the final encoders (plain torchvision state dicts)
    OUT/metrics.json
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .dataset import ClipDataset, read_index
from .decode import decode_dataset
from .device import resolve_device
from .embed import clip_features, embed, save_features
from .evaluate import finetune, linear_probe
from .kmeans import Clustering, kmeans
from .manifest import read_manifest
from .methods import feature_sets, targets
from .models import MODALITIES, build_trunk
from .train import TrainResult, train_encoder

Log = Callable[[str], None]


class RunError(ValueError):
    """Settings and data that cannot make a run; raised before any work starts."""


# -- checks before any work ---------------------------------------------------------------------


def _pretrain_split(splits: list[str | None], wanted: str | None) -> str | None:
    """The split pretraining uses: ``wanted`` when the data has splits, else every video."""
    if wanted is None or all(s is None for s in splits):
        return None
    if wanted not in splits:
        present = sorted({s for s in splits if s})
        raise RunError(f"no video is in the pretraining split {wanted!r} (train.split); splits present: {present}")
    return wanted


def check_plan(rows: list[tuple[str | None, str | None]], cfg: Config, evaluate: bool, source: str) -> None:
    """Validate a run against ``(label, split)`` of every video; raise :class:`RunError` with what to change."""
    split = _pretrain_split([s for _, s in rows], cfg.train.split)
    n_pretrain = sum(1 for _, s in rows if split is None or s == split)
    if cfg.cluster.k > n_pretrain:
        raise RunError(
            f"k={cfg.cluster.k} is larger than the number of pretraining videos ({n_pretrain} in {source}"
            + (f", split {split!r}" if split else "")
            + "): choose --k at most that, or add videos"
        )
    if evaluate:
        for role, name in (("train", cfg.evaluate.train_split), ("test", cfg.evaluate.test_split)):
            labelled = sum(1 for label, s in rows if s == name and label)
            if labelled == 0:
                raise RunError(
                    f"evaluation needs labelled videos in the {role} split {name!r} (evaluate.{role}_split), "
                    f"but {source} has none; add label and split columns, or pass --no-eval to pretrain only"
                )


# -- the loop -----------------------------------------------------------------------------------


def _save_trunk(trunk: torch.nn.Module, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(trunk.state_dict(), tmp)
    tmp.replace(path)


def _fmt_cluster(name: str, c: dict[str, Any]) -> str:
    prev = f" nmi-prev {c['nmi_previous']:.2f}" if c.get("nmi_previous") is not None else ""
    lab = f" purity {c['purity']:.2f}" if c.get("purity") is not None else ""
    return f"{name} clusters {c['sizes_min']}/{c['sizes_median']:g}/{c['sizes_max']}{prev}{lab}"


def _fmt_train(name: str, r: dict[str, Any]) -> str:
    loss = f"loss {r['train_loss'][0]:.2f}→{r['train_loss'][-1]:.2f}" if r["train_loss"] else "loss -"
    val = f" val {min(r['val_loss']):.2f}" if r["val_loss"] else ""
    return f"{name} {loss}{val} ({r['stop_reason']})"


def run(
    data: str | Path | None,
    out: str | Path,
    cfg: Config,
    evaluate: bool = True,
    progress: bool = True,
    log: Log = print,
    fixed_targets: np.ndarray | None = None,
) -> dict[str, Any]:
    """Run the deep-clustering loop and write ``OUT/metrics.json``; returns the metrics.

    ``data``: a manifest CSV (decoded into OUT/decoded), a decoded dataset folder, or None for
    the embedded sample dataset. ``fixed_targets`` replaces the clusters by given labels for both
    encoders (the supervised upper bound of the benchmark).
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    # 1. data: validate the plan before any heavy work, decode if needed
    if data is None:
        from .sample_data import make_sample_dataset

        manifest = out / "sample" / "manifest.csv"
        if not manifest.is_file():
            log(f"no --data: writing the embedded sample dataset to {manifest.parent}")
            make_sample_dataset(manifest.parent)
        data = manifest
    data = Path(data)
    if data.is_dir():
        entries = read_index(data)
        check_plan([(e.label, e.split) for e in entries], cfg, evaluate, str(data))
        root = data
    else:
        rows = read_manifest(data)
        check_plan([(r.label, r.split) for r in rows], cfg, evaluate, str(data))
        root = out / "decoded"
        summary = decode_dataset(data, root, cfg, progress=progress)
        log(f"decoded {summary['accepted']} videos ({summary['quarantined']} quarantined: {root / 'quarantine.csv'})")
        entries = read_index(root)
        check_plan([(e.label, e.split) for e in entries], cfg, evaluate, f"{root} (after decoding)")

    split = _pretrain_split([e.split for e in entries], cfg.train.split)
    d, ec = cfg.data, cfg.embed
    embed_sets = {m: ClipDataset(root, d, "eval", split, (m,), clips=ec.clips) for m in MODALITIES}
    train_sets = {m: ClipDataset(root, d, "train", split, (m,)) for m in MODALITIES}
    val_sets = {m: ClipDataset(root, d, "eval", split, (m,), clips=1) for m in MODALITIES}
    labels = np.asarray(train_sets["video"].labels)
    labels_or_none = labels if (labels >= 0).any() else None
    n = len(labels)

    widths = {"video": cfg.model.video_width, "audio": cfg.model.audio_width}
    trunks = {m: build_trunk(m, widths[m]) for m in MODALITIES}
    (out / "random_init").mkdir(exist_ok=True)
    for m in MODALITIES:
        _save_trunk(trunks[m], out / "random_init" / f"{m}_encoder.pt")
    method = "supervised" if fixed_targets is not None else cfg.cluster.method
    log(
        f"{method.upper()} on {n} videos, k={cfg.cluster.k}, {cfg.cluster.iterations} iterations, device {device}, "
        f"encoders: R(2+1)D-18 width {widths['video']}, ResNet-18 width {widths['audio']}"
    )

    # 2. [embed → k-means → train] × iterations
    iterations: list[dict[str, Any]] = []
    previous: dict[str, np.ndarray] = {}
    for it in range(1, cfg.cluster.iterations + 1):
        it_dir = out / f"iter_{it:02d}"
        done = it_dir / "stats.json"
        if done.is_file():
            stats = json.loads(done.read_text())
            for m in MODALITIES:
                trunks[m].load_state_dict(torch.load(it_dir / f"{m}_encoder.pt", map_location="cpu"))
            with np.load(it_dir / "clusters.npz") as z:
                previous = {k: z[k] for k in z.files}
            iterations.append(stats)
            log(f"iter {it}/{cfg.cluster.iterations}: already done, loaded from {it_dir}")
            continue
        it_dir.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        feats = {}
        for m in MODALITIES:
            feats[m], index = embed(trunks[m], embed_sets[m], m, ec.batch_size, ec.workers, device, progress)
            save_features(it_dir / f"features_{m}.npz", feats[m], index)
        clusterings: dict[str, Clustering] = {}
        if fixed_targets is None:
            for name, x in feature_sets(cfg.cluster.method, feats["video"], feats["audio"]).items():
                clusterings[name] = kmeans(
                    x, cfg.cluster.k, seed=cfg.seed * 1000 + it, pca_dim=cfg.cluster.pca_dim, niter=cfg.cluster.niter,
                    use_gpu=device.type == "cuda", previous=previous.get(name), labels=labels_or_none,
                )
            assignments = {name: c.assignments for name, c in clusterings.items()}
            heads = targets(cfg.cluster.method, assignments)
        else:
            assignments = {"labels": np.asarray(fixed_targets)}
            heads = {m: [assignments["labels"]] for m in MODALITIES}
        np.savez(it_dir / "clusters.npz", **assignments)
        trained: dict[str, TrainResult] = {}
        for m in MODALITIES:
            trained[m], _ = train_encoder(
                trunks[m], m, train_sets[m], val_sets[m], heads[m], cfg.train, cfg.seed * 1000 + it, device,
                ckpt_dir=it_dir / f"train_{m}", progress=progress,
            )
            _save_trunk(trunks[m], it_dir / f"{m}_encoder.pt")
        stats = {
            "iteration": it,
            "k": cfg.cluster.k,
            "clusters": {name: c.stats.to_dict() for name, c in clusterings.items()},
            "train": {m: r.__dict__ for m, r in trained.items()},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        done.write_text(json.dumps(stats, indent=2) + "\n")
        iterations.append(stats)
        previous = assignments
        parts = [_fmt_cluster(name, c) for name, c in stats["clusters"].items()]
        parts += [_fmt_train(m, r) for m, r in stats["train"].items()]
        log(f"iter {it}/{cfg.cluster.iterations} k={cfg.cluster.k} | " + " | ".join(parts) + f" | {stats['seconds']} s")

    for m in MODALITIES:
        _save_trunk(trunks[m], out / f"{m}_encoder.pt")

    metrics: dict[str, Any] = {"method": method, "videos": n, "k": cfg.cluster.k, "iterations": iterations}
    if evaluate:
        metrics |= evaluate_encoders(root, out, cfg, trunks, device, progress, log)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["config"] = cfg.model_dump()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate_encoders(
    root: Path, out: Path, cfg: Config, trunks: dict[str, torch.nn.Module], device: torch.device, progress: bool,
    log: Log,
) -> dict[str, Any]:
    """Linear probe (and finetuning when enabled) of the trained and the random-init encoders."""
    ev, d = cfg.evaluate, cfg.data
    results: dict[str, Any] = {"probe": {}, "baseline_random": {}}
    if ev.finetune:
        results["finetune"], results["baseline_random_finetune"] = {}, {}
    for m in MODALITIES:
        random_init = build_trunk(m, getattr(cfg.model, f"{m}_width"))
        random_init.load_state_dict(torch.load(out / "random_init" / f"{m}_encoder.pt", map_location="cpu"))
        train_eval = ClipDataset(root, d, "eval", ev.train_split, (m,))
        test_eval = ClipDataset(root, d, "eval", ev.test_split, (m,))
        for key, trunk in (("probe", trunks[m]), ("baseline_random", random_init)):
            tr_x, _, tr_y = clip_features(trunk, train_eval, m, cfg.embed.batch_size, ev.workers, device, progress)
            te_x, _, te_y = clip_features(trunk, test_eval, m, cfg.embed.batch_size, ev.workers, device, progress)
            keep_tr, keep_te = tr_y >= 0, te_y >= 0  # unlabelled videos cannot be scored
            results[key][m] = linear_probe(
                tr_x[keep_tr], tr_y[keep_tr], te_x[keep_te], te_y[keep_te], ev.probe, ev.probe_lrs, ev.val_fraction,
                cfg.seed,
            )
        if ev.finetune:
            train_set = ClipDataset(root, d, "train", ev.train_split, (m,))
            labels = np.asarray(train_set.labels)
            for key, trunk in (("finetune", trunks[m]), ("baseline_random_finetune", random_init)):
                results[key][m] = finetune(
                    trunk, m, train_set, train_eval, test_eval, labels, np.asarray(test_eval.labels),
                    ev.finetune_schedule, ev.finetune_lrs, ev.val_fraction, cfg.seed, device, ev.workers, progress,
                )
        log(
            f"evaluate {m}: linear probe top-1 {results['probe'][m]['top1']:.3f} "
            f"(random init {results['baseline_random'][m]['top1']:.3f})"
            + (f", finetune {results['finetune'][m]['top1']:.3f}" if ev.finetune else "")
        )
    return results
