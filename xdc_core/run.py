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

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import store
from .config import Config
from .device import resolve_device
from .models import MODALITIES
from .steps import (
    CROSS_MODAL,
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

__all__ = ["RunError", "prepare_data", "run", "work_dir"]

Log = Callable[[str], None]


def _fmt_cluster(name: str, c: dict[str, Any]) -> str:
    if name == CROSS_MODAL:
        return f"video-audio nmi {c['nmi']:.3f} (chance {c['nmi_chance']:.3f})"
    prev = f" nmi-prev {c['nmi_previous']:.2f}" if c.get("nmi_previous") is not None else ""
    lab = f" purity {c['purity']:.2f}" if c.get("purity") is not None else ""
    return f"{name} clusters {c['sizes_min']}/{c['sizes_median']:g}/{c['sizes_max']}{prev}{lab}"


def _fmt_train(name: str, r: dict[str, Any]) -> str:
    loss = f"loss {r['train_loss'][0]:.2f}→{r['train_loss'][-1]:.2f}" if r["train_loss"] else "loss -"
    val = f" val {min(r['val_loss']):.2f}" if r["val_loss"] else ""
    return f"{name} {loss}{val} ({r['stop_reason']})"


def prepare_data(
    data: str | Path | None, out: Path, cfg: Config, evaluate: bool, progress: bool = True, log: Log = print,
) -> Path:
    """The decoded dataset folder for ``data``, validated against the plan before any heavy work.

    ``data``: a manifest CSV (decoded into OUT/decoded), a decoded dataset folder, or None for the
    embedded sample dataset (written to OUT/sample, then decoded). A manifest may be an object
    store URI (its videos are fetched one at a time while decoding); so may a decoded dataset.
    """
    if data is None:
        data = sample_manifest(out / "sample", log)
    elif store.is_remote(data) and not str(data).endswith(".csv"):  # a decoded dataset in a bucket
        local = out / "decoded_input"
        log(f"fetching the decoded dataset {data} to {local}")
        store.download_dir(data, local)
        data = local
    if not store.is_remote(data) and Path(data).is_dir():
        check_decoded(Path(data), cfg, evaluate)
        return Path(data)
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
    if store.is_remote(out):
        return _run_into_store(data, str(out), cfg, evaluate, progress, log, fixed_targets)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = prepare_data(data, out, cfg, evaluate, progress, log)
    if root.is_relative_to(out):
        publish(out, root)
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
            publish(out, it_dir)
            write_json(done, stats)
            publish(out, done)  # last: stats.json marks the iteration done
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
    for name in ("video_encoder.pt", "audio_encoder.pt", "metrics.json"):
        publish(out, out / name)
    return metrics


# -- OUT in an object store -------------------------------------------------------------------------

@dataclass
class _Mirror:
    uri: str
    stored: dict[Path, tuple[int, int]]  # local file -> (size, mtime_ns) of what the store holds


# Set while a run writes to an object store, by local working folder. Every finished step's files
# are uploaded as soon as they are complete, so a crash loses at most the step in flight.
_MIRROR: dict[str, _Mirror] = {}


def _version(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def publish(out: Path, path: Path) -> None:
    """Upload ``path`` (a file or a folder) to the run's object-store OUT, when there is one, skipping
    files the store already holds unchanged and training checkpoints; a no-op for a local OUT."""
    mirror = _MIRROR.get(str(out))
    if mirror is None:
        return
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f.name == "last.pt" or mirror.stored.get(f) == _version(f):
            continue  # per-epoch checkpoints only matter on the machine that trains
        store.upload_file(f, f"{mirror.uri.rstrip('/')}/{f.relative_to(out).as_posix()}")
        mirror.stored[f] = _version(f)


def work_dir(uri: str) -> Path:
    """The local working folder of a run whose OUT is ``uri``: ``$XDC_WORK_DIR`` (default: the
    system temp folder) / a name derived from the URI, so a rerun finds its own files."""
    base = Path(os.environ.get("XDC_WORK_DIR") or Path(tempfile.gettempdir()) / "xdc-work")
    return base / hashlib.sha1(uri.encode()).hexdigest()[:16]


def _run_into_store(
    data: str | Path | None, uri: str, cfg: Config, evaluate: bool, progress: bool, log: Log,
    fixed_targets: np.ndarray | None,
) -> dict[str, Any]:
    local = work_dir(uri)
    local.mkdir(parents=True, exist_ok=True)
    # Resume: what a previous attempt already stored (finished iterations, the decoded dataset).
    fetched = store.download_dir(uri, local)
    log(f"OUT is {uri}: working in {local}" + (f", {len(fetched)} files fetched from it" if fetched else ""))
    _MIRROR[str(local)] = _Mirror(uri, {p: _version(p) for p in fetched})
    try:
        return run(data, local, cfg, evaluate, progress, log, fixed_targets)
    finally:
        del _MIRROR[str(local)]
