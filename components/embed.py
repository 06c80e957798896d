"""The ``embed`` component: one feature vector per pretraining video from an encoder."""

from typing import Optional

from kfp.dsl import Dataset, Input, Model, Output


def embed(
    decoded: Input[Dataset],
    modality: str,
    iteration: int,
    settings: str,
    features: Output[Dataset],
    encoder: Optional[Input[Model]] = None,  # noqa: UP045 (kfp reads Optional, not X | None)
):
    """Features of the ``modality`` encoder (``encoder``; none: the random init of the settings'
    ``seed``) for every pretraining video of ``decoded``, as .npz (features, index, labels).
    """
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.metrics import exported
    from xdc_core.step_specs import EMBED, Slot, call
    from xdc_core.steps import named_inputs

    cfg = parse_config(settings)
    inputs = {"decoded": decoded.path, "encoder": encoder.path if encoder else None}
    with exported(f"embed-{modality}-{iteration}"), \
            named_inputs(f"embed ({modality}, iteration {iteration})", inputs):
        call(EMBED, cfg, {"data": Path(decoded.path), "encoder": Path(encoder.path) if encoder else None,
                          "out": Path(features.path)}, Slot.of(iteration, iteration, modality))
    features.metadata.update({"modality": modality, "iteration": iteration})
