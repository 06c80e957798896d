"""The evaluation pipeline: a given pair of encoder checkpoints on a labelled dataset (UCF101 split 1).

The regression gate: CI submits it with the encoders of a change and compares the top-1
accuracies it reports with those of main.
"""

# No `from __future__ import annotations`: kfp reads the pipeline functions' annotations as types.
from collections.abc import Callable

from kfp import dsl

from xdc_core.config import Config
from xdc_kfp import DEFAULT_IMAGE
from xdc_kfp.components import build_components
from xdc_kfp.placement import Placement
from xdc_kfp.run_parameters import settings_text

from .decode_fanout import build_decode_pipeline
from .placement import anywhere, on_gpu

PIPELINE_NAME = "ucf101-eval"


def build_eval_pipeline(
    cfg: Config, image: str = DEFAULT_IMAGE, placement: Placement | None = None
) -> Callable[..., None]:
    """Decode the labelled manifest at ``data_uri`` and evaluate the two encoder checkpoints on it."""
    c = build_components(image)
    place = placement or Placement()
    sharded_decode = build_decode_pipeline(c, place)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Linear-probe (and, if the settings say so, finetuning) top-1 of a video and an audio "
        "encoder on a labelled train/test split, against the random-init baseline.",
    )
    def ucf101_eval(
        data_uri: str,
        video_encoder_uri: str,
        audio_encoder_uri: str,
        seed: int = cfg.seed,
        settings: str = settings_text(cfg),
        decode_shards: int = 1,
    ) -> None:
        # Only the seed is a parameter here; the other run parameters are the compiled settings'
        # own, which evaluation does not read (it has its own evaluate.* schedule).
        merge = c.settings(settings=settings, method=cfg.cluster.method, k=cfg.cluster.k,
                           epochs=cfg.train.total_epochs, lr=cfg.train.lr, batch_size=cfg.train.batch_size, seed=seed)
        anywhere(merge, place).set_display_name("settings")
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
                              audio_encoder=encoders["audio"], settings=merge.output,
                              run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        on_gpu(evaluate, place).set_display_name("evaluate")

    return ucf101_eval
