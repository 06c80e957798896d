"""The XDC pretraining pipeline:

    settings → decode (sharded) → [embed ∥ embed → k-means → train ∥ train] × N → evaluate

KFP v2 has no sequential loop over artifacts, so the clustering iterations are unrolled when the
pipeline is compiled (``xdc pipeline compile --iterations N``). The run parameters (data URI,
method, k, epochs, lr, batch size, seed) default to the settings it was compiled with; the whole
settings tree is a parameter too, for what the others do not cover. The first task merges the
run parameters into the settings; every other task reads only its output. Three more parameters
scale the run out over more machines: ``decode_shards`` (decode tasks side by side,
:mod:`.decode_fanout`), ``gpus_per_node`` (the GPUs of each train-encoder task) and ``nodes``
(nodes of each train-encoder task).
"""

# No `from __future__ import annotations`: kfp reads the pipeline functions' annotations as types.
import dataclasses
import json
from collections.abc import Callable

from kfp import dsl

from xdc_core.config import MODALITIES, Config
from xdc_kfp import DEFAULT_IMAGE
from xdc_kfp.components import build_components
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import settings_text

from .decode_fanout import build_decode_pipeline
from .placement import anywhere, on_gpu, with_object_store

PIPELINE_NAME = "xdc-pretrain"


def build_pretrain_pipeline(
    iterations: int, cfg: Config, image: str = DEFAULT_IMAGE, placement: Placement | None = None
) -> Callable[..., None]:
    """The pretraining pipeline with ``iterations`` clustering iterations, its parameters'
    defaults taken from ``cfg``."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1 (got {iterations})")
    c = build_components(image)
    place = placement or Placement()
    sharded_decode = build_decode_pipeline(c, place)
    # with nodes > 1 a train-encoder task starts a training job of pods in this image, placed the same way
    training_job_placement = json.dumps(dataclasses.asdict(place))

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"Self-supervised pretraining of a video and an audio encoder by deep clustering "
        f"(XDC, SDC, MDC or CDC), {iterations} clustering iterations, then linear-probe evaluation.",
    )
    def xdc_pretrain(
        data_uri: str = "",
        method: str = cfg.cluster.method,
        k: int = cfg.cluster.k,
        epochs: int = cfg.train.total_epochs,
        lr: float = cfg.train.lr,
        batch_size: int = cfg.train.batch_size,
        seed: int = cfg.seed,
        run_evaluation: bool = True,
        settings: str = settings_text(cfg),
        decode_shards: int = 1,
        gpus_per_node: int = 1,
        nodes: int = 1,
    ) -> None:
        merge = c.settings(settings=settings, method=method, k=k, epochs=epochs, lr=lr, batch_size=batch_size,
                           seed=seed)
        anywhere(merge, place).set_display_name("settings")
        merged = merge.output
        run = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # the grouping key of the metrics every task pushes

        decode = sharded_decode(data_uri=data_uri, settings=merged, run_evaluation=run_evaluation, shards=decode_shards)
        decode.set_display_name("decode")
        decoded = decode.output

        encoders: dict[str, dsl.PipelineChannel] = {}  # absent: the random init
        previous: dict[str, dsl.PipelineChannel] = {}
        for it in range(1, iterations + 1):
            features = {}
            for m in MODALITIES:
                embed = c.embed(decoded=decoded, modality=m, iteration=it, settings=merged, run_id=run,
                                **({"encoder": encoders[m]} if m in encoders else {}))
                on_gpu(embed, place).set_display_name(f"iter {it}: embed {m}")
                features[m] = embed.outputs["features"]
            kmeans = c.kmeans(video_features=features["video"], audio_features=features["audio"], decoded=decoded,
                              iteration=it, settings=merged, run_id=run,
                              **({"previous_clusters": previous["clusters"]} if previous else {}))
            on_gpu(kmeans, place).set_display_name(f"iter {it}: k-means")
            previous = {"clusters": kmeans.outputs["clusters"]}
            for m in MODALITIES:
                train = c.train_encoder(decoded=decoded, clusters=kmeans.outputs["clusters"], modality=m, iteration=it,
                                        settings=merged, run_id=run, gpus=gpus_per_node, nodes=nodes,
                                        image=image, placement=training_job_placement,
                                        **({"previous_encoder": encoders[m]} if m in encoders else {}))
                # the GPUs of this task; with nodes > 1 each node of the training job has as many. The
                # object store's keys: its resumable checkpoints go there (a retry continues from them)
                on_gpu(with_object_store(train, place), place, gpus=gpus_per_node).set_display_name(
                    f"iter {it}: train {m} encoder")
                encoders[m] = train.outputs["encoder"]

        with dsl.If(run_evaluation == True, name="run-evaluation"):  # noqa: E712 (a pipeline condition, not Python)
            # the last clusters carry every iteration's statistics: the evaluate task draws the curves
            evaluate = c.evaluate(decoded=decoded, video_encoder=encoders["video"], audio_encoder=encoders["audio"],
                                  settings=merged, clusters=previous["clusters"], run_id=run)
            on_gpu(evaluate, place).set_display_name("evaluate")

    return xdc_pretrain
