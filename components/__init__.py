"""The Kubeflow components of xdc, one module each, in the order data flows through them.

Each is a lightweight KFP v2 component: a Python function whose body imports ``xdc_core`` and
calls one step function, so the algorithm lives only in the library. The first, ``settings``,
merges the pipeline's run parameters into its settings; every other component reads only those
merged settings. They run in the project's image (``base_image``), which already holds
everything: nothing is pip-installed at run time. The same functions run under ``kfp.local``'s
SubprocessRunner in the project's own environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from xdc_kfp import DEFAULT_IMAGE

from .decode import decode
from .embed import embed
from .evaluate import evaluate
from .final_encoder import final_encoder
from .kmeans import kmeans
from .merge_decoded import merge_decoded
from .plan_shards import plan_shards
from .settings import settings
from .train_encoder import train_encoder


@dataclass(frozen=True)
class Components:
    """The components, bound to one image."""

    settings: BaseComponent
    plan_shards: BaseComponent
    decode: BaseComponent
    merge_decoded: BaseComponent
    embed: BaseComponent
    kmeans: BaseComponent
    train_encoder: BaseComponent
    final_encoder: BaseComponent
    evaluate: BaseComponent


def build_components(image: str = DEFAULT_IMAGE) -> Components:
    """Wrap the component functions for ``image``. ``install_kfp_package=False``: the image has kfp."""

    def wrap(func):  # type: ignore[no-untyped-def]
        return dsl.component(func, base_image=image, install_kfp_package=False)

    return Components(
        settings=wrap(settings), plan_shards=wrap(plan_shards), decode=wrap(decode),
        merge_decoded=wrap(merge_decoded), embed=wrap(embed), kmeans=wrap(kmeans),
        train_encoder=wrap(train_encoder), final_encoder=wrap(final_encoder), evaluate=wrap(evaluate),
    )
