"""What ``xdc pipeline`` does: compile a pipeline, run it through ``kfp.local``, or submit it.

Plain functions over validated settings, so the command line (``xdc_cli.pipeline``) only parses
arguments, and a notebook or a test can call the same things.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfp import compiler

from xdc_core import store
from xdc_core.config import Config, load_config, preset_path
from xdc_core.errors import XdcError

from .pipelines.ucf101_eval import PIPELINE_NAME as EVAL_PIPELINE
from .pipelines.ucf101_eval import build_eval_pipeline
from .pipelines.xdc_pretrain import PIPELINE_NAME as PRETRAIN_PIPELINE
from .pipelines.xdc_pretrain import build_pretrain_pipeline, pipeline_name
from .placement import Placement
from .run_parameters import SCALE_PARAMETERS, check_scale_parameters, resolve_settings, settings_text

SMOKE_PIPELINE = "xdc-smoke"
PIPELINES = (PRETRAIN_PIPELINE, SMOKE_PIPELINE, EVAL_PIPELINE)

# The compiled pipelines shipped in pipelines/, the files a KFP UI user uploads (file name →
# pipeline, settings preset, clustering iterations); `xdc pipeline packages` writes them and a test
# checks they are what it writes today. The smoke pipeline: one iteration of the CPU demo settings
# on the embedded sample, to check a cluster end to end in minutes.
PACKAGES: dict[str, tuple[str, str, int]] = {
    "xdc-pretrain-3it.yaml": (PRETRAIN_PIPELINE, "paper", 3),
    "xdc-pretrain-5it.yaml": (PRETRAIN_PIPELINE, "paper", 5),
    "xdc-smoke.yaml": (SMOKE_PIPELINE, "cpu-demo", 1),
    "ucf101-eval.yaml": (EVAL_PIPELINE, "paper", 1),
}


class PipelineError(XdcError):
    """A pipeline could not be compiled, run or submitted; the message says what to do."""


def run_arguments(given: Mapping[str, Any], cfg: Config) -> dict[str, Any]:
    """The run parameters given (names of :data:`xdc_core.config.RUN_PARAMETERS` or of
    :data:`~xdc_kfp.run_parameters.SCALE_PARAMETERS` → value; None: not given) as pipeline
    arguments, checked against ``cfg`` first: a bad value fails here with
    :class:`~xdc_core.errors.ConfigError` naming the setting, not later inside a pod."""
    arguments = {name: value for name, value in given.items() if value is not None}
    check_scale_parameters({name: v for name, v in arguments.items() if name in SCALE_PARAMETERS})
    resolve_settings(settings_text(cfg), {name: v for name, v in arguments.items() if name not in SCALE_PARAMETERS})
    return arguments


def build_pipeline(which: str, cfg: Config, iterations: int, image: str, placement: Placement,
                   config: str | None = None) -> Any:
    """The pipeline ``which`` (:data:`PIPELINES`), its ``config`` parameter defaulting to ``config``
    (a preset name or URI; None: ``cfg`` as JSON), ``cfg`` being those settings."""
    if which == PRETRAIN_PIPELINE:
        return build_pretrain_pipeline(iterations, cfg, image, placement, config)
    if which == SMOKE_PIPELINE:
        return build_pretrain_pipeline(1, cfg, image, placement, config, name=SMOKE_PIPELINE)
    if which == EVAL_PIPELINE:
        return build_eval_pipeline(cfg, image, placement, config)
    raise PipelineError(f"no pipeline {which!r}: there are {', '.join(PIPELINES)}")


def compile_pipeline(
    which: str, cfg: Config, iterations: int, out: Path, image: str, placement: Placement, config: str | None = None
) -> Path:
    """Compile ``which`` (see :func:`build_pipeline`) to ``out``, then load it back with kfp's own loader."""
    from kfp.components import load_component_from_file

    func = build_pipeline(which, cfg, iterations, image, placement, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(func, str(out))
    load_component_from_file(str(out))  # the file a user uploads must load, not just be written
    return out


def write_packages(folder: Path, image: str, placement: Placement) -> list[Path]:
    """Compile the pipelines of :data:`PACKAGES` into ``folder``."""
    return [compile_pipeline(which, load_config(preset_path(preset)), iterations, folder / name, image, placement,
                             config=preset)
            for name, (which, preset, iterations) in PACKAGES.items()]


def task_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per task folder of a local run: its output artifacts (name → {uri, metadata})."""
    tasks: dict[str, dict[str, Any]] = {}
    for executor_output in sorted(run_dir.glob("*/executor_output.json")):
        produced = json.loads(executor_output.read_text()).get("artifacts", {})
        tasks[executor_output.parent.name] = {
            name: {"uri": a["artifacts"][0]["uri"], "metadata": a["artifacts"][0].get("metadata", {})}
            for name, a in produced.items()
        }
    return tasks


class _CacheHits(logging.Filter):
    """Notes the tasks kfp.local took from its cache. It logs each at INFO on the root logger as
    "Task NAME cache hit (key=KEY...)" (kfp/local/orchestrator/task_executor.py); such a task writes
    no folder in the new run: its outputs are in the cache entry KEY.json under the cache root."""

    HIT = re.compile(r"Task (\S+) cache hit \(key=([0-9a-f]+)\)")

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if hit := self.HIT.match(record.getMessage()):
            self.keys[hit[1]] = hit[2]
        return True


def _cached_outputs(cache_root: Path, keys: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per cached task (name → cache key prefix): its output artifacts, as :func:`task_outputs`."""
    tasks: dict[str, dict[str, Any]] = {}
    for task, key in keys.items():
        entries = sorted(cache_root.glob(f"{key}*.json"))
        if len(entries) != 1:
            raise PipelineError(f"kfp.local reused task {task} from its cache, but {len(entries)} cache entries "
                                f"under {cache_root} start with {key}: remove that folder and run again")
        produced = json.loads(entries[0].read_text())
        tasks[task] = {name: {"uri": a["uri"], "metadata": a.get("metadata", {})}
                       for name, a in produced.items() if isinstance(a, dict) and "uri" in a}
    return tasks


def _data_uri(data: str | Path | None) -> str:
    return "" if not data else str(data) if store.is_remote(data) else str(Path(data).resolve())


def _run_locally(
    pipeline: Any, out: Path, arguments: Mapping[str, Any], in_image: bool = False
) -> tuple[Path | None, dict[str, dict[str, Any]]]:
    """Run ``pipeline`` with ``arguments`` through ``kfp.local``, with its pipeline root and task
    cache under ``out`` (a rerun skips the tasks that finished); returns the run's folder (None when
    every task came from the cache) and each task's outputs (:func:`task_outputs`, the tasks taken from the cache included). Each
    task runs in this Python environment, or, with ``in_image``, in its image (kfp.local's
    DockerRunner: a container engine must be there)."""
    from kfp import local

    out = out.resolve()
    root = out / "pipeline_root"
    # One run id for all its tasks (on a cluster they read it from their pod's label), outside
    # their inputs, so that it never enters a task's cache key: subprocesses inherit it,
    # containers get it from the runner.
    previous_run_id = os.environ.get("XDC_RUN_ID")
    run_id = previous_run_id or uuid.uuid4().hex[:12]
    local.init(
        # the components import xdc_core from this env, or from the image's
        runner=local.DockerRunner(environment={"XDC_RUN_ID": run_id}) if in_image
        else local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=True,
        cache_root=str(out / "cache"),
    )
    before = set(root.glob("*")) if root.is_dir() else set()
    os.environ["XDC_RUN_ID"] = run_id
    hits = _CacheHits()
    logger, level = logging.getLogger(), logging.getLogger().level
    logger.addFilter(hits)
    logger.setLevel(logging.INFO)  # else no record reaches the filter (nothing more is printed: no handler)
    try:
        pipeline(**arguments)
    except RuntimeError as err:  # kfp.local's "task X failed"; the task's own error is in its log above
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # kfp colours the task name and status
        raise PipelineError(f"kfp.local: {plain.rstrip('.')}; the failed task's log above says why") from None
    except Exception as err:
        if in_image and type(err).__module__.startswith("docker"):  # the docker SDK's: no engine, no image
            raise PipelineError(f"running the tasks in their image needs a Docker engine: {err}") from None
        raise
    finally:
        logger.removeFilter(hits)
        logger.setLevel(level)
        if previous_run_id is None:
            os.environ.pop("XDC_RUN_ID", None)
    runs = sorted(set(root.glob("*")) - before, key=lambda p: p.stat().st_mtime)
    if hits.keys:
        print(f"kfp.local reused {len(hits.keys)} finished tasks from its cache: {', '.join(sorted(hits.keys))}")
    if not runs and not hits.keys:
        raise PipelineError(f"kfp.local finished but wrote no run folder under {root}")
    # a run whose every task came from the cache writes no folder
    run_dir = runs[-1] if runs else None
    return run_dir, {**_cached_outputs(out / "cache", hits.keys), **(task_outputs(run_dir) if run_dir else {})}


def run_local(
    data: str | Path | None, out: Path, cfg: Config, iterations: int, arguments: Mapping[str, Any],
    image: str | None = None,
) -> dict[str, Any]:
    """Run the pretraining pipeline through ``kfp.local``, its tasks in this Python environment or,
    given an ``image``, in containers of that image (kfp.local's DockerRunner).

    ``data``: the manifest, a path or an ``s3://`` URI (None: the embedded sample data);
    ``out``: the pipeline root and the task cache (rerunning into it skips the finished tasks);
    ``cfg``: the settings (the pipeline's ``config``);
    ``arguments``: the pipeline's arguments besides ``data_uri`` (see :func:`run_arguments`).
    Returns the run folder and where its outputs are: ``decoded``, ``encoders`` (modality →
    URI), ``metrics``, ``report``, and ``results``, the evaluation report (None with
    ``run_evaluation=False``).
    """
    pipeline = build_pretrain_pipeline(iterations, cfg, **({"image": image} if image else {}))
    run_dir, tasks = _run_locally(pipeline, out, {"data_uri": _data_uri(data), **arguments},
                                  in_image=image is not None)
    encoders = {
        a["metadata"]["modality"]: a["uri"]
        for outputs in tasks.values()
        for name, a in outputs.items()
        if name == "encoder" and a["metadata"].get("final")
    }
    report_uri = tasks.get("evaluate", {}).get("report", {}).get("uri")
    return {
        "run_dir": str(run_dir) if run_dir else None,
        "decoded": tasks["merge-decoded"]["decoded"]["uri"],  # the shards' merge: the one decoded dataset
        "encoders": encoders,
        # a Metrics artifact's values live in its metadata (the KFP UI reads them from there)
        "metrics": tasks.get("evaluate", {}).get("metrics", {}).get("metadata"),
        "report": report_uri,
        "results": json.loads(Path(report_uri).read_text()) if report_uri else None,
    }


def evaluate_local(data: str | Path, encoders: Mapping[str, str | Path], cfg: Config, out: Path) -> dict[str, Any]:
    """Run the ucf101-eval pipeline through ``kfp.local`` on the labelled manifest ``data`` and the
    encoder checkpoints ``encoders`` (modality → path or URI); returns the evaluation report."""
    uris = {m: _data_uri(encoders[m]) for m in ("video", "audio")}
    run_dir, tasks = _run_locally(build_eval_pipeline(cfg), out, {
        "data_uri": _data_uri(data), "video_encoder_uri": uris["video"], "audio_encoder_uri": uris["audio"]})
    report = tasks.get("evaluate", {}).get("report", {}).get("uri")
    if report is None:
        raise PipelineError(f"the ucf101-eval run in {run_dir} wrote no evaluation report")
    return json.loads(Path(report).read_text())


def _connect(host: str, namespace: str | None = None) -> Any:
    """A kfp.Client for ``host``, signed in where Kubeflow's auth guards the API: with the
    service-account token (audience pipelines.kubeflow.org) in the file that
    ``KF_PIPELINES_SA_TOKEN_PATH`` names, through kfp's own credentials class, which rereads the
    file on each refresh (kfp applies that variable by itself only inside a cluster, not with a
    host given). ``namespace`` (default ``$KFP_NAMESPACE``): the Profile namespace of a
    multi-user KFP, where runs and experiments live; unset for standalone KFP."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    token_file = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    if token_file and not Path(token_file).is_file():
        raise PipelineError(f"KF_PIPELINES_SA_TOKEN_PATH={token_file}: no such file (it must hold the service-account "
                            "token, e.g. `kubectl -n xdc create token xdc-ci --audience pipelines.kubeflow.org`)")
    namespace = namespace or os.environ.get("KFP_NAMESPACE") or None
    try:
        client = kfp.Client(host=host, credentials=ServiceAccountTokenVolumeCredentials(token_file) if token_file
                            else None, **({"namespace": namespace} if namespace else {}))
        client.list_experiments(page_size=1, namespace=namespace)  # kfp.Client connects lazily: fail here, naming the host
        return client
    except Exception as err:  # kfp raises urllib3, requests and ApiException types for the same cause
        raise PipelineError(
            f"cannot reach the Kubeflow Pipelines API at {host}: {type(err).__name__}: "
            f"{str(err).splitlines()[0][:300]}\n  check --host (the KFP API or UI address, e.g. "
            "http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`) "
            "and that you are signed in (KF_PIPELINES_SA_TOKEN_PATH, and the namespace for a multi-user KFP)"
        ) from None


def package_pipeline_name(package: Path) -> str:
    """The pipeline name a compiled pipeline file (``xdc pipeline compile``) declares."""
    import yaml

    try:
        spec = yaml.safe_load(package.read_text())
        return str(spec["pipelineInfo"]["name"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise PipelineError(f"{package} is not a compiled pipeline (`xdc pipeline compile` writes one): {err}") from None


def _start(host: str, which: str, cfg: Config, iterations: int, arguments: Mapping[str, Any], image: str,
           placement: Placement, run_name: str | None, experiment: str, config: str | None = None,
           namespace: str | None = None, package: Path | None = None) -> tuple[Any, str]:
    """Start a run of ``which`` on ``host``, compiled here or, given, the compiled ``package``:
    (the client, the run's id)."""
    client = _connect(host, namespace)
    with tempfile.TemporaryDirectory() as tmp:
        if package is None:
            package = compile_pipeline(which, cfg, iterations, Path(tmp) / f"{which}.yaml", image, placement, config)
        try:
            result = client.create_run_from_pipeline_package(
                str(package), arguments=dict(arguments), run_name=run_name, experiment_name=experiment,
                namespace=namespace or os.environ.get("KFP_NAMESPACE") or None)
        except Exception as err:  # noqa: BLE001 - the API's refusal, whatever its type, is the user's to read
            raise PipelineError(f"the KFP API at {host} refused the {which} run: {type(err).__name__}: "
                                f"{str(err).splitlines()[0][:300]}") from None
    return client, str(result.run_id)


def submit(
    host: str,
    cfg: Config,
    iterations: int,
    arguments: Mapping[str, Any],
    image: str,
    placement: Placement,
    run_name: str | None = None,
    experiment: str = "xdc",
    config: str | None = None,
) -> str:
    """Compile the pretraining pipeline and start a run of it with ``arguments`` (``data_uri`` and
    those of :func:`run_arguments`) on the Kubeflow Pipelines API at ``host``; returns the run's id.
    ``config``: the run's settings by name or URI (None: ``cfg`` itself)."""
    _, run_id = _start(host, PRETRAIN_PIPELINE, cfg, iterations, arguments, image, placement, run_name, experiment,
                       config)
    return run_id


def report_on_host(
    host: str, which: str, arguments: Mapping[str, Any], cfg: Config, iterations: int, image: str,
    placement: Placement, pipeline_root: str, timeout_s: float, experiment: str = "xdc-regression",
    namespace: str | None = None, package: Path | None = None,
) -> dict[str, Any]:
    """Run the pipeline ``which`` (the ucf101-eval pipeline, or the pretraining pipeline with its
    evaluation) with ``arguments`` on the cluster at ``host`` (compiled here, or the compiled
    ``package``), wait for it (at most ``timeout_s``; interrupted, the run is terminated) and return
    its evaluation report, read from the object store under ``pipeline_root`` (the cluster's
    default pipeline root, e.g. ``minio://mlpipeline/v2/artifacts``)."""
    name = package_pipeline_name(package) if package else \
        pipeline_name(iterations) if which == PRETRAIN_PIPELINE else which
    client, run_id = _start(host, which, cfg, iterations, arguments, image, placement, None, experiment,
                            namespace=namespace, package=package)
    try:
        run = client.wait_for_run_completion(run_id, timeout=timeout_s)
    except KeyboardInterrupt:  # CI cancels a superseded gate with SIGINT: do not leave its run on the GPUs
        client.terminate_run(run_id)
        raise
    except Exception as err:  # noqa: BLE001 - kfp raises TimeoutError or API errors
        raise PipelineError(f"run {run_id} on {host} did not finish within {timeout_s:.0f} s: {err}") from None
    state = str(getattr(run, "state", "")).upper()
    if "SUCCEEDED" not in state:
        raise PipelineError(f"run {run_id} on {host} ended {state or 'in an unknown state'}: see it in the KFP UI")
    # KFP v2 writes each output under <root>/<pipeline>/<run id>/<task>/<execution>/<name>.
    prefix = f"{pipeline_root.rstrip('/')}/{name}/{run_id}"
    reports = [k for k in store.list_keys(prefix) if k.startswith("evaluate/") and k.endswith("/report")]
    if not reports:
        raise PipelineError(f"run {run_id} succeeded but no evaluation report is under {prefix}: check "
                            "--pipeline-root (the cluster's default pipeline root)")
    return json.loads(store.read_bytes(f"{prefix}/{reports[0]}"))
