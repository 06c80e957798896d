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
from .diagnosis import RANDOM_INIT_WHY, final_iteration, findings
from .errors import RunError
from .layout import RunLayout
from .run_lock import run_lock
from .step_specs import EVALUATE, INIT, Slot, call, iteration_steps
from .store import atomic_write
from .steps import (
    check_decoded,
    decode_step,
    iteration_stats,
    metrics_summary,
    pretrain_videos,
    sample_manifest,
    write_evaluation,
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

    pretrain(root, layout, cfg, progress, log, publish, processes)
    last = cfg.cluster.iterations
    if evaluate:
        paths = {**EVALUATE.paths(layout, Slot(last=last)), "data": root}
        results = call(EVALUATE, cfg, paths, Slot(last=last), progress, log=log)
    else:
        results = {}
        write_evaluation(cfg, None, iteration_stats(layout, cfg), layout.metrics, layout.plots)
    iterations = iteration_stats(layout, cfg)
    publish(layout.metrics)
    publish(layout.plots)
    return {**metrics_summary(cfg, {}), "videos": n, **results, "iteration_stats": iterations,
            "seconds": round(time.perf_counter() - started, 1)}


def pretrain(root: Path, layout: RunLayout, cfg: Config, progress: bool = False, log: Log = print,
             publish: Publish | None = None, processes: int = 1) -> None:
    """The loop between decoding and evaluation, on the decoded dataset ``root``, into ``layout``:
    the random init (iteration 0), ``cluster.iterations`` iterations of embed × 2 → k-means → train
    × 2 (a finished iteration is kept), then the last iteration's encoders as the final ones, or the
    random init of an encoder that learned nothing (:func:`~xdc_core.diagnosis.final_iteration`)."""
    publish = publish or (lambda path: None)
    if not all(layout.encoder(0, m).is_file() for m in MODALITIES):  # iteration 0: the random init, as files
        call(INIT, cfg, INIT.paths(layout, Slot()))
    publish(layout.iteration(0))
    last = cfg.cluster.iterations
    for it in range(1, last + 1):
        head = f"iter {it}/{last}"
        if layout.done(it):
            log(f"{head}: already done, kept from {layout.iteration(it)}")
            continue
        t0 = time.perf_counter()
        parts = []
        for spec in iteration_steps():  # embed × 2 → k-means → train × 2, as declared
            for m in MODALITIES if spec.per_modality else ("",):
                slot = Slot.of(it, last, m)
                paths = spec.paths(layout, slot)
                result = call(spec, cfg, {**paths, **({"data": root} if "data" in paths else {})}, slot, progress,
                              processes)
                parts += [spec.report(result, cfg, slot)] if spec.report else []
        outputs = [spec.paths(layout, Slot.of(it, last, m))[port.name] for spec in iteration_steps()
                   for m in (MODALITIES if spec.per_modality else ("",)) for port in spec.outputs if port.tracked]
        for path in [p for p in outputs if p not in layout.stats_files(it)] + layout.stats_files(it):
            publish(path)  # the statistics last: they mark the iteration done
        log(" | ".join([f"{head} k={cfg.cluster.k}", *parts, f"{time.perf_counter() - t0:.1f} s"]))
        for finding in findings([layout.iteration_stats(i) for i in range(1, it + 1)], cfg.cluster.k,
                                cfg.train.learned_margin):
            log(f"warning: {finding}")

    trained = [layout.iteration_stats(i)["train"] for i in range(1, last + 1)]
    for m in MODALITIES:
        source = final_iteration([t[m] for t in trained], cfg)
        if not source:
            log(f"warning: the final {m} encoder is the random init ({layout.encoder(0, m)}): {RANDOM_INIT_WHY}")
        # through the one atomic writer: a full disk never leaves a truncated encoder under its final name
        with open(layout.encoder(source, m), "rb") as fin, atomic_write(layout.final_encoder(m)) as fout:
            shutil.copyfileobj(fin, fout, store.CHUNK)
        publish(layout.final_encoder(m))


def pretrain_step(data: Path, out: Path, cfg: Config, progress: bool = False, log: Log = print) -> None:
    """``xdc step pretrain``, the DVC stage: :func:`pretrain` on the decoded dataset ``data`` into
    the folder ``out``, which holds then what ``xdc run`` writes between decoding and evaluation.
    One stage for the whole loop, because DVC cannot make stages from a number: ``dvc exp run -S
    cluster.iterations=N`` works with it."""
    check_decoded(Path(data), cfg, evaluate=False)
    layout = RunLayout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    pretrain(Path(data), layout, cfg, progress, log)
