"""``xdc run``: the whole loop on one machine, calling the step functions of :mod:`xdc_core.steps`.

    decode (manifest) → [embed video, embed audio → k-means (method) → train video, train audio] × N
                      → evaluate (linear probe, optionally finetuning; random-init baseline)

Every file goes where :class:`~xdc_core.layout.RunLayout` says, the layout the DVC stages use
too, so an interrupted run resumes: decoding skips finished videos, a finished iteration is kept
instead of recomputed, and training continues from its last epoch checkpoint. With an object
store OUT (:mod:`xdc_core.publish`), ``publish`` uploads each finished step's files.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import store
from .config import MODALITIES, Config
from .device import resolve_device
from .distributed import launch
from .layout import RunLayout
from .plots import write_plots
from .report import format_clusters, format_train
from .store import write_json
from .steps import (
    check_decoded,
    decode_step,
    embed_step,
    evaluate_step,
    init_encoder,
    kmeans_step,
    metrics_summary,
    pretrain_videos,
    sample_manifest,
    save_encoder,
    train_step,
)

Log = Callable[[str], None]
Publish = Callable[[Path], None]


def prepare_data(
    data: str | Path | None, layout: RunLayout, cfg: Config, evaluate: bool, progress: bool = True, log: Log = print,
) -> Path:
    """The decoded dataset folder for ``data``, validated against the plan before any heavy work.

    ``data``: a manifest CSV (decoded into OUT/decoded), a decoded dataset folder, or None for the
    embedded sample dataset (written to OUT/sample, then decoded). A manifest may be an object
    store URI (its videos are fetched one at a time while decoding); so may a decoded dataset.
    """
    if data is None:
        data = sample_manifest(layout.sample, log)
    elif store.is_remote(data) and not str(data).endswith(".csv"):  # a decoded dataset in a bucket
        local = layout.root / "decoded_input"
        log(f"fetching the decoded dataset {data} to {local}")
        store.download_dir(data, local)
        data = local
    if not store.is_remote(data) and Path(data).is_dir():
        check_decoded(Path(data), cfg, evaluate)
        return Path(data)
    summary = decode_step(data, layout.decoded, cfg, evaluate, progress)
    log(f"decoded {summary['accepted']} videos ({summary['quarantined']} quarantined: "
        f"{layout.decoded / 'quarantine.csv'})")
    return layout.decoded


def run(
    data: str | Path | None,
    out: str | Path,
    cfg: Config,
    evaluate: bool = True,
    progress: bool = True,
    log: Log = print,
    publish: Publish | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Run the deep-clustering loop into the folder ``out``; returns the metrics (with each
    iteration's statistics under ``"iteration_stats"`` and, when evaluated, per-video outcomes).
    ``publish`` (for an object-store OUT) is called with each file or folder once it is final.
    ``processes`` > 1: embed and train data-parallel, one process per GPU (:mod:`xdc_core.distributed`)."""
    publish = publish or (lambda path: None)  # a local OUT: the files are where they belong already
    started = time.perf_counter()
    layout = RunLayout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    root = prepare_data(data, layout, cfg, evaluate, progress, log)
    if root == layout.decoded:
        publish(root)
    n = pretrain_videos(root, cfg)
    log(f"{cfg.cluster.method.upper()} on {root}, {n} videos, k={cfg.cluster.k}, {cfg.cluster.iterations} "
        f"iterations, device {resolve_device(cfg.device)}, encoders: {cfg.model.video_arch} width {cfg.model.video_width}, "
        f"ResNet-18 width {cfg.model.audio_width}")

    for m in MODALITIES:  # iteration 0: the random init, as a file like every later encoder
        if not layout.encoder(0, m).is_file():
            save_encoder(init_encoder(m, cfg), layout.encoder(0, m))
    publish(layout.iteration(0))
    for it in range(1, cfg.cluster.iterations + 1):
        head = f"iter {it}/{cfg.cluster.iterations}"
        if layout.done(it):
            log(f"{head}: already done, kept from {layout.iteration(it)}")
            continue
        t0 = time.perf_counter()
        features = {m: launch(embed_step, (root, m, cfg, layout.encoder(it - 1, m), layout.features(it, m),
                                           progress), processes)
                    for m in MODALITIES}
        previous = layout.clusters(it - 1) if it > 1 else None
        clusters = kmeans_step(features, cfg, it, layout.clusters(it), previous, stats=layout.kmeans_stats(it),
                               decoded=root, gallery=layout.gallery(it))
        trained = {m: launch(train_step, (root, m, cfg, it, layout.clusters(it), layout.encoder(it - 1, m),
                                          layout.encoder(it, m), layout.checkpoints(it, m), progress,
                                          layout.train_stats(it, m)), processes)
                   for m in MODALITIES}
        for path in (*(layout.features(it, m) for m in MODALITIES), layout.clusters(it), layout.gallery(it),
                     *(layout.encoder(it, m) for m in MODALITIES), *layout.stats_files(it)):
            publish(path)  # the statistics last: they mark the iteration done
        parts = [format_clusters(name, c) for name, c in clusters.items()]
        parts += [format_train(m, r) for m, r in trained.items()]
        log(" | ".join([f"{head} k={cfg.cluster.k}", *parts, f"{time.perf_counter() - t0:.1f} s"]))

    final = cfg.cluster.iterations
    for m in MODALITIES:
        shutil.copyfile(layout.encoder(final, m), layout.final_encoder(m))
        publish(layout.final_encoder(m))
    iterations = [layout.iteration_stats(it) for it in range(1, final + 1)]
    results = evaluate_step(root, cfg, {m: layout.final_encoder(m) for m in MODALITIES}, progress, log) \
        if evaluate else {}
    write_json(layout.metrics, metrics_summary(cfg, results))
    write_plots(layout.plots, iterations, metrics_summary(cfg, results) if evaluate else None)
    publish(layout.metrics)
    publish(layout.plots)
    return {**metrics_summary(cfg, {}), "videos": n, **results, "iteration_stats": iterations,
            "seconds": round(time.perf_counter() - started, 1)}
