"""`xdc run` with its videos in a bucket and its OUT in the bucket, against a real S3 server."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY_SETTINGS
from test_cli import xdc

from xdc_core import store

pytestmark = pytest.mark.integration


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
                 "iter_00/video_encoder.pt", "iter_01/kmeans.json", "iter_01/train_audio.json", "iter_01/clusters.npz", "iter_02/features_video.npz", "iter_02/audio_encoder.pt"):
        assert name in keys, sorted(keys)
    assert not any(k.endswith(("last.pt", "last.pt.sha256")) for k in keys)  # per-epoch checkpoints stay on the worker
    metrics = json.loads(store.read_bytes(f"{out}/metrics.json"))
    assert metrics["iterations"] == 2 and {m: r["test_videos"] for m, r in metrics["probe"].items()} == {
        "video": 4, "audio": 4}
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


def test_every_command_takes_object_store_uris(tiny_sample: Path, bucket: str, tmp_path: Path):
    """`xdc decode` reads its manifest from the bucket and writes the dataset there; `xdc step
    embed` reads that dataset back by URI."""
    store.upload_dir(tiny_sample.parent, f"s3://{bucket}/raw2")
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump(TINY_SETTINGS))
    decoded = f"s3://{bucket}/decoded2"
    r = xdc("decode", "--manifest", f"s3://{bucket}/raw2/manifest.csv", "--out", decoded, "--config", str(settings),
            "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "index.csv" in {k.rsplit("/", 1)[-1] for k in store.list_keys(decoded)}
    r = xdc("step", "embed", "--data", decoded, "--modality", "audio", "--out", f"s3://{bucket}/f/audio.npz",
            "--config", str(settings))
    assert r.returncode == 0, r.stderr[-3000:]
    assert store.exists(f"s3://{bucket}/f/audio.npz")
    video = next(k for k in store.list_keys(f"s3://{bucket}/raw2") if k.endswith(".mp4"))
    r = xdc("probe", f"s3://{bucket}/raw2/{video}")
    assert r.returncode == 0 and '"duration": 2.5' in r.stdout, r.stderr
