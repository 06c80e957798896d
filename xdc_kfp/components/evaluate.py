"""The ``evaluate`` component: linear probe (and finetuning) of the two encoders against random init."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(
    decoded: Input[Dataset],
    video_encoder: Input[Model],
    audio_encoder: Input[Model],
    settings: str,
    metrics: Output[Metrics],
    report: Output[Artifact],
):
    """Top-1 accuracy on ``evaluate.test_split`` of a classifier trained on ``evaluate.train_split``
    over each encoder (and over the random init of the settings' ``seed``, the baseline).
    ``metrics`` holds the top-1 numbers for the KFP UI; ``report`` the whole result as JSON."""
    import json
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.report import flat_metrics
    from xdc_core.steps import evaluate_step, named_inputs

    cfg = parse_config(settings)
    inputs = {"decoded": decoded.path, "video_encoder": video_encoder.path, "audio_encoder": audio_encoder.path}
    with named_inputs("evaluate", inputs):
        results = evaluate_step(Path(decoded.path), cfg,
                                {"video": Path(video_encoder.path), "audio": Path(audio_encoder.path)}, progress=False)
    for name, value in flat_metrics(results).items():
        metrics.log_metric(name, value)
    Path(report.path).write_text(json.dumps(results, indent=2) + "\n")
