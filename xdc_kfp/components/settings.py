"""The ``settings`` component: the pipeline's run parameters merged into its settings, once."""


def settings(settings: str, method: str, k: int, epochs: int, lr: float, batch_size: int, seed: int) -> str:
    """``settings`` with the run parameters applied (``method`` → ``cluster.method``, ``k`` →
    ``cluster.k``, ``epochs`` → ``train.total_epochs``, ``lr`` → ``train.lr``, ``batch_size`` →
    ``train.batch_size``, ``seed``), validated, as one line of JSON: the only settings every
    other task reads. A bad value fails this first task, naming the setting."""
    from xdc_kfp.run_parameters import merge_run_parameters, settings_text

    given = {"method": method, "k": k, "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    return settings_text(merge_run_parameters(settings, given, source="the pipeline's settings"))
