"""The pipeline's steps, each a function from files to files.

    decode  → embed (per modality) → kmeans → train (per modality) → … → evaluate

Each step reads its inputs from paths and writes its outputs to paths, so the same function runs
inside ``xdc run`` (one process, one folder), a Kubeflow component (one pod, artifacts passed by
KFP) and a DVC stage. A step's random choices depend only on ``cfg.seed`` and the iteration
number, never on what ran before it in the same process: any split of the loop into processes
gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed, metrics  # metrics: the live training monitor
from .config import MODALITIES, Config
from .diagnosis import findings
from .dataset import ClipDataset, read_index
from .decode import DatasetMismatch, check_accepted, decode_dataset
from .device import resolve_device
from .embed import embed
from .errors import ConfigError, InputError, RunError
from .kmeans import Clustering, cross_modal_nmi, kmeans
from .layout import CROSS_MODAL, RunLayout
from .manifest import read_manifest
from .methods import feature_sets, targets
from .models import Modality, build_trunk
from .store import atomic_write, write_json
from .train import Reporter, train_encoder


@contextmanager
def named_inputs(step: str, inputs: dict[str, str | None]) -> Iterator[None]:
    """Re-raise a bad input or setting as one error naming the step and the input at fault.

    For callers that receive files as named artifacts (a Kubeflow component, a DVC stage): the
    step functions name paths; the operator needs the artifact's name too.
    """
    try:
        yield
    except (InputError, FileNotFoundError, DatasetMismatch) as err:
        msg = str(err)
        culprits = [f"{name!r} ({path})" for name, path in inputs.items() if path and str(path) in msg]
        where = ", ".join(culprits) or ", ".join(f"{n!r} ({p})" for n, p in inputs.items())
        raise InputError(f"{step}: bad input artifact {where}: {msg}") from None
    except (ConfigError, RunError) as err:
        raise RunError(f"{step}: {err}") from None


# -- the plan: checked before any heavy work --------------------------------------------------------


def pretrain_split(splits: list[str | None], wanted: str | None) -> str | None:
    """The split pretraining uses: ``wanted`` when the data has splits, else every video."""
    if wanted is None or all(s is None for s in splits):
        return None
    if wanted not in splits:
        present = sorted({s for s in splits if s})
        raise RunError(f"no video is in the pretraining split {wanted!r} (train.split); splits present: {present}")
    return wanted


def check_plan(
    rows: list[tuple[str | None, str | None]], cfg: Config, evaluate: bool, source: str, pretrain: bool = True
) -> None:
    """Validate a run against ``(label, split)`` of every video; raise :class:`RunError` with what to change."""
    if pretrain:
        split = pretrain_split([s for _, s in rows], cfg.train.split)
        n_pretrain = sum(1 for _, s in rows if split is None or s == split)
        check_k(cfg.cluster.k, n_pretrain, source + (f", split {split!r}" if split else ""))
    if evaluate:
        for role, name in (("train", cfg.evaluate.train_split), ("test", cfg.evaluate.test_split)):
            labelled = sum(1 for label, s in rows if s == name and label)
            if labelled == 0:
                raise RunError(
                    f"evaluation needs labelled videos in the {role} split {name!r} (evaluate.{role}_split), "
                    f"but {source} has none; add label and split columns, or pass --no-eval to pretrain only"
                )


def check_k(k: int, videos: int, source: str) -> None:
    """k-means needs at least as many videos as clusters."""
    if k > videos:
        raise RunError(f"k={k} (cluster.k) is larger than the number of pretraining videos ({videos} in {source}): "
                       "choose a k at most that, or add videos")


def check_decoded(root: Path, cfg: Config, evaluate: bool, pretrain: bool = True, source: str | None = None) -> None:
    """:func:`check_plan` for a decoded dataset folder (``source``: how errors name it; default the folder)."""
    entries = read_index(root)
    check_plan([(e.label, e.split) for e in entries], cfg, evaluate, source or str(root), pretrain)


def pretrain_videos(root: Path, cfg: Config) -> int:
    """How many videos of a decoded dataset pretraining uses."""
    entries = read_index(root)
    split = pretrain_split([e.split for e in entries], cfg.train.split)
    return sum(1 for e in entries if split is None or e.split == split)


# -- decode ---------------------------------------------------------------------------------------


def sample_manifest(folder: Path, log: Any = print) -> Path:
    """The embedded sample dataset's manifest in ``folder``, written there first if absent."""
    manifest = Path(folder) / "manifest.csv"
    if not manifest.is_file():
        from .sample_data import make_sample_dataset

        log(f"writing the embedded sample dataset to {manifest.parent}")
        make_sample_dataset(manifest.parent)
    return manifest


