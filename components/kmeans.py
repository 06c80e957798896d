"""The ``kmeans`` component: cluster the features as the method says; the assignments are the pseudo-labels."""

from typing import Optional

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output


def kmeans(
    video_features: Input[Dataset],
    audio_features: Input[Dataset],
    decoded: Input[Dataset],
    iteration: int,
    settings: str,
    clusters: Output[Artifact],
    cluster_metrics: Output[Metrics],
    gallery: Output[HTML],
    previous_clusters: Optional[Input[Artifact]] = None,  # noqa: UP045 (kfp reads Optional, not X | None)
):
    """k-means (faiss) into ``cluster.k`` clusters of the feature sets ``cluster.method`` clusters
    (SDC/MDC/XDC: each modality; CDC: both joined). ``clusters`` (.npz) holds one assignment array
    per clustering; their statistics (sizes, NMI to ``previous_clusters``, purity when labelled)
    go to its metadata and to ``cluster_metrics``, so they show in the KFP UI, and so does
    ``gallery``, a page of each cluster's typical videos (thumbnails from ``decoded``). The
    metadata's ``history`` accumulates every iteration's statistics so far, for the learning
    curves the evaluate component draws."""
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.metrics import exported
    from xdc_core.step_specs import KMEANS, Slot, call
    from xdc_core.steps import named_inputs
    from xdc_kfp.artifacts import log_metrics

    cfg = parse_config(settings)
    inputs = {
        "video_features": video_features.path,
        "audio_features": audio_features.path,
        "decoded": decoded.path,
        "previous_clusters": previous_clusters.path if previous_clusters else None,
    }
    with exported(f"kmeans-{iteration}"), named_inputs(f"kmeans (iteration {iteration})", inputs):
        stats = call(KMEANS, cfg, {
            "video_features": Path(video_features.path), "audio_features": Path(audio_features.path),
            "previous": Path(previous_clusters.path) if previous_clusters else None, "data": Path(decoded.path),
            "out": Path(clusters.path), "stats": None, "gallery": Path(gallery.path),
        }, Slot.of(iteration, iteration))
    history = list(previous_clusters.metadata.get("history", [])) if previous_clusters else []
    clusters.metadata.update({"method": cfg.cluster.method, "k": cfg.cluster.k, "iteration": iteration,
                              "stats": stats, "history": [*history, {"iteration": iteration, "clusters": stats}]})
    gallery.metadata.update({"iteration": iteration, "method": cfg.cluster.method, "k": cfg.cluster.k})
    log_metrics(cluster_metrics, {f"{name}_{key}": value for name, values in stats.items()
                                  for key, value in values.items() if isinstance(value, (int, float)) and key != "k"})
