"""The ``final-encoder`` component: the encoder a run returns, its last iteration's or its random init."""

from kfp.dsl import Input, Model, Output


def final_encoder(trained: Input[Model], modality: str, settings: str, encoder: Output[Model]):
    """The run's final ``modality`` encoder: ``trained`` (the last iteration's), unless in none of
    the iterations did its held-out pseudo-label loss beat chance by ``train.learned_margin``
    standard errors (judged where early stopping was on); then the random init of the settings'
    ``seed``, as ``xdc run`` decides (xdc_core.diagnosis.final_iteration). The iterations' held-out
    losses come with ``trained`` (its metadata's ``history``)."""
    import shutil

    from xdc_core.config import parse_config
    from xdc_core.diagnosis import RANDOM_INIT_WHY, final_iteration
    from xdc_core.steps import init_encoder, save_encoder

    cfg = parse_config(settings)
    history = trained.metadata.get("history", [])
    source = final_iteration(history, cfg)
    if source:
        shutil.copyfile(trained.path, encoder.path)
    else:
        print(f"warning: the final {modality} encoder is the random init: {RANDOM_INIT_WHY}")
        save_encoder(init_encoder(modality, cfg), encoder.path)
    encoder.metadata.update({**trained.metadata, "final": True, "from_iteration": source})
