"""`xdc run` with its videos in a bucket and its OUT in the bucket, against a real S3 server."""

import json
from pathlib import Path

import yaml
from conftest import TINY_SETTINGS
from test_cli import xdc

from xdc_core import store


def test_xdc_run_reads_videos_from_the_bucket_and_writes_every_artifact_there(
    tiny_sample: Path, bucket: str, tmp_path: Path, monkeypatch
):
    store.upload_dir(tiny_sample.parent, f"s3://{bucket}/raw")
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump(TINY_SETTINGS))
    monkeypatch.setenv("XDC_WORK_DIR", str(tmp_path / "work"))
    out = f"s3://{bucket}/runs/r1"
    r = xdc("run", "--data", f"s3://{bucket}/raw/manifest.csv", "--out", out, "--config", str(settings), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]

    keys = set(store.list_keys(out))
    for name in ("metrics.json", "video_encoder.pt", "audio_encoder.pt", "decoded/index.csv", "decoded/summary.json",
                 "iter_01/stats.json", "iter_01/clusters.npz", "iter_02/features_video.npz", "iter_02/audio_encoder.pt"):
        assert name in keys, sorted(keys)
    assert not any(k.endswith("last.pt") for k in keys)  # per-epoch checkpoints stay on the worker
    metrics = json.loads(store.read_bytes(f"{out}/metrics.json"))
    assert metrics["videos"] == 12 and set(metrics["probe"]) == {"video", "audio"}
    summary = json.loads(store.read_bytes(f"{out}/decoded/summary.json"))
    assert summary["accepted"] == 16 and summary["quarantined"] == 0

    # a new machine (empty work dir) resumes from what the bucket holds: nothing is recomputed
    monkeypatch.setenv("XDC_WORK_DIR", str(tmp_path / "work2"))
    r = xdc("run", "--data", f"s3://{bucket}/raw/manifest.csv", "--out", out, "--config", str(settings), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("already done") == 2
    assert json.loads(store.read_bytes(f"{out}/metrics.json"))["probe"] == metrics["probe"]


def test_missing_manifest_object_names_bucket_and_key(bucket: str, tmp_path: Path):
    r = xdc("run", "--data", f"s3://{bucket}/nowhere/manifest.csv", "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 2
    assert f"manifest not found: s3://{bucket}/nowhere/manifest.csv" in r.stderr


def test_wrong_credentials_fail_at_once_without_leaking_the_secret(bucket: str, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDC_S3_SECRET_KEY", "definitely-wrong-secret")
    r = xdc("run", "--data", f"s3://{bucket}/raw/manifest.csv", "--out", str(tmp_path / "o"), "--quiet")
    assert r.returncode == 2
    assert bucket in r.stderr and "definitely-wrong-secret" not in r.stderr + r.stdout
