"""``xdc run``: the whole loop on one machine, calling the step functions of :mod:`xdc_core.steps`.

    decode (manifest) → [embed video, embed audio → k-means (method) → train video, train audio] × N
                      → evaluate (linear probe, optionally finetuning; random-init baseline)

Everything a step produces is a file under OUT, so an interrupted run resumes: decoding skips
finished videos, a finished iteration (``iter_NN/stats.json``) is kept instead of recomputed, and
a training run continues from its last epoch checkpoint.

    OUT/decoded/                     the decoded dataset (when given a manifest)
    OUT/iter_NN/features_{video,audio}.npz, clusters.npz, {video,audio}_encoder.pt, stats.json
    OUT/iter_NN/train_{video,audio}/last.pt
    OUT/{video,audio}_encoder.pt     the final encoders (plain torchvision state dicts)
    OUT/metrics.json
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .device import resolve_device
from .models import MODALITIES
from .steps import (
    RunError,
    check_decoded,
    decode_step,
    embed_step,
    evaluate_step,
    kmeans_step,
    pretrain_videos,
    sample_manifest,
    train_on_targets,
    train_step,
    write_json,
)

__all__ = ["RunError", "prepare_data", "run"]

Log = Callable[[str], None]


def _fmt_cluster(name: str, c: dict[str, Any]) -> str:
    prev = f" nmi-prev {c['nmi_previous']:.2f}" if c.get("nmi_previous") is not None else ""
    lab = f" purity {c['purity']:.2f}" if c.get("purity") is not None else ""
    return f"{name} clusters {c['sizes_min']}/{c['sizes_median']:g}/{c['sizes_max']}{prev}{lab}"


def _fmt_train(name: str, r: dict[str, Any]) -> str:
    loss = f"loss {r['train_loss'][0]:.2f}→{r['train_loss'][-1]:.2f}" if r["train_loss"] else "loss -"
    val = f" val {min(r['val_loss']):.2f}" if r["val_loss"] else ""
    return f"{name} {loss}{val} ({r['stop_reason']})"


def prepare_data(
    data: str | Path | None, out: Path, cfg: Config, evaluate: bool, progress: bool = True, log: Log = print
) -> Path:
    """The decoded dataset folder for ``data``, validated against the plan before any heavy work.

    ``data``: a manifest CSV (decoded into OUT/decoded), a decoded dataset folder, or None for the
    embedded sample dataset (written to OUT/sample, then decoded).
    """
    data = sample_manifest(out / "sample", log) if data is None else Path(data)
    if data.is_dir():
        check_decoded(data, cfg, evaluate)
        return data
    root = out / "decoded"
    summary = decode_step(data, root, cfg, evaluate, progress)
    log(f"decoded {summary['accepted']} videos ({summary['quarantined']} quarantined: {root / 'quarantine.csv'})")
    return root


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

    ``fixed_targets`` replaces the clusters by given labels for both encoders (the supervised
    upper bound of the benchmark).
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = prepare_data(data, out, cfg, evaluate, progress, log)
    method = "supervised" if fixed_targets is not None else cfg.cluster.method
    n = pretrain_videos(root, cfg)
    log(
        f"{method.upper()} on {root}, k={cfg.cluster.k}, {cfg.cluster.iterations} iterations, "
        f"device {resolve_device(cfg.device)}, encoders: R(2+1)D-18 width {cfg.model.video_width}, "
        f"ResNet-18 width {cfg.model.audio_width}"
    )

    iterations: list[dict[str, Any]] = []
    encoders: dict[str, Path | None] = {m: None for m in MODALITIES}  # None: random init
    previous: Path | None = None
    for it in range(1, cfg.cluster.iterations + 1):
        it_dir = out / f"iter_{it:02d}"
        done = it_dir / "stats.json"
        if not done.is_file():
            t0 = time.perf_counter()
            features = {
                m: embed_step(root, m, cfg, encoders[m], it_dir / f"features_{m}.npz", progress) for m in MODALITIES
            }
            clusters = it_dir / "clusters.npz"
            trained = {}
            if fixed_targets is None:
                cluster_stats = kmeans_step(features, cfg, it, clusters, previous)
                for m in MODALITIES:
                    trained[m] = train_step(root, m, cfg, it, clusters, encoders[m], it_dir / f"{m}_encoder.pt",
                                            it_dir / f"train_{m}", progress)
            else:
                cluster_stats = {}
                np.savez(clusters, labels=np.asarray(fixed_targets))
                for m in MODALITIES:
                    trained[m] = train_on_targets(root, m, cfg, it, [np.asarray(fixed_targets)], encoders[m],
                                                  it_dir / f"{m}_encoder.pt", it_dir / f"train_{m}", progress)
            stats = {"iteration": it, "k": cfg.cluster.k, "clusters": cluster_stats, "train": trained,
                     "seconds": round(time.perf_counter() - t0, 1)}
            write_json(done, stats)
            parts = [_fmt_cluster(name, c) for name, c in cluster_stats.items()]
            parts += [_fmt_train(m, r) for m, r in trained.items()]
            head = f"iter {it}/{cfg.cluster.iterations} k={cfg.cluster.k}"
            log(" | ".join([head, *parts, f"{stats['seconds']} s"]))
        else:
            stats = json.loads(done.read_text())
            log(f"iter {it}/{cfg.cluster.iterations}: already done, kept from {it_dir}")
        iterations.append(stats)
        encoders = {m: it_dir / f"{m}_encoder.pt" for m in MODALITIES}
        previous = it_dir / "clusters.npz"

    for m in MODALITIES:
        shutil.copyfile(encoders[m], out / f"{m}_encoder.pt")  # type: ignore[arg-type]

    metrics: dict[str, Any] = {"method": method, "videos": n, "k": cfg.cluster.k, "iterations": iterations}
    if evaluate:
        metrics |= evaluate_step(root, cfg, {m: out / f"{m}_encoder.pt" for m in MODALITIES}, progress, log)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["config"] = cfg.model_dump()
    write_json(out / "metrics.json", metrics)
    return metrics
