"""Prometheus metrics of every step, and their export: pushed to a Pushgateway or served.

Names follow Prometheus's conventions: the ``xdc_`` prefix, base units (seconds, bytes),
``_total`` for counters. Labels are bounded (modality, method, iteration, clustering, outcome,
reason, stat, protocol): never a video id. The run and the task are not labels of the metrics but
the Pushgateway's grouping key (``run_id``, ``task``), which it adds to every series it exposes.

KFP tasks are batch jobs, so they push: with ``XDC_PUSHGATEWAY`` set (``xdc pipeline compile
--pushgateway``), :func:`exported` pushes every ``XDC_PUSH_INTERVAL`` seconds (default 15) from a
background thread and once more when the step ends. A local run can serve ``/metrics`` instead
(``xdc run --metrics-port``). An unreachable Pushgateway never fails or slows a run: it warns
once, keeps going, and counts the failed pushes in ``xdc_metrics_push_failures_total``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, start_http_server

from .errors import ConfigError

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()  # xdc's metrics only: no process or Python collectors pushed per task
_TRAIN = ("modality", "method", "iteration")
_CLUSTERING = ("clustering", "method", "iteration")


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, labels, registry=REGISTRY)


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(name, doc, labels, registry=REGISTRY)


DECODE_VIDEOS = _counter("xdc_decode_videos", "Videos decode finished, by outcome and quarantine reason",
                         ("outcome", "reason"))
DECODE_VIDEO_SECONDS = _counter("xdc_decode_video_seconds", "Seconds of accepted video decoded")
DECODE_RATE = _gauge("xdc_decode_videos_per_second", "Videos decoded per second in this decode run")
EMBED_RATE = _gauge("xdc_embed_clips_per_second", "Clips embedded per second", ("modality",))
KMEANS_SECONDS = _gauge("xdc_kmeans_seconds", "Seconds one k-means took", _CLUSTERING)
KMEANS_VIDEOS = _gauge("xdc_kmeans_videos", "Videos clustered", _CLUSTERING)
KMEANS_SIZE = _gauge("xdc_kmeans_cluster_size", "Cluster sizes: min, median, max", (*_CLUSTERING, "stat"))
KMEANS_NMI_PREVIOUS = _gauge("xdc_kmeans_nmi_previous", "NMI with the previous iteration's clusters", _CLUSTERING)
KMEANS_PURITY = _gauge("xdc_kmeans_purity", "Cluster purity against the labels (reporting only)", _CLUSTERING)
KMEANS_NMI_CROSS = _gauge("xdc_kmeans_nmi_cross_modal", "NMI between the video and the audio clusters",
                          ("method", "iteration"))
# Its chance level and spread: the alert XdcNotBootstrapping compares them (xdc_core/diagnosis.py).
KMEANS_NMI_CROSS_CHANCE = _gauge("xdc_kmeans_nmi_cross_modal_chance",
                                 "Mean NMI of the video and audio clusters after shuffling", ("method", "iteration"))
KMEANS_NMI_CROSS_CHANCE_STD = _gauge("xdc_kmeans_nmi_cross_modal_chance_std",
                                     "Standard deviation of the shuffled NMIs", ("method", "iteration"))
TRAIN_EPOCH = _gauge("xdc_train_epoch", "Epochs finished in this iteration's training", _TRAIN)
TRAIN_STEP = _gauge("xdc_train_step", "SGD steps taken in this iteration's training", _TRAIN)
TRAIN_LOSS = _gauge("xdc_train_loss", "Training loss of the last step", _TRAIN)
TRAIN_HELDOUT_LOSS = _gauge("xdc_train_heldout_loss", "Held-out pseudo-label loss of the last epoch", _TRAIN)
TRAIN_LR = _gauge("xdc_train_lr", "Learning rate of the last step", _TRAIN)
TRAIN_RATE = _gauge("xdc_train_clips_per_second", "Training clips per second over the last epoch", _TRAIN)
TRAIN_DATA_WAIT = _gauge("xdc_train_data_wait_fraction", "Fraction of step time spent waiting for data", _TRAIN)
TRAIN_GPU_PEAK = _gauge("xdc_train_gpu_peak_memory_bytes", "Peak GPU memory of the training process", _TRAIN)
EVALUATE_TOP1 = _gauge("xdc_evaluate_top1", "Top-1 on the test split", ("modality", "protocol"))
PUSH_FAILURES = _counter("xdc_metrics_push_failures", "Pushes to the Pushgateway that failed")
# Set before a task's final push: the "pushes stopped" alert then tells a task that ended from one
# that vanished (killed, evicted, its node lost).
TASK_END = _gauge("xdc_task_end_time_seconds", "Unix time the step ended (any outcome), set before the final push")


class TrainMonitor:
    """What one encoder's training reports, step by step and epoch by epoch."""

    def __init__(self, modality: str, method: str, iteration: int) -> None:
        self.labels = {"modality": modality, "method": method, "iteration": str(iteration)}
        self.steps = 0
        self._waited = self._busy = 0.0
        self._clips = 0
        self._started = time.perf_counter()

    def step(self, loss: float, lr: float, clips: int, waited_s: float, busy_s: float) -> None:
        """One SGD step: its loss and lr, its batch size, the seconds spent waiting for the batch
        and computing it."""
        self.steps += 1
        self._waited, self._busy, self._clips = self._waited + waited_s, self._busy + busy_s, self._clips + clips
        TRAIN_STEP.labels(**self.labels).set(self.steps)
        TRAIN_LOSS.labels(**self.labels).set(loss)
        TRAIN_LR.labels(**self.labels).set(lr)

    def epoch(self, epochs: int, heldout_loss: float | None, gpu_peak_bytes: int | None) -> None:
        """An epoch ended: throughput and data wait over it, the held-out loss."""
        elapsed = time.perf_counter() - self._started
        TRAIN_EPOCH.labels(**self.labels).set(epochs)
        TRAIN_RATE.labels(**self.labels).set(self._clips / elapsed if elapsed > 0 else 0.0)
        spent = self._waited + self._busy
        TRAIN_DATA_WAIT.labels(**self.labels).set(self._waited / spent if spent > 0 else 0.0)
        if heldout_loss is not None:
            TRAIN_HELDOUT_LOSS.labels(**self.labels).set(heldout_loss)
        if gpu_peak_bytes is not None:
            TRAIN_GPU_PEAK.labels(**self.labels).set(gpu_peak_bytes)
        self._waited = self._busy = 0.0
        self._clips, self._started = 0, time.perf_counter()


