"""The ``decode`` component: a manifest of raw videos → the training-ready decoded dataset."""

from kfp.dsl import Dataset, Metrics, Output


def decode(
    data_uri: str,
    settings: str,
    run_evaluation: bool,
    decoded: Output[Dataset],
    decode_summary: Output[Metrics],
    check_pretraining: bool = True,
    run_id: str = "",
):
    """Decode the videos listed in the manifest at ``data_uri`` (a path, or an ``s3://``/``minio://``
    URI whose videos are in the same bucket; ``""``: the embedded sample data).

    Checks first that the data can make the run (``cluster.k`` at most the pretraining videos,
    unless ``check_pretraining`` is off; labelled train/test splits when ``run_evaluation``).
    Unreadable videos are quarantined with their reason (``quarantine.csv`` in the dataset), never fatal.
    
    ``run_id`` (the pipeline's run id) groups the metrics the task pushes to ``$XDC_PUSHGATEWAY``.
    """
    import tempfile
    from pathlib import Path

    from xdc_core.config import parse_config
    from xdc_core.metrics import exported
    from xdc_core.steps import decode_step, named_inputs, sample_manifest

    cfg = parse_config(settings)
    with exported("decode", run_id or None), named_inputs("decode", {"data_uri": data_uri}):
        # a path or an s3:// / minio:// URI (credentials from the environment: a Kubernetes secret)
        manifest = data_uri or sample_manifest(Path(tempfile.mkdtemp(prefix="xdc-sample-")))
        summary = decode_step(manifest, Path(decoded.path), cfg, evaluate=run_evaluation, progress=False,
                              pretrain=check_pretraining)
    decoded.metadata.update({"videos": summary["accepted"], "quarantined": summary["quarantined"], "source": data_uri})
    for key in ("accepted", "quarantined", "accepted_duration_s"):
        decode_summary.log_metric(key, float(summary[key]))
