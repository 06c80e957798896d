"""The ``settings`` component: the run's settings, resolved once from its run parameters."""


def settings(config: str, overrides: str, method: str, k: int, epochs: int, epoch_size: int, lr: float,
             batch_size: int, seed: int, iterations: int = 0, data_uri: str = "") -> str:
    """The settings of ``config`` (a preset, an s3:// URI of a YAML file, or YAML text) with
    ``overrides`` (``KEY=VALUE`` pairs) and the typed run parameters applied (each at its unset
    value, 0, "" or -1, keeps the config's), ``cluster.iterations`` = the compiled ``iterations``
    (0: the config's), validated, as one line of JSON: the only settings every other task reads.
    A bad value fails this first task, naming the setting; so does a paper-scale training budget
    on the embedded sample data (``data_uri`` empty)."""
    from xdc_kfp.run_parameters import resolve_settings, settings_text

    given = {"method": method, "k": k, "epochs": epochs, "epoch_size": epoch_size, "lr": lr, "batch_size": batch_size,
             "seed": seed}
    return settings_text(resolve_settings(config, given, overrides, iterations or None, sample_data=not data_uri))
