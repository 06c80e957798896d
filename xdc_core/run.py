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

import yaml

from . import store
from .config import MODALITIES, Config
from .device import resolve_device
from .distributed import launch
from .errors import RunError
from .layout import RunLayout
from .plots import write_plots
from .report import format_clusters, format_train
from .run_lock import run_lock
from .store import atomic_write, write_json
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

# Settings that change how fast a run goes, never what it computes: a rerun may change them.
NOT_RECORDED = {"decode.workers", "embed.workers", "train.workers", "evaluate.workers", "train.checkpoint_minutes"}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"cluster": {"k": 4}}`` → ``{"cluster.k": 4}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_settings(layout: RunLayout, cfg: Config, out: str | Path | None = None) -> bool:
    """Whether OUT already records its settings (OUT/settings.yaml); a :class:`RunError` naming each
    differing key when ``cfg`` is not those: resuming would mix results of two settings under one name."""
    out = out or layout.root
    if not layout.settings.is_file():
        return False
    try:
        recorded = _flat(yaml.safe_load(layout.settings.read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError) as err:
        raise RunError(f"{layout.settings} is unreadable ({err}); restore it, or start fresh with another --out") \
            from None
    ours = _flat(cfg.model_dump(mode="json"))
    differ = sorted(k for k in recorded.keys() | ours.keys()
                    if k not in NOT_RECORDED and recorded.get(k, "(unset)") != ours.get(k, "(unset)"))
    if differ:
        changes = ", ".join(f"{k}: {recorded.get(k, '(unset)')} -> {ours.get(k, '(unset)')}" for k in differ)
        raise RunError(
            f"{out} was run with other settings ({changes}); resuming would mix results of both. Rerun with the "
            f"recorded settings (--config {str(out).rstrip('/')}/settings.yaml), or start fresh with another --out")
    return True


def record_settings(layout: RunLayout, cfg: Config) -> None:
    """Write ``cfg`` to OUT/settings.yaml (atomically): the settings every rerun must match."""
    with atomic_write(layout.settings) as f:
        f.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode())


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
    name: str | None = None,
) -> dict[str, Any]:
    """Run the deep-clustering loop into the folder ``out``; returns the metrics (with each
    iteration's statistics under ``"iteration_stats"`` and, when evaluated, per-video outcomes).
    ``publish`` (for an object-store OUT) is called with each file or folder once it is final.
    ``processes`` > 1: embed and train data-parallel, one process per GPU (:mod:`xdc_core.distributed`).
    ``name``: what to call OUT in messages (the URI of an object-store OUT; default ``out``).

    The first run records ``cfg`` in OUT/settings.yaml; a rerun with other settings is refused
    (:func:`check_settings`), and so is a second run while one works in OUT (:mod:`xdc_core.run_lock`)."""
    layout = RunLayout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    with run_lock(layout, name, log):
        return _run(data, layout, cfg, evaluate, progress, log, publish, processes, check_settings(layout, cfg, name))


def _run(data: str | Path | None, layout: RunLayout, cfg: Config, evaluate: bool, progress: bool, log: Log,
         publish: Publish | None, processes: int, recorded: bool) -> dict[str, Any]:
    publish = publish or (lambda path: None)  # a local OUT: the files are where they belong already
    started = time.perf_counter()
    root = prepare_data(data, layout, cfg, evaluate, progress, log)
    if not recorded:  # once the plan is checked: settings that cannot make a run are not recorded
        record_settings(layout, cfg)
        publish(layout.settings)
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
        # through the one atomic writer: a full disk never leaves a truncated encoder under its final name
        with open(layout.encoder(final, m), "rb") as fin, atomic_write(layout.final_encoder(m)) as fout:
            shutil.copyfileobj(fin, fout, store.CHUNK)
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
