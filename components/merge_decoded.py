"""The ``merge_decoded`` component: the decoded shards of a manifest → one decoded dataset."""

from kfp.dsl import Dataset, Input, Metrics, Output


def merge_decoded(
    shards: Input[list[Dataset]],
    data_uri: str,
    settings: str,
    run_evaluation: bool,
    decoded: Output[Dataset],
    decode_summary: Output[Metrics],
    check_pretraining: bool = True,
):
    """Merge the ``decode`` tasks' shards of the manifest at ``data_uri`` into the dataset the
    unsharded decode writes (videos in manifest order, one quarantine, one summary), then check
    the plan on what was accepted (quarantined videos can leave a split empty). Shards decoded
    with other settings, or that miss a video, fail the task naming the shard."""
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.decode_shards import merge_step, shared_sample_manifest
    from xdc_core.metrics import exported
    from xdc_core.steps import named_inputs
    from xdc_kfp.artifacts import log_metrics

    cfg = parse_config(settings)
    dirs = [Path(s.path) for s in shards]
    with exported("merge-decoded"), \
            named_inputs("merge_decoded", {"data_uri": data_uri} | {f"shards[{i}]": str(d) for i, d in enumerate(dirs)}):
        summary = merge_step(dirs, data_uri or shared_sample_manifest(), Path(decoded.path), cfg,
                             evaluate=run_evaluation, pretrain=check_pretraining)
    decoded.metadata.update({"videos": summary["accepted"], "quarantined": summary["quarantined"], "source": data_uri,
                             "shards": len(dirs)})
    log_metrics(decode_summary, {key: summary[key] for key in ("accepted", "quarantined", "accepted_duration_s")})
