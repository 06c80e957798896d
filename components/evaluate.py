"""The ``evaluate`` component: linear probe (and finetuning) of the two encoders against random init."""

from typing import Optional

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(
    decoded: Input[Dataset],
    video_encoder: Input[Model],
    audio_encoder: Input[Model],
    settings: str,
    metrics: Output[Metrics],
    report: Output[Artifact],
    curves: Output[HTML],
    clusters: Optional[Input[Artifact]] = None,  # noqa: UP045 (kfp reads Optional, not X | None)
):
    """Top-1 accuracy on ``evaluate.test_split`` of a classifier trained on ``evaluate.train_split``
    over each encoder (and over the random init of the settings' ``seed``, the baseline).
    ``metrics`` holds the top-1 numbers for the KFP UI; ``report`` the whole result as JSON;
    ``curves`` the learning curves: the cluster statistics of every iteration (the ``history`` in
    the metadata of the last k-means task's ``clusters``, when given) and the top-1 numbers."""
    import json
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.metrics import exported
    from xdc_core.curves import curves_html, panels, render_png
    from xdc_core.plots import plot_rows
    from xdc_core.report import flat_metrics
    from xdc_core.steps import evaluate_step, metrics_summary, named_inputs
    from xdc_kfp.artifacts import log_metrics

    cfg = parse_config(settings)
    inputs = {"decoded": decoded.path, "video_encoder": video_encoder.path, "audio_encoder": audio_encoder.path}
    with exported("evaluate"), named_inputs("evaluate", inputs):
        results = evaluate_step(Path(decoded.path), cfg,
                                {"video": Path(video_encoder.path), "audio": Path(audio_encoder.path)}, progress=False)
    log_metrics(metrics, flat_metrics(results))
    Path(report.path).write_text(json.dumps(results, indent=2) + "\n")
    # KFP stores metadata numbers as floats: the iteration numbers come back as 1.0, 2.0, ...
    history = clusters.metadata.get("history", []) if clusters else []
    history = [h | {"iteration": int(h["iteration"])} for h in history]
    png = render_png(panels(plot_rows(history, metrics_summary(cfg, results))))
    Path(curves.path).write_text(curves_html(f"{cfg.cluster.method.upper()}: learning curves", png))
