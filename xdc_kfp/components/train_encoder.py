"""The ``train-encoder`` component: train one encoder on the pseudo-labels its method assigns it."""

from typing import Optional

from kfp.dsl import Artifact, Dataset, Input, Model, Output


def train_encoder(
    decoded: Input[Dataset],
    clusters: Input[Artifact],
    modality: str,
    iteration: int,
    settings: str,
    encoder: Output[Model],
    previous_encoder: Optional[Input[Model]] = None,  # noqa: UP045 (kfp reads Optional, not X | None)
    run_id: str = "",
):
    """Train the ``modality`` encoder, from ``previous_encoder`` (none: the random init of the
    settings' ``seed``), to predict the clusters ``cluster.method`` gives it (XDC: the other
    modality's), with the ``train`` settings. Writes the trunk's state dict (loads into
    torchvision's r2plus1d_18 / resnet18 at width 64).
    ``run_id`` (the pipeline's run id) groups the metrics the task pushes to ``$XDC_PUSHGATEWAY``.
    """
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.metrics import exported
    from xdc_core.steps import named_inputs, train_step

    cfg = parse_config(settings)
    inputs = {"decoded": decoded.path, "clusters": clusters.path,
              "previous_encoder": previous_encoder.path if previous_encoder else None}
    with exported(f"train-{modality}-{iteration}", run_id or None), \
            named_inputs(f"train-encoder ({modality}, iteration {iteration})", inputs):
        result = train_step(Path(decoded.path), modality, cfg, iteration, Path(clusters.path),
                            Path(previous_encoder.path) if previous_encoder else None, Path(encoder.path),
                            progress=False)
    encoder.metadata.update({
        "modality": modality, "iteration": iteration, "method": cfg.cluster.method, "epochs": result["epochs"],
        "best_epoch": result["best_epoch"], "stop_reason": result["stop_reason"],
        "train_loss": result["train_loss"], "val_loss": result["val_loss"],
        "framework": "pytorch", "architecture": "r2plus1d_18" if modality == "video" else "resnet18 (1-channel)",
    })
