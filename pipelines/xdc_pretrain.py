"""The XDC pretraining pipeline:

    settings → decode (sharded) → [embed ∥ embed → k-means → train ∥ train] × N → final ∥ final → evaluate

KFP v2 has no sequential loop over artifacts, so the clustering iterations are unrolled when the
pipeline is compiled (``xdc pipeline compile --iterations N``); N is in the pipeline's name. The
run form holds the data, the settings by name (``config``), the typed values a user changes per
run (:data:`xdc_kfp.run_parameters.RUN_PARAMETERS`) and the scale-out (``decode_shards``,
``gpus_per_node``, ``nodes``). The first task resolves them into the settings; every other task
reads only its output.
"""

# No `from __future__ import annotations`: kfp reads the pipeline functions' annotations as types.
import dataclasses
import json
from collections.abc import Callable

from kfp import dsl

from xdc_core.config import MODALITIES, Config, setting_value
from xdc_kfp import DEFAULT_IMAGE
from xdc_kfp.components import build_components
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import RUN_PARAMETERS, SAMPLE_BUDGET_CLIPS, SCALE_PARAMETERS

from .decode_fanout import build_decode_pipeline
from .scheduling import anywhere, on_cpu, on_gpu, with_object_store

PIPELINE_NAME = "xdc-pretrain"


def pipeline_name(iterations: int) -> str:
    """The name a pretraining pipeline shows in the KFP UI: the compiled iteration count is in it."""
    return f"{PIPELINE_NAME}-{iterations}it"


def parameter_docs(cfg: Config, config: str) -> str:
    """The ``Args:`` section of a pipeline's docstring, which KFP shows beside each run parameter.
    ``cfg``: the settings of the default ``config``, whose values the unset parameters keep."""
    shown = config if len(config) <= 40 else "the compiled settings"
    current = {name: setting_value(cfg, p.setting) for name, p in RUN_PARAMETERS.items()}
    lines = [
        "    data_uri: The manifest to pretrain on: an s3:// URI of a CSV with a row path,label,split per video "
        "(paths relative to it; labels are used only to evaluate). Empty: the embedded sample data (2000 "
        f"synthetic videos), allowed only with a training budget of at most {SAMPLE_BUDGET_CLIPS:,} clips per "
        "encoder and iteration (config cpu-demo).",
        f"    config: The settings: a preset (paper: the paper's recipe for GPUs; cpu-demo: slim encoders, small "
        f"clips), an s3:// URI of a YAML settings file, or the settings as YAML. Compiled default: {shown}.",
        "    overrides: Any other settings, as KEY=VALUE pairs separated by spaces, e.g. 'cluster.pca_dim=256 "
        "train.workers=8'. Empty: none.",
    ]
    for name, p in RUN_PARAMETERS.items():
        lines.append(f"    {name}: {p.help[0].upper()}{p.help[1:]} ({p.setting}). {p.unset!r} keeps the "
                     f"config's ({shown}: {current[name]!r}).")
    lines += [
        "    run_evaluation: Evaluate both encoders after pretraining (linear probe on the manifest's train/test "
        "split, against random init). Off for data without labelled splits.",
        *(f"    {name}: {what[0].upper()}{what[1:]}; at least 1." for name, what in SCALE_PARAMETERS.items()),
    ]
    return "\n".join(lines)