def record_clusters(stats: Mapping[str, Mapping[str, Any]], method: str, iteration: int, seconds: float,
                    videos: int, cross_modal: str) -> None:
    """The statistics :func:`xdc_core.steps.kmeans_step` returns, one clustering of ``videos`` at a time."""
    for name, c in stats.items():
        if name == cross_modal:
            for gauge, key in ((KMEANS_NMI_CROSS, "nmi"), (KMEANS_NMI_CROSS_CHANCE, "nmi_chance"),
                               (KMEANS_NMI_CROSS_CHANCE_STD, "nmi_chance_std")):
                if c.get(key) is not None:
                    gauge.labels(method=method, iteration=str(iteration)).set(c[key])
            continue
        labels = {"clustering": name, "method": method, "iteration": str(iteration)}
        KMEANS_SECONDS.labels(**labels).set(seconds)
        for stat in ("min", "median", "max"):
            KMEANS_SIZE.labels(**labels, stat=stat).set(c[f"sizes_{stat}"])
        KMEANS_VIDEOS.labels(**labels).set(videos)
        for gauge, key in ((KMEANS_NMI_PREVIOUS, "nmi_previous"), (KMEANS_PURITY, "purity")):
            if c.get(key) is not None:
                gauge.labels(**labels).set(c[key])


def record_decoded(record: Mapping[str, Any], done: int, elapsed_s: float) -> None:
    """One video decode finished (its journal record), the ``done``-th in ``elapsed_s`` seconds."""
    DECODE_VIDEOS.labels(outcome=record["status"], reason=record.get("code", "")).inc()
    if record["status"] == "accepted":
        DECODE_VIDEO_SECONDS.inc(record["duration"])
    DECODE_RATE.set(done / elapsed_s if elapsed_s > 0 else 0.0)


def record_accuracies(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """Top-1 per modality and protocol (probe, baseline_random, finetune, ...) of an evaluation."""
    for protocol, per_modality in results.items():
        for modality, r in per_modality.items():
            if "top1" in r:
                EVALUATE_TOP1.labels(modality=modality, protocol=protocol).set(r["top1"])


class _Pusher:
    """Pushes the registry to a Pushgateway now and then, from a daemon thread; never raises."""

    def __init__(self, gateway: str, grouping: dict[str, str], interval_s: float) -> None:
        self.gateway, self.grouping, self.interval_s = gateway, grouping, interval_s
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xdc-metrics-push", daemon=True)

    def push(self) -> None:
        try:
            push_to_gateway(self.gateway, job="xdc", registry=REGISTRY, grouping_key=self.grouping, timeout=2)
        except Exception as err:  # noqa: BLE001 - metrics must never stop a run, whatever went wrong
            PUSH_FAILURES.inc()
            if not self._warned:
                log.warning("cannot push metrics to the Pushgateway at %s (%s); the run goes on, and failed "
                            "pushes are counted in xdc_metrics_push_failures_total", self.gateway, err)
                self._warned = True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.push()

    def __enter__(self) -> _Pusher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        TASK_END.set_to_current_time()
        self.push()  # the step's final values


def run_id() -> str:
    """The run's id: ``XDC_RUN_ID`` when set (a KFP run's id, a CI job's), else a new one, kept
    for the rest of the process."""
    if not os.environ.get("XDC_RUN_ID"):
        os.environ["XDC_RUN_ID"] = uuid.uuid4().hex[:12]
    return os.environ["XDC_RUN_ID"]


@contextmanager
def exported(task: str, run: str | None = None, port: int | None = None) -> Iterator[None]:
    """Export the metrics while the block runs: pushed to ``$XDC_PUSHGATEWAY`` under the grouping
    key (run_id, task), and/or served on 127.0.0.1:``port``."""
    if port is not None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--metrics-port {port} is not a TCP port (1-65535)")
        try:
            start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
        except OSError as err:  # in use, or a privileged port
            raise ConfigError(f"cannot serve metrics on 127.0.0.1:{port} ({err.strerror or err}): "
                              "choose a free port with --metrics-port, or leave it out") from None
        log.info("metrics at http://127.0.0.1:%d/metrics", port)
    gateway = os.environ.get("XDC_PUSHGATEWAY")
    if not gateway:
        yield
        return
    interval = float(os.environ.get("XDC_PUSH_INTERVAL", "15"))
    with _Pusher(gateway, {"run_id": run or run_id(), "task": task}, interval):
        yield
