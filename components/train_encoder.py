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
    gpus: int = 1,
    nodes: int = 1,
    image: str = "",
    placement: str = "{}",
    job_timeout_h: float = 168.0,
):
    """Train the ``modality`` encoder, from ``previous_encoder`` (none: the random init of the
    settings' ``seed``), to predict the clusters ``cluster.method`` gives it (XDC: the other
    modality's), with the ``train`` settings. Writes the trunk's state dict (loads into
    torchvision's architecture of ``model.video_arch`` / resnet18 at width 64).

    ``gpus`` > 1: one data-parallel process per GPU of this pod (torchrun's engine); ``nodes`` > 1:
    a Kubeflow PyTorchJob of ``nodes`` pods with ``gpus`` GPUs each, in ``image``, placed as the
    ``placement`` JSON says (xdc_kfp.placement.Placement), awaited up to ``job_timeout_h`` hours.
    ``train.batch_size`` is per GPU; ``train.lr_scaling`` says how the lr follows the global batch.
    Resumable checkpoints go next to the output (``<encoder uri>.work/checkpoints``, every
    ``train.checkpoint_minutes``): a retried or preempted task continues from the last one.
    """
    import json
    from pathlib import Path

    from xdc_core import metrics, store
    from xdc_core.config import parse_config
    from xdc_core.diagnosis import JUDGED_STATISTICS
    from xdc_core.errors import ConfigError
    from xdc_core.metrics import exported
    from xdc_core.step_specs import TRAIN, Slot, call
    from xdc_core.steps import named_inputs

    cfg = parse_config(settings)
    if gpus < 1 or nodes < 1:
        raise ConfigError(f"gpus ({gpus}) and nodes ({nodes}) must be at least 1")
    work = encoder.uri.rstrip("/") + ".work"  # the same for every try of this task: where it resumes from
    step = f"train-{modality}-{iteration}"
    inputs = {"decoded": decoded.path, "clusters": clusters.path,
              "previous_encoder": previous_encoder.path if previous_encoder else None}
    with exported(step), named_inputs(f"train-encoder ({modality}, iteration {iteration})", inputs):
        if nodes > 1:
            from xdc_kfp.placement import Placement
            from xdc_kfp.training_job import train_with_pytorchjob

            place = Placement(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(placement).items()})
            args = ["--data", decoded.uri, "--modality", modality, "--iteration", str(iteration),
                    "--clusters", clusters.uri, "--out", f"{work}/encoder.pt", "--stats", f"{work}/train.json",
                    "--checkpoints", f"{work}/checkpoints"]
            args += ["--encoder", previous_encoder.uri] if previous_encoder else []
            train_with_pytorchjob(run_id=metrics.run_id(), step=step, image=image, placement=place, nodes=nodes,
                                  gpus_per_node=gpus, settings=settings, work_uri=work, step_args=args,
                                  timeout_s=job_timeout_h * 3600)
            store.download_file(f"{work}/encoder.pt", encoder.path)
            result = json.loads(store.read_bytes(f"{work}/train.json"))
        else:
            result = call(TRAIN, cfg, {
                "data": Path(decoded.path), "clusters": Path(clusters.path),
                "encoder": Path(previous_encoder.path) if previous_encoder else None, "out": Path(encoder.path),
                "stats": None, "checkpoints": f"{work}/checkpoints",
            }, Slot.of(iteration, iteration, modality), processes=gpus)
    # every iteration's losses so far: the final-encoder task judges the run by them, evaluate draws them
    judged = {key: result.get(key) for key in JUDGED_STATISTICS}
    history = [*(previous_encoder.metadata.get("history", []) if previous_encoder else []),
               {"iteration": iteration, **judged}]
    encoder.metadata.update({
        "modality": modality, "iteration": iteration, "method": cfg.cluster.method, "epochs": result["epochs"],
        "best_epoch": result["best_epoch"], "stop_reason": result["stop_reason"],
        "resumed_from_epoch": result["resumed_from"], "gpus": gpus * nodes,
        "train_loss": result["train_loss"], "val_loss": result["val_loss"], "history": history,
        "framework": "pytorch", "architecture": cfg.model.video_arch if modality == "video" else "resnet18 (1-channel)",
    })