def build_pretrain_pipeline(
    iterations: int, cfg: Config, image: str = DEFAULT_IMAGE, placement: Placement | None = None,
    config: str | None = None, name: str | None = None,
) -> Callable[..., None]:
    """The pretraining pipeline with ``iterations`` clustering iterations. ``config``: the default
    of its ``config`` parameter (a preset name or URI; None: ``cfg`` itself, as JSON); ``cfg``:
    those settings, which also size the tasks' CPU requests (``placement``'s open ones)."""
    from xdc_kfp.run_parameters import settings_text

    if iterations < 1:
        raise ValueError(f"iterations must be at least 1 (got {iterations})")
    c = build_components(image)
    place = (placement or Placement()).resolved(cfg)
    sharded_decode = build_decode_pipeline(c, place)
    config = config or settings_text(cfg)
    # with nodes > 1 a train-encoder task starts a training job of pods in this image, placed the same way
    training_job_placement = json.dumps(dataclasses.asdict(place))
    unset = {name: p.unset for name, p in RUN_PARAMETERS.items()}

    def xdc_pretrain(
        data_uri: str = "",
        config: str = config,
        overrides: str = "",
        method: str = unset["method"],
        k: int = unset["k"],
        epochs: int = unset["epochs"],
        epoch_size: int = unset["epoch_size"],
        lr: float = unset["lr"],
        batch_size: int = unset["batch_size"],
        seed: int = unset["seed"],
        run_evaluation: bool = True,
        decode_shards: int = 1,
        gpus_per_node: int = 1,
        nodes: int = 1,
    ) -> None:
        merge = c.settings(config=config, overrides=overrides, method=method, k=k, epochs=epochs,
                           epoch_size=epoch_size, lr=lr, batch_size=batch_size, seed=seed, iterations=iterations,
                           data_uri=data_uri)
        with_object_store(anywhere(merge, place), place).set_display_name("settings")  # config may be an s3:// URI
        merged = merge.output

        decode = sharded_decode(data_uri=data_uri, settings=merged, run_evaluation=run_evaluation, shards=decode_shards)
        decode.set_display_name("decode")
        decoded = decode.output

        encoders: dict[str, dsl.PipelineChannel] = {}  # absent: the random init
        previous: dict[str, dsl.PipelineChannel] = {}
        for it in range(1, iterations + 1):
            features = {}
            for m in MODALITIES:
                embed = c.embed(decoded=decoded, modality=m, iteration=it, settings=merged,
                                **({"encoder": encoders[m]} if m in encoders else {}))
                on_gpu(embed, place).set_display_name(f"iter {it}: embed {m}")
                features[m] = embed.outputs["features"]
            kmeans = c.kmeans(video_features=features["video"], audio_features=features["audio"], decoded=decoded,
                              iteration=it, settings=merged,
                              **({"previous_clusters": previous["clusters"]} if previous else {}))
            on_gpu(kmeans, place).set_display_name(f"iter {it}: k-means")
            previous = {"clusters": kmeans.outputs["clusters"]}
            for m in MODALITIES:
                train = c.train_encoder(decoded=decoded, clusters=kmeans.outputs["clusters"], modality=m, iteration=it,
                                        settings=merged, gpus=gpus_per_node, nodes=nodes,
                                        image=image, placement=training_job_placement,
                                        **({"previous_encoder": encoders[m]} if m in encoders else {}))
                # the GPUs of this task; with nodes > 1 each node of the training job has as many. The
                # object store's keys: its resumable checkpoints go there (a retry continues from them)
                on_gpu(with_object_store(train, place), place, gpus=gpus_per_node).set_display_name(
                    f"iter {it}: train {m} encoder")
                encoders[m] = train.outputs["encoder"]

        for m in MODALITIES:  # the last iteration's encoder, or the random init of one that learned nothing
            final = c.final_encoder(trained=encoders[m], modality=m, settings=merged)
            on_cpu(final, place, cpu="1").set_display_name(f"final {m} encoder")
            encoders[m] = final.outputs["encoder"]

        with dsl.If(run_evaluation == True, name="run-evaluation"):  # noqa: E712 (a pipeline condition, not Python)
            # the last clusters carry every iteration's statistics: the evaluate task draws the curves
            evaluate = c.evaluate(decoded=decoded, video_encoder=encoders["video"], audio_encoder=encoders["audio"],
                                  settings=merged, clusters=previous["clusters"])
            on_gpu(evaluate, place).set_display_name("evaluate")

    # KFP shows the docstring's Args beside each parameter of the run form.
    xdc_pretrain.__doc__ = (
        f"Self-supervised pretraining of a video and an audio encoder by deep clustering (XDC, SDC, MDC or CDC): "
        f"{iterations} clustering iterations, then linear-probe evaluation. Image {image}.\n\n"
        f"Args:\n{parameter_docs(cfg, config)}\n")
    return dsl.pipeline(name=name or pipeline_name(iterations))(xdc_pretrain)
