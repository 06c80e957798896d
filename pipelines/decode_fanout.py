"""The sharded decode, one sub-pipeline written once for every pipeline that decodes:

    decode = plan_shards → ParallelFor(shard) { decode shard } → merge_decoded

``plan_shards`` checks the plan on the whole manifest and lists the shard numbers; each ``decode
shard`` task decodes one shard (``xdc_core.decode_shards``), at most
``Placement.decode_parallelism`` at once (KFP fixes the limit when the pipeline is compiled);
``merge_decoded`` collects them into the one dataset the downstream tasks read, and checks the
plan on it.

A sub-pipeline, not tasks added to the caller's pipeline: it keeps the fan-out one box in the KFP
UI, and its loop reads the settings as the sub-pipeline's input. kfp.local (2.17.3) replaces
every task output that a ParallelFor's body reads from outside the loop with the loop item, so a
body reading the settings task's output directly would get a shard number as its settings.
"""

# No `from __future__ import annotations`: kfp reads the pipeline function's annotations as types.
from kfp import dsl
from kfp.dsl.base_component import BaseComponent

from xdc_kfp.components import Components
from xdc_kfp.placement import Placement

from .scheduling import anywhere, on_cpu, with_object_store


def build_decode_pipeline(c: Components, place: Placement) -> BaseComponent:
    """The sharded decode as a sub-pipeline of ``c``'s components placed by ``place``; call it in
    a pipeline like a component: its output is the decoded dataset."""

    @dsl.pipeline(name="sharded-decode",
                  description="Decode the manifest's videos in shards, then merge them into one dataset.")
    def decode(data_uri: str, settings: str, run_evaluation: bool, shards: int,
               check_pretraining: bool = True) -> dsl.Dataset:
        common = {"data_uri": data_uri, "settings": settings, "run_evaluation": run_evaluation,
                  "check_pretraining": check_pretraining}
        plan = c.plan_shards(shards=shards, **common)
        anywhere(with_object_store(plan, place), place).set_display_name("plan decode shards")
        with dsl.ParallelFor(plan.output, parallelism=place.decode_parallelism, name="decode-shards") as shard:
            one = c.decode(shard=shard, shards=shards, **common)
            on_cpu(with_object_store(one, place), place).set_display_name("decode shard")
        merge = c.merge_decoded(shards=dsl.Collected(one.outputs["decoded"]), **common)
        on_cpu(with_object_store(merge, place), place, cpu=place.merge_cpu).set_display_name("merge decoded")
        return merge.outputs["decoded"]

    return decode