def decode_step(
    manifest: str | Path, out: Path, cfg: Config, evaluate: bool, progress: bool = True, pretrain: bool = True
) -> dict[str, Any]:
    """Check the plan against the manifest, decode it into ``out``, and check again on what was
    accepted (quarantined videos can leave a split empty). Returns the decode summary."""
    rows = read_manifest(manifest)
    check_plan([(r.label, r.split) for r in rows], cfg, evaluate, str(manifest), pretrain)
    summary = decode_dataset(manifest, out, cfg, progress=progress)
    check_accepted(summary, out)
    check_decoded(out, cfg, evaluate, pretrain, source=f"{out} (after decoding)")
    return summary


# -- encoders ----------------------------------------------------------------------------------------


def init_encoder(modality: Modality, cfg: Config) -> nn.Module:
    """The random-init trunk of ``modality``: a pure function of ``cfg.seed``, the width and
    (video) ``model.video_arch``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed * len(MODALITIES) + MODALITIES.index(modality))
        return build_trunk(modality, getattr(cfg.model, f"{modality}_width"), cfg.model.video_arch)


def load_encoder(modality: Modality, cfg: Config, path: Path | None) -> nn.Module:
    """The trunk saved at ``path`` (a torchvision-style state dict), or the random init when None."""
    trunk = init_encoder(modality, cfg)
    if path is None:
        return trunk
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{modality} encoder checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        trunk.load_state_dict(state)
    except Exception as err:  # torch raises several types for truncated or foreign files
        arch = f"{cfg.model.video_arch} (model.video_arch) " if modality == "video" else ""
        raise InputError(
            f"{path} is not a {modality} encoder {arch}of width {getattr(cfg.model, f'{modality}_width')} "
            f"(model.{modality}_width): {str(err).splitlines()[0]}"
        ) from None
    return trunk


def save_encoder(trunk: nn.Module, path: Path) -> None:
    """Write the trunk's state dict atomically (a killed step never leaves a truncated checkpoint)."""
    with atomic_write(path) as f:
        torch.save(trunk.state_dict(), f)


def init_step(cfg: Config, out: Path) -> list[Path]:
    """The random-init encoders ("iteration 0") → ``out``/{video,audio}_encoder.pt."""
    written = [Path(out) / f"{m}_encoder.pt" for m in MODALITIES]
    for m, path in zip(MODALITIES, written, strict=True):
        save_encoder(init_encoder(m, cfg), path)
    return written


def _pretrain_split_of(root: Path, cfg: Config) -> str | None:
    return pretrain_split([e.split for e in read_index(root)], cfg.train.split)


# -- embed ---------------------------------------------------------------------------------------


