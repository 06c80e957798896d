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
    the metadata of the last k-means task's ``clusters``, when given), the encoders' losses (the
    ``history`` in their metadata) and the top-1 numbers."""
    import json
    import tempfile
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.curves import curves_html
    from xdc_core.metrics import exported
    from xdc_core.report import flat_metrics
    from xdc_core.step_specs import EVALUATE, call
    from xdc_core.steps import named_inputs, write_evaluation
    from xdc_kfp.artifacts import log_metrics

    cfg = parse_config(settings)
    inputs = {"decoded": decoded.path, "video_encoder": video_encoder.path, "audio_encoder": audio_encoder.path}
    with exported("evaluate"), named_inputs("evaluate", inputs):
        results = call(EVALUATE, cfg, {"data": Path(decoded.path), "video_encoder": Path(video_encoder.path),
                                       "audio_encoder": Path(audio_encoder.path), "out": None, "plots": None,
                                       "run": None})
    Path(report.path).write_text(json.dumps(results, indent=2) + "\n")
    # KFP stores metadata numbers as floats: the iteration numbers come back as 1.0, 2.0, ...
    history = clusters.metadata.get("history", []) if clusters else []
    # and each encoder's metadata its training runs' losses (an imported checkpoint's: none)
    trained = {m: {int(t["iteration"]): t for t in e.metadata.get("history", [])}
               for m, e in (("video", video_encoder), ("audio", audio_encoder))}
    history = [h | {"iteration": int(h["iteration"]),
                    "train": {m: runs[int(h["iteration"])] for m, runs in trained.items() if int(h["iteration"]) in runs}}
               for h in history]
    with tempfile.TemporaryDirectory() as plots:  # the curves every runner draws, from the plot data
        summary = write_evaluation(cfg, results, history, plots=Path(plots))
        png = (Path(plots) / "curves.png").read_bytes()
    # How many signs of a run that is not learning (xdc_core/diagnosis.py; the words are in the log).
    for finding in summary.get("findings", "").split(" | ") if summary.get("findings") else []:
        print(f"warning: {finding}")
    log_metrics(metrics, flat_metrics(results) | {"learning_findings": summary["learning_findings"]})
    Path(curves.path).write_text(curves_html(f"{cfg.cluster.method.upper()}: learning curves", png))
