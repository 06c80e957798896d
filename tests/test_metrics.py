"""Prometheus metrics: what the steps record, and a tiny `xdc run` pushing to a real Pushgateway
that a real Prometheus scrapes; with the Pushgateway down the run completes, unchanged."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SETTINGS
from prometheus_client import generate_latest
from s3_server import free_port

from xdc_core import metrics

XDC = str(Path(os.sys.executable).parent / "xdc")


def exposition() -> str:
    return generate_latest(metrics.REGISTRY).decode()


def test_training_monitor_reports_steps_losses_and_data_wait():
    monitor = metrics.TrainMonitor("audio", "xdc", 907)
    monitor.step(loss=2.5, lr=0.1, clips=8, waited_s=0.3, busy_s=0.7)
    monitor.step(loss=2.0, lr=0.2, clips=8, waited_s=0.1, busy_s=0.9)
    monitor.epoch(1, heldout_loss=2.2, gpu_peak_bytes=None)
    text = exposition()
    labels = 'iteration="907",method="xdc",modality="audio"'
    assert f"xdc_train_step{{{labels}}} 2.0" in text and f"xdc_train_loss{{{labels}}} 2.0" in text
    assert f"xdc_train_lr{{{labels}}} 0.2" in text and f"xdc_train_heldout_loss{{{labels}}} 2.2" in text
    assert f"xdc_train_data_wait_fraction{{{labels}}} 0.2" in text  # 0.4 s of 2 s
    assert f"xdc_train_gpu_peak_memory_bytes{{{labels}}}" not in text  # not on a GPU


def test_cluster_statistics_and_accuracies_are_labelled_without_video_ids():
    stats = {"video": {"sizes_min": 3, "sizes_median": 5.0, "sizes_max": 9, "nmi_previous": 0.4, "purity": None},
             "cross_modal": {"nmi": 0.25, "nmi_chance": 0.01}}
    metrics.record_clusters(stats, "xdc", 902, 1.5, 17, "cross_modal")  # an iteration no other test uses
    metrics.record_accuracies({"probe": {"video": {"top1": 0.75, "lr": 0.1}}, "probe_vs_random": {
        "video": {"delta": 0.2, "ci95": [0.1, 0.3]}}})
    text = exposition()
    assert 'xdc_kmeans_cluster_size{clustering="video",iteration="902",method="xdc",stat="max"} 9.0' in text
    assert 'xdc_kmeans_videos{clustering="video",iteration="902",method="xdc"} 17.0' in text
    assert 'xdc_kmeans_nmi_cross_modal{iteration="902",method="xdc"} 0.25' in text
    assert 'xdc_kmeans_purity{clustering="video",iteration="902"' not in text  # unlabelled: no purity
    assert 'xdc_evaluate_top1{modality="video",protocol="probe"} 0.75' in text


def _tiny_run(tmp_path: Path, tiny_sample: Path, name: str, env: dict[str, str]) -> Path:
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump(TINY_SETTINGS))
    out = tmp_path / name
    r = subprocess.run([XDC, "run", "--data", str(tiny_sample), "--out", str(out), "--config", str(settings), "--quiet"],
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.integration
def test_xdc_run_pushes_to_a_real_pushgateway_and_prometheus_scrapes_it(monitoring, tiny_sample, tmp_path):
    run_id = uuid.uuid4().hex[:12]
    env = {"XDC_PUSHGATEWAY": monitoring.pushgateway, "XDC_RUN_ID": run_id, "XDC_PUSH_INTERVAL": "1"}
    up = _tiny_run(tmp_path, tiny_sample, "up", env)

    loss = monitoring.wait_for(f'xdc_train_loss{{run_id="{run_id}"}}')
    assert {(s["metric"]["modality"], s["metric"]["iteration"], s["metric"]["method"], s["metric"]["task"])
            for s in loss} == {(m, it, "xdc", "run") for m in ("video", "audio") for it in ("1", "2")}
    sizes = monitoring.wait_for(f'xdc_kmeans_cluster_size{{run_id="{run_id}",stat="max",clustering="audio"}}')
    assert {s["metric"]["iteration"] for s in sizes} == {"1", "2"} and all(0 < float(s["value"][1]) <= 12
                                                                            for s in sizes)
    decoded = monitoring.wait_for(f'xdc_decode_videos_total{{run_id="{run_id}",outcome="accepted"}}')
    assert [float(s["value"][1]) for s in decoded] == [16.0]
    top1 = monitoring.wait_for(f'xdc_evaluate_top1{{run_id="{run_id}",protocol="probe"}}')
    assert {s["metric"]["modality"] for s in top1} == {"video", "audio"}

    # The same run with nothing listening where the Pushgateway should be: it completes, warns,
    # and computes exactly the same.
    down = _tiny_run(tmp_path, tiny_sample, "down", {**env, "XDC_PUSHGATEWAY": f"127.0.0.1:{free_port()}"})
    assert (down / "metrics.json").read_bytes() == (up / "metrics.json").read_bytes()


@pytest.mark.integration
def test_pipeline_tasks_push_under_one_run_id(monitoring, tiny_sample, tmp_path):
    """A tiny `xdc pipeline run-local`: every task pushes under the pipeline's run id, with its task name."""
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump(TINY_SETTINGS))
    env = {**os.environ, "XDC_PUSHGATEWAY": monitoring.pushgateway, "XDC_PUSH_INTERVAL": "1"}
    env.pop("XDC_RUN_ID", None)
    r = subprocess.run([XDC, "pipeline", "run-local", "--data", str(tiny_sample), "--config", str(settings),
                        "--iterations", "1", "--no-eval", "--out", str(tmp_path / "kfp")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    decoded = monitoring.wait_for('xdc_decode_videos_total{task="decode",outcome="accepted"}')
    run_ids = {s["metric"]["run_id"] for s in decoded}
    assert len(run_ids) == 1, decoded  # the only pipeline run pushing to this session's gateway
    (run_id,) = run_ids
    loss = monitoring.wait_for(f'xdc_train_loss{{run_id="{run_id}"}}')
    assert {(s["metric"]["task"], s["metric"]["modality"], s["metric"]["iteration"]) for s in loss} == {
        ("train-video-1", "video", "1"), ("train-audio-1", "audio", "1")}
    sizes = monitoring.wait_for(f'xdc_kmeans_cluster_size{{run_id="{run_id}",stat="max"}}')
    assert {(s["metric"]["task"], s["metric"]["clustering"]) for s in sizes} == {
        ("kmeans-1", "video"), ("kmeans-1", "audio")}
    ended = monitoring.wait_for(f'xdc_task_end_time_seconds{{run_id="{run_id}"}}')
    assert {s["metric"]["task"] for s in ended} == {"decode", "merge-decoded", "embed-video-1", "embed-audio-1",
                                                    "kmeans-1", "train-video-1", "train-audio-1"}