def embed_step(
    data: Path, modality: Modality, cfg: Config, encoder: Path | None, out: Path, progress: bool = True
) -> Path:
    """Per-video features of the pretraining videos of the decoded dataset ``data`` → ``out``
    (.npz: features [N, D], index, labels)."""
    data = Path(data)
    split = _pretrain_split_of(data, cfg)
    dataset = ClipDataset(data, cfg.data, "eval", split, (modality,), clips=cfg.embed.clips)
    trunk = load_encoder(modality, cfg, encoder)
    device = resolve_device(cfg.device)
    with distributed.process_group(device) as world:  # several ranks under torchrun: each embeds a share
        feats, index, labels = embed(trunk, dataset, modality, cfg.embed.batch_size, cfg.embed.workers,
                                     distributed.rank_device(device), progress)
        if world.main:
            with atomic_write(out) as f:
                np.savez(f, features=feats.astype(np.float32), index=index, labels=labels)
        distributed.barrier()  # the file exists for every rank once the step returns
    return Path(out)


def _load_npz(path: Path, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:
        raise InputError(f"{what} file {path} is not a readable .npz: {err}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise InputError(f"{what} file {path} lacks {missing} (has {sorted(arrays)})")
    return arrays


# -- k-means ---------------------------------------------------------------------------------------


def kmeans_step(
    video_features: Path, audio_features: Path, cfg: Config, iteration: int, out: Path, stats: Path | None = None,
    previous: Path | None = None, data: Path | None = None, gallery: Path | None = None,
) -> dict[str, Any]:
    """Cluster the features as ``cfg.cluster.method`` says → ``out`` (.npz, one assignment array per
    clustering). Returns each clustering's statistics (:func:`cluster_statistics`), also written
    to ``stats`` (kmeans.json). ``previous``: the previous iteration's clusters, for the NMI
    statistic (ignored at iteration 1). ``gallery``: also write the clusters' gallery page there
    (:mod:`xdc_core.gallery`), with thumbnails from the decoded dataset ``data``."""
    if gallery is not None and data is None:
        raise ConfigError("the cluster gallery needs the decoded dataset: its thumbnails come from the videos")
    loaded = load_features({"video": video_features, "audio": audio_features})
    check_k(cfg.cluster.k, len(loaded["video"]["index"]), str(video_features))
    labels = loaded["video"]["labels"]
    prev = _load_npz(previous, "previous clusters", ()) if previous is not None and iteration > 1 else {}
    sets = feature_sets(cfg.cluster.method, loaded["video"]["features"], loaded["audio"]["features"])
    clusterings = {name: cluster_features(x, cfg, iteration, prev.get(name), labels) for name, x in sets.items()}
    with atomic_write(out) as f:
        np.savez(f, **{name: c.assignments for name, c in clusterings.items()})
    result = cluster_statistics(clusterings, loaded, cfg, iteration, labels)
    if gallery is not None:  # before the statistics, which mark the step done
        from .gallery import write_gallery  # PIL and the page: only when asked for

        clustered = {name: (sets[name], c.assignments) for name, c in clusterings.items()}
        write_gallery(gallery, Path(data), cfg, iteration, clustered, labels, loaded["video"]["index"], result)
    if stats is not None:
        write_json(stats, {"step": "kmeans", "iteration": iteration, "method": cfg.cluster.method,
                           "k": cfg.cluster.k, "clusters": result})
    return result


def load_features(paths: dict[str, Path]) -> dict[str, dict[str, np.ndarray]]:
    """Each modality's features file (embed's output), checked to be of the same videos."""
    loaded = {m: _load_npz(paths[m], f"{m} features", ("features", "index", "labels")) for m in MODALITIES}
    if not np.array_equal(loaded["video"]["index"], loaded["audio"]["index"]):
        raise InputError(f"video features {paths['video']} and audio features {paths['audio']} are of different videos")
    return loaded


def cluster_features(x: np.ndarray, cfg: Config, iteration: int, previous: np.ndarray | None,
                     labels: np.ndarray) -> Clustering:
    """k-means of one feature set with the settings' k, PCA and seed (a function of ``cfg.seed`` and the iteration)."""
    return kmeans(
        x, cfg.cluster.k, seed=cfg.seed * 1000 + iteration, pca_dim=cfg.cluster.pca_dim, niter=cfg.cluster.niter,
        use_gpu=resolve_device(cfg.device).type == "cuda", previous=previous,
        labels=labels if (labels >= 0).any() else None,
    )


def cluster_statistics(clusterings: dict[str, Clustering], loaded: dict[str, dict[str, np.ndarray]], cfg: Config,
                       iteration: int, labels: np.ndarray) -> dict[str, Any]:
    """Each clustering's statistics, and whether the modalities' clusters agree (``CROSS_MODAL``),
    for every method: CDC clusters each modality for this statistic only. That agreement is the
    signal XDC's cross-modal targets live on."""
    result: dict[str, Any] = {name: c.stats.to_dict() for name, c in clusterings.items()}
    per_modality = {m: clusterings[m] if m in clusterings else
                    cluster_features(loaded[m]["features"], cfg, iteration, None, labels) for m in MODALITIES}
    result[CROSS_MODAL] = cross_modal_nmi(per_modality["video"].assignments, per_modality["audio"].assignments,
                                          cfg.seed * 1000 + iteration)
    return result


# -- train -------------------------------------------------------------------------------------------


def train_step(
    data: Path,
    modality: Modality,
    cfg: Config,
    iteration: int,
    clusters: Path,
    encoder: Path | None,
    out: Path,
    checkpoints: str | Path | None = None,
    progress: bool = True,
    stats: Path | None = None,
) -> dict[str, Any]:
    """Train the ``modality`` encoder (from ``encoder``, or random init) on the pseudo-labels its
    method gives it → ``out``. ``checkpoints`` (a folder or an object-store prefix) keeps resumable
    checkpoints (every epoch and every ``train.checkpoint_minutes``) so a rerun continues.
    Under torchrun (several ranks) the ranks train data-parallel and rank 0 writes.
    Returns the training history, also written to ``stats`` (train_<modality>.json)."""
    assignments = _load_npz(clusters, "clusters", ())
    try:
        heads = targets(cfg.cluster.method, assignments)[modality]
    except ValueError as err:
        raise InputError(f"clusters file {clusters} does not fit method {cfg.cluster.method!r}: {err}") from None
    result = train_on_targets(data, modality, cfg, iteration, heads, encoder, out, checkpoints, progress,
                              source=clusters)
    if stats is not None and distributed.world().main:
        write_json(stats, {"step": "train", "iteration": iteration, "modality": modality,
                           "method": cfg.cluster.method, **result})
    return result


def train_on_targets(
    root: Path,
    modality: Modality,
    cfg: Config,
    iteration: int,
    heads: list[np.ndarray],
    encoder: Path | None,
    out: Path,
    ckpt_dir: str | Path | None = None,
    progress: bool = True,
    source: Path | str = "targets",
    log: Any = print,
) -> dict[str, Any]:
    """:func:`train_step` with the targets given as arrays, one per head (e.g. class labels for the
    supervised upper bound)."""
    root = Path(root)
    split = _pretrain_split_of(root, cfg)
    train_set = ClipDataset(root, cfg.data, "train", split, (modality,))
    val_set = ClipDataset(root, cfg.data, "eval", split, (modality,), clips=1)
    if any(len(h) != len(train_set) for h in heads):
        raise InputError(
            f"{source} has {len(heads[0])} assignments but {root} has {len(train_set)} pretraining videos"
        )
    trunk = load_encoder(modality, cfg, encoder)
    device = resolve_device(cfg.device)
    with distributed.process_group(device) as world:  # several ranks under torchrun: data parallel
        result, _ = train_encoder(
            trunk, modality, train_set, val_set, heads, cfg.train, cfg.seed * 1000 + iteration,
            distributed.rank_device(device), ckpt_dir=ckpt_dir, progress=progress,
            observer=Reporter(log, metrics.TrainMonitor(modality, cfg.cluster.method, iteration)),
            run_seed=cfg.seed,  # early stopping's held-out set: one per run, never trained on by either encoder
        )
        if world.main:
            save_encoder(trunk, Path(out))
        distributed.barrier()
    return result.__dict__.copy() | {"processes": world.size}


# -- evaluate ----------------------------------------------------------------------------------------


def evaluate_step(
    data: Path, cfg: Config, encoders: dict[str, Path], progress: bool = True, log: Any = print
) -> dict[str, Any]:
    """Linear probe (and finetuning when ``evaluate.finetune``) of the given encoders and of the
    random-init ones, on ``evaluate.train_split`` → ``evaluate.test_split``. Returns the results,
    per-video outcomes included for paired comparisons (metrics.json holds :func:`metrics_summary`)."""
    from .evaluate import evaluate_encoders  # the probe code is only needed here

    data = Path(data)
    check_decoded(data, cfg, evaluate=True, pretrain=False)
    trunks = {m: load_encoder(m, cfg, encoders[m]) for m in MODALITIES}
    return evaluate_encoders(data, cfg, trunks, {m: init_encoder(m, cfg) for m in MODALITIES}, progress, log)


def evaluate_run_step(
    data: Path, cfg: Config, video_encoder: Path, audio_encoder: Path, out: Path | None, plots: Path | None = None,
    run: Path | None = None, progress: bool = True, log: Any = print,
) -> dict[str, Any]:
    """:func:`evaluate_step` of the two encoders → metrics.json at ``out`` (None: not written); with ``plots``, the plot
    data of the iterations of the run folder ``run`` and their curves (:func:`write_evaluation`)."""
    if plots is not None and run is None:
        raise ConfigError("the plot data needs the run folder: it gathers the statistics of its iterations")
    # the iteration statistics are read first: a missing one fails before the (long) evaluation
    iterations = iteration_stats(RunLayout(Path(run)), cfg) if run is not None else []
    results = evaluate_step(data, cfg, {"video": video_encoder, "audio": audio_encoder}, progress, log)
    write_evaluation(cfg, results, iterations, out, plots)
    return results


def iteration_stats(layout: RunLayout, cfg: Config) -> list[dict[str, Any]]:
    """The statistics of iterations 1 … ``cluster.iterations`` of the run in ``layout``."""
    return [layout.iteration_stats(it) for it in range(1, cfg.cluster.iterations + 1)]


def write_evaluation(cfg: Config, results: dict[str, Any] | None, iterations: list[dict[str, Any]],
                     out: Path | None = None, plots: Path | None = None) -> dict[str, Any]:
    """What every caller writes of an evaluation: metrics.json (:func:`metrics_summary`, with the
    findings of :func:`xdc_core.diagnosis.findings` when the run is not learning) at ``out``,
    the plot data of ``iterations`` (:meth:`RunLayout.iteration_stats` of each) and the learning
    curves drawn from it (curves.png) in ``plots``. ``results`` None: not evaluated. Returns the summary."""
    from .plots import write_plots  # the chart code is only needed here

    summary = metrics_summary(cfg, results or {})
    # The signs that the run is not learning (xdc_core/diagnosis.py), in words for the reader.
    found = findings(iterations, cfg.cluster.k, cfg.train.learned_margin)
    summary["learning_findings"] = len(found)
    if found:
        summary["findings"] = " | ".join(found)
    if out is not None:
        write_json(out, summary)
    if plots is not None:
        write_plots(Path(plots), iterations, summary if results is not None else None)
    return summary


def metrics_summary(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    """What metrics.json holds, and ``dvc metrics show`` tabulates: the run's method, k and
    iterations, each top-1 with its chosen lr and video counts, the paired differences; not the
    per-video outcomes nor the validation top-1 of each lr of the grid (lists, confusing columns)."""
    def prune(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        return {k: prune(v) for k, v in node.items()
                if not (isinstance(v, list) and k != "ci95") and k != "val_top1_by_lr"}

    return prune({"method": cfg.cluster.method, "k": cfg.cluster.k, "iterations": cfg.cluster.iterations, **results})

