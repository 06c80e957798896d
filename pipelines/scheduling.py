"""Apply a :class:`~xdc_kfp.placement.Placement` to tasks: GPU tasks on the GPU node pool,
``decode`` on CPU nodes, the settings task anywhere.

Kubernetes-only settings (node selectors, tolerations, volumes) come from ``kfp-kubernetes``;
``kfp.local`` ignores them, so the same pipeline also runs on one machine.
"""

from __future__ import annotations

from kfp import kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

from xdc_kfp.placement import Placement

RUN_ID_ENV = "XDC_RUN_ID"  # what xdc_core.metrics.run_id() reads
RUN_ID_LABEL = "pipeline/runid"  # set by the KFP API server on every pod of a run


def on_gpu(task: PipelineTask, p: Placement, gpus: int | PipelineChannel | None = None) -> PipelineTask:
    """GPUs on the GPU pool (``gpus``, e.g. a run parameter; None: ``p.gpus_per_task``), CPU and
    memory for the loaders, and an in-memory /dev/shm. ``p`` must be resolved (Placement.resolved)."""
    _check_resolved(p)
    task.set_accelerator_type(p.accelerator).set_accelerator_limit(p.gpus_per_task if gpus is None else gpus)
    task.set_cpu_request(p.gpu_cpu).set_memory_request(p.gpu_memory)
    kubernetes.add_node_selector(task, label_key=p.gpu_node_label[0], label_value=p.gpu_node_label[1])
    kubernetes.add_toleration(task, key=p.accelerator, operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=p.shm_size)
    return anywhere(task, p)


def on_cpu(task: PipelineTask, p: Placement, cpu: str | None = None) -> PipelineTask:
    """CPU nodes only: no accelerator, no GPU toleration; ``cpu`` cores (None: ``p.cpu_cpu``)."""
    _check_resolved(p)
    task.set_cpu_request(p.cpu_cpu if cpu is None else cpu).set_memory_request(p.cpu_memory)
    if p.cpu_node_label is not None:
        kubernetes.add_node_selector(task, label_key=p.cpu_node_label[0], label_value=p.cpu_node_label[1])
    return anywhere(task, p)


def _check_resolved(p: Placement) -> None:
    if p.cpu_cpu is None or p.gpu_cpu is None:
        raise ValueError("the placement's CPU requests are open: apply Placement.resolved(settings) first")


def anywhere(task: PipelineTask, p: Placement) -> PipelineTask:
    """Any node, the cluster's default resources (enough for a task that only computes parameters).

    Every task gets the retries and caching: retries cover preempted nodes and flaky storage;
    caching skips a step whose inputs and parameters did not change since a previous run. And
    every task runs as the images' non-root user (uid 10001, docker/): kfp-kubernetes sets
    runAsUser/runAsGroup/runAsNonRoot, but has no setter for a read-only root filesystem or
    dropped capabilities (manifests/base/namespace.yaml's Pod Security level covers those).
    With ``p.pushgateway`` set, every task pushes its metrics there (xdc_core/metrics.py).
    """
    task.set_retry(num_retries=p.retries, backoff_duration=p.retry_backoff, backoff_factor=2.0)
    task.set_caching_options(True)
    # The run's id (the metrics' grouping key, a PyTorchJob's name) from the pod's label, not as an
    # input: the KFP driver puts every resolved input into the task's cache key
    # (backend/src/v2/driver/cache.go, getFingerPrint), so an input holding the run id would make
    # every task of every run a cache miss. The API server labels each run's pods pipeline/runid
    # (backend/src/apiserver/template/argo_template.go, SetPodMetadataLabels).
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path=f"metadata.labels['{RUN_ID_LABEL}']")
    kubernetes.set_security_context(task, run_as_user=p.run_as_user, run_as_group=p.run_as_user, run_as_non_root=True)
    if p.pushgateway:
        task.set_env_variable("XDC_PUSHGATEWAY", p.pushgateway)
    return task


def with_object_store(task: PipelineTask, p: Placement) -> PipelineTask:
    """The object-store credentials as environment variables from the secret, never in the spec."""
    access, secret = p.s3_secret_keys
    kubernetes.use_secret_as_env(
        task, secret_name=p.s3_secret, secret_key_to_env={access: "XDC_S3_ACCESS_KEY", secret: "XDC_S3_SECRET_KEY"}
    )
    task.set_env_variable("XDC_S3_ENDPOINT", p.s3_endpoint)
    task.set_env_variable("XDC_S3_SECURE", "true" if p.s3_secure else "false")
    return task
