"""Where each task of a pipeline runs on a cluster, as plain values (no kfp import).

:mod:`xdc_kfp.pipelines.scheduling` applies them to the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xdc_core.config import Config


@dataclass(frozen=True)
class Placement:
    """Resources and scheduling of the pipeline's tasks; the defaults suit one GPU per task on a
    pool labelled by NVIDIA's GPU operator (``nvidia.com/gpu.present=true``) and tainted
    ``nvidia.com/gpu:NoSchedule``."""

    accelerator: str = "nvidia.com/gpu"
    gpus_per_task: int = 1  # embed, k-means, evaluate; train-encoder: the gpus_per_node run parameter
    gpu_node_label: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    gpu_cpu: str | None = None  # None: from the settings (resolved()): one core per DataLoader worker + 1
    gpu_memory: str = "48Gi"
    shm_size: str = "16Gi"  # /dev/shm for DataLoader worker batches (the container default is 64 MiB)
    cpu_node_label: tuple[str, str] | None = None  # e.g. ("pool", "cpu"); None: any node
    cpu_cpu: str | None = None  # None: decode.workers of the settings (one process per core)
    cpu_memory: str = "32Gi"
    # At most this many decode shards run at once (the ParallelFor's parallelism: KFP needs it
    # when the pipeline is compiled; 0 = no limit). Each asks for cpu_cpu and cpu_memory.
    decode_parallelism: int = 8
    merge_cpu: str = "2"  # the merge of the decoded shards: one process linking files, writing the index
    retries: int = 2
    retry_backoff: str = "60s"
    # Object-store access for tasks that read raw data by URI: the Kubernetes secret holding the
    # keys (Kubeflow's own MinIO secret by default) and the endpoint, passed as XDC_S3_* variables.
    s3_secret: str = "mlpipeline-minio-artifact"
    s3_secret_keys: tuple[str, str] = ("accesskey", "secretkey")
    s3_endpoint: str = "minio-service.kubeflow:9000"
    s3_secure: bool = False
    run_as_user: int = 10001  # the images' non-root user (docker/)
    # The Pushgateway every task pushes its metrics to (host:port, e.g. the one of manifests/:
    # "pushgateway.xdc:9091"); None: the tasks push nothing.
    pushgateway: str | None = None

    def resolved(self, cfg: Config) -> Placement:
        """This placement with the CPU requests left open (None) derived from ``cfg``: a decode
        task asks for a core per ``decode.workers``; a GPU task for one per DataLoader worker of
        its busiest step (embed, train or evaluate) plus its own process. Memory is not derived:
        what a loader holds depends on the clips' size and the batch; its defaults suit the paper's."""
        loader = max(cfg.embed.workers, cfg.train.workers, cfg.evaluate.workers)
        return replace(self, gpu_cpu=self.gpu_cpu or str(loader + 1), cpu_cpu=self.cpu_cpu or str(cfg.decode.workers))
