"""The ``plan_shards`` component: check the run's plan on the whole manifest, list the decode shards."""


def plan_shards(data_uri: str, settings: str, run_evaluation: bool, shards: int,
                check_pretraining: bool = True) -> list[int]:
    """The shard numbers the decode fans out over (``0 … shards-1``, fewer when the manifest at
    ``data_uri`` lists fewer videos), after the checks the unsharded decode makes first:
    ``cluster.k`` at most the pretraining videos (unless ``check_pretraining`` is off), labelled
    train/test splits when ``run_evaluation``. A bad manifest or plan fails here, before any
    shard starts."""
    from xdc_core.config import parse_config
    from xdc_core.decode_shards import plan_shards as plan
    from xdc_core.decode_shards import shared_sample_manifest
    from xdc_core.steps import named_inputs
    from xdc_kfp.run_parameters import check_scale_parameters

    check_scale_parameters({"decode_shards": shards})  # the command line's check and message
    cfg = parse_config(settings)
    with named_inputs("plan_shards", {"data_uri": data_uri}):
        return plan(data_uri or shared_sample_manifest(), shards, cfg, evaluate=run_evaluation,
                    pretrain=check_pretraining)
