"""The evaluation pipeline: a given pair of encoder checkpoints on a labelled dataset (UCF101 split 1).

The regression gate: CI submits it with the encoders of a change and compares the top-1
accuracies it reports with those of main.
"""

# No `from __future__ import annotations`: kfp reads the pipeline functions' annotations as types.
from collections.abc import Callable

from kfp import dsl

from xdc_core.config import Config, setting_value
from xdc_kfp import DEFAULT_IMAGE
from xdc_kfp.components import build_components
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import RUN_PARAMETERS, SCALE_PARAMETERS, settings_text

from .decode_fanout import build_decode_pipeline
from .scheduling import anywhere, on_gpu, with_object_store

PIPELINE_NAME = "ucf101-eval"


def build_eval_pipeline(
    cfg: Config, image: str = DEFAULT_IMAGE, placement: Placement | None = None, config: str | None = None
) -> Callable[..., None]:
    """Decode the labelled manifest at ``data_uri`` and evaluate the two encoder checkpoints on it.
    ``config``: the default of its ``config`` parameter (None: ``cfg`` itself, as JSON)."""
    c = build_components(image)
    place = (placement or Placement()).resolved(cfg)
    sharded_decode = build_decode_pipeline(c, place)
    config = config or settings_text(cfg)
    unset = {name: p.unset for name, p in RUN_PARAMETERS.items()}

    def ucf101_eval(
        data_uri: str,
        video_encoder_uri: str,
        audio_encoder_uri: str,
        config: str = config,
        overrides: str = "",
        seed: int = unset["seed"],
        decode_shards: int = 1,
    ) -> None:
        # Of the typed run parameters only the seed matters here: evaluation has its own
        # evaluate.* schedule (set through config or overrides).
        merge = c.settings(config=config, overrides=overrides, seed=seed, data_uri=data_uri,
                           **{name: value for name, value in unset.items() if name != "seed"})
        with_object_store(anywhere(merge, place), place).set_display_name("settings")
        # no pretraining here: the settings' k need not fit this dataset
        decode = sharded_decode(data_uri=data_uri, settings=merge.output, run_evaluation=True, shards=decode_shards,
                                check_pretraining=False)
        decode.set_display_name("decode")
        encoders = {}
        for m, uri in (("video", video_encoder_uri), ("audio", audio_encoder_uri)):
            imported = dsl.importer(artifact_uri=uri, artifact_class=dsl.Model, reimport=False,
                                    metadata={"modality": m})
            imported.set_display_name(f"import {m} encoder")
            encoders[m] = imported.output
        evaluate = c.evaluate(decoded=decode.output, video_encoder=encoders["video"],
                              audio_encoder=encoders["audio"], settings=merge.output)
        on_gpu(evaluate, place).set_display_name("evaluate")

    shown = config if len(config) <= 40 else "the compiled settings"
    ucf101_eval.__doc__ = f"""Linear-probe (and, if the settings say so, finetuning) top-1 of a video and an audio
encoder on a labelled train/test split (UCF101 split 1 for the regression gate), against the random-init
baseline. Image {image}.

Args:
    data_uri: The labelled manifest: an s3:// URI of a CSV with a row path,label,split per video, e.g. the one
        `xdc dataset ucf101 --split 1` writes.
    video_encoder_uri: The video encoder's state dict (s3:// URI), e.g. OUT/video_encoder.pt of a run.
    audio_encoder_uri: The audio encoder's state dict (s3:// URI).
    config: The settings (the evaluation schedule is evaluate.*): a preset, an s3:// URI of a YAML file, or
        the settings as YAML. Compiled default: {shown}.
    overrides: Other settings as KEY=VALUE pairs separated by spaces, e.g. 'evaluate.finetune=true'.
    seed: Seed of the probe's training and of the random-init baseline (seed). -1 keeps the config's
        ({setting_value(cfg, "seed")}).
    decode_shards: {SCALE_PARAMETERS["decode_shards"][0].upper()}{SCALE_PARAMETERS["decode_shards"][1:]}; at least 1.
"""
    return dsl.pipeline(name=PIPELINE_NAME)(ucf101_eval)
