"""The ``decode`` component: a manifest of raw videos (or one shard of it) → a decoded dataset."""

from kfp.dsl import Dataset, Metrics, Output


def decode(
    data_uri: str,
    settings: str,
    run_evaluation: bool,
    decoded: Output[Dataset],
    decode_summary: Output[Metrics],
    check_pretraining: bool = True,
    shard: int = 0,
    shards: int = 1,
):
    """Decode the videos listed in the manifest at ``data_uri`` (a path, or an ``s3://``/``minio://``
    URI whose videos are in the same bucket; ``""``: the embedded sample data).

    With ``shards`` = 1 (the default) the whole manifest, checking first that the data can make the
    run (``cluster.k`` at most the pretraining videos, unless ``check_pretraining`` is off; labelled
    train/test splits when ``run_evaluation``) and again on what was accepted. With ``shards`` > 1
    only rows ``shard``, ``shard + shards``, … and no check: a shard alone may hold fewer videos
    than ``k``; the ``plan_shards`` task checks the whole manifest before, ``merge_decoded`` the
    merged dataset after. Unreadable videos are quarantined with their reason (``quarantine.csv``
    in the dataset), never fatal.

    """
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.decode_shards import decode_shard, shared_sample_manifest
    from xdc_core.metrics import exported
    from xdc_core.steps import decode_step, named_inputs
    from xdc_kfp.artifacts import log_metrics

    cfg = parse_config(settings)
    task = "decode" if shards == 1 else f"decode-{shard}"  # one Pushgateway group per shard
    with exported(task), named_inputs("decode", {"data_uri": data_uri}):
        # a path or an s3:// / minio:// URI (credentials from the environment: a Kubernetes secret)
        manifest = data_uri or shared_sample_manifest()
        if shards == 1:
            summary = decode_step(manifest, Path(decoded.path), cfg, evaluate=run_evaluation, progress=False,
                                  pretrain=check_pretraining)
        else:
            summary = decode_shard(manifest, shard, shards, Path(decoded.path), cfg, progress=False)
    decoded.metadata.update({"videos": summary["accepted"], "quarantined": summary["quarantined"], "source": data_uri,
                             "shard": shard, "shards": shards})
    log_metrics(decode_summary, {key: summary[key] for key in ("accepted", "quarantined", "accepted_duration_s")})
