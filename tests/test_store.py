"""xdc_core.store against a real S3 server (rclone serve s3, see s3_server.py) and the local disk."""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
from s3_server import free_port, running_s3_server

from xdc_core import store
from xdc_core.store import NotFoundError, S3Settings, StoreError, parse_uri

REPO = Path(__file__).resolve().parents[1]
BIG = 100 * 1024 * 1024


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def full_text(err: BaseException) -> str:
    """The message, the chained causes and the traceback: where a leaked secret would show."""
    return "".join(traceback.format_exception(err)) + repr(err)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[Path, str]:
    """100 MB of random bytes (written in chunks) and its sha256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(BIG // (4 << 20)):
            chunk = os.urandom(4 << 20)
            h.update(chunk)
            f.write(chunk)
    return path, h.hexdigest()


# --- URIs and settings (no server) -------------------------------------------------------------


def test_parse_uri_forms():
    assert parse_uri("data/x.npy").path == Path("data/x.npy")
    assert parse_uri(Path("/abs/x")).path == Path("/abs/x")
    assert parse_uri("file:///abs/x").path == Path("/abs/x")
    s3 = parse_uri("s3://my-bucket/a/b.bin")
    assert (s3.scheme, s3.bucket, s3.key, s3.is_local) == ("s3", "my-bucket", "a/b.bin", False)
    assert str(s3) == "s3://my-bucket/a/b.bin"
    assert parse_uri("minio://my-bucket/k").bucket == "my-bucket"
    assert str(parse_uri("s3://bkt").child("x/y")) == "s3://bkt/x/y"
    assert str(parse_uri("s3://bkt/dir/").child("y")) == "s3://bkt/dir/y"


@pytest.mark.parametrize("uri", ["s3://", "s3:///key", "minio://ab/k", "s3://Bad_Bucket/k", "gs://b/k", "file://host/x"])
def test_malformed_uri_names_it_and_the_expected_form(uri):
    with pytest.raises(StoreError) as info:
        parse_uri(uri)
    assert repr(uri) in str(info.value) and ("://" in str(info.value).replace(repr(uri), ""))


def test_object_uri_needs_a_key():
    with pytest.raises(StoreError, match="names no object"):
        store.read_bytes("s3://bkt/")


def test_settings_from_env_and_masked_repr(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("XDC_S3_", "AWS_", "MINIO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.1:9000")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "the-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-secret-key")
    s = S3Settings.from_env()
    assert (s.endpoint, s.secure, s.url, s.retries, s.retry_base) == ("10.0.0.1:9000", False, "http://10.0.0.1:9000", 5, 0.5)
    assert "the-secret-key" not in repr(s) and "the-access-key" not in repr(s) and "the-secret-key" not in str(s)
    monkeypatch.setenv("XDC_S3_ENDPOINT", "minio.local:9000")  # host:port: TLS unless told otherwise
    assert S3Settings.from_env().secure is True
    monkeypatch.setenv("XDC_S3_SECURE", "false")
    assert S3Settings.from_env().secure is False
    monkeypatch.setenv("XDC_S3_SECURE", "maybe")
    with pytest.raises(StoreError, match="XDC_S3_SECURE"):
        S3Settings.from_env()
    monkeypatch.setenv("XDC_S3_SECURE", "false")
    assert (s.connect_timeout, s.read_timeout) == (10.0, 60.0)
    monkeypatch.setenv("XDC_S3_READ_TIMEOUT", "2.5")
    assert S3Settings.from_env().read_timeout == 2.5
    assert S3Settings.from_env().retry().total == 4  # 5 attempts in all
    monkeypatch.setenv("XDC_S3_READ_TIMEOUT", "0")
    with pytest.raises(StoreError, match="XDC_S3_READ_TIMEOUT must be more than 0"):
        S3Settings.from_env()


def test_missing_settings_name_the_variables(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("XDC_S3_", "AWS_", "MINIO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDC_S3_SECRET_KEY", "the-secret-key")
    with pytest.raises(StoreError) as info:
        store.read_bytes("s3://bkt/key")
    msg = str(info.value)
    assert "XDC_S3_ENDPOINT" in msg and "XDC_S3_ACCESS_KEY" in msg and "XDC_S3_SECRET_KEY" not in msg
    assert "the-secret-key" not in full_text(info.value)


# --- local paths and file:// -------------------------------------------------------------------


@pytest.mark.parametrize("as_uri", [False, True])
def test_local_round_trips(tmp_path, as_uri):
    def u(p: Path) -> str:
        return f"file://{p}" if as_uri else str(p)

    obj = tmp_path / "store" / "a" / "b.bin"
    store.write_bytes(u(obj), b"hello world")
    assert store.exists(u(obj)) and store.read_bytes(u(obj)) == b"hello world"
    assert store.read_range(u(obj), 6, 5) == b"world" and store.read_range(u(obj), 50, 5) == b""
    (obj.parent / f".b.bin.dead{store.PARTIAL_SUFFIX}").write_bytes(b"half")  # a killed write's leftover
    assert store.list_keys(u(tmp_path / "store")) == ["a/b.bin"]
    src = tmp_path / "src"
    for name in ("x.bin", "sub/y.bin", "sub/deeper/z.bin"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode())
    assert store.upload_dir(src, u(tmp_path / "mirror")) == ["sub/deeper/z.bin", "sub/y.bin", "x.bin"]
    got = store.download_dir(u(tmp_path / "mirror"), tmp_path / "back", only=["sub/y.bin"])
    assert got == [tmp_path / "back" / "sub" / "y.bin"] and got[0].read_bytes() == b"sub/y.bin"
    assert sorted(p.name for p in (tmp_path / "back").rglob("*") if p.is_file()) == ["y.bin"]
    store.delete(u(obj))
    store.delete(u(obj))  # idempotent
    assert not store.exists(u(obj))
    with pytest.raises(FileNotFoundError):
        store.read_bytes(u(obj))


# --- S3: round trips ---------------------------------------------------------------------------


def test_s3_bytes_round_trip(bucket):
    uri = f"s3://{bucket}/runs/r1/meta.json"
    assert not store.exists(uri)
    store.write_bytes(uri, b'{"ok": true}')
    assert store.exists(uri) and store.read_bytes(uri) == b'{"ok": true}'
    assert store.read_bytes(f"minio://{bucket}/runs/r1/meta.json") == b'{"ok": true}'
    store.write_bytes(f"s3://{bucket}/empty", b"")
    assert store.read_bytes(f"s3://{bucket}/empty") == b""
    assert store.list_keys(f"s3://{bucket}/runs") == ["r1/meta.json"]
    assert store.list_keys(f"s3://{bucket}") == ["empty", "runs/r1/meta.json"]
    assert store.list_keys(f"s3://{bucket}/nothing-here/") == []
    store.delete(uri)
    store.delete(uri)  # idempotent
    assert not store.exists(uri)


def test_s3_ranged_read(bucket):
    uri = f"s3://{bucket}/shard.bin"
    store.write_bytes(uri, bytes(range(256)) * 4)
    assert store.read_range(uri, 10, 5) == bytes(range(10, 15))
    assert store.read_range(uri, 1020, 100) == bytes(range(252, 256))  # short at the end, like a file
    assert store.read_range(uri, 1024, 5) == b"" and store.read_range(uri, 5000, 5) == b""
    assert store.read_range(uri, 3, 0) == b""


def test_s3_file_and_dir_round_trip_with_subset(bucket, tmp_path):
    src = tmp_path / "decoded"
    names = ["manifest.csv", "shards/shard-000.npy", "shards/shard-001.npy", "shards/shard-002.npy"]
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(os.urandom(1000) + name.encode())
    prefix = f"s3://{bucket}/datasets/d1"
    assert store.upload_dir(src, prefix) == names
    assert store.list_keys(prefix) == names
    # one shard, without listing or fetching the rest
    got = store.download_dir(prefix, tmp_path / "one", only=["shards/shard-001.npy"])
    assert [p.relative_to(tmp_path / "one").as_posix() for p in got] == ["shards/shard-001.npy"]
    assert [p for p in (tmp_path / "one").rglob("*") if p.is_file()] == got
    assert got[0].read_bytes() == (src / "shards/shard-001.npy").read_bytes()
    # everything
    got = store.download_dir(prefix, tmp_path / "all")
    assert all((tmp_path / "all" / n).read_bytes() == (src / n).read_bytes() for n in names) and len(got) == 4
    # one file
    store.upload_file(src / "manifest.csv", f"s3://{bucket}/m.csv")
    assert store.download_file(f"s3://{bucket}/m.csv", tmp_path / "m.csv").read_bytes() == (src / "manifest.csv").read_bytes()
    with pytest.raises(NotFoundError, match="shard-009"):
        store.download_dir(prefix, tmp_path / "none", only=["shards/shard-009.npy"])
    with pytest.raises(StoreError, match="not a relative name"):
        store.download_dir(prefix, tmp_path / "none", only=["../escape"])


def test_s3_multipart_100mb_streamed_both_ways(bucket, big_file, tmp_path, s3_env):
    path, digest = big_file
    uri = f"s3://{bucket}/big/object.bin"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    store.upload_file(path, uri)
    out = store.download_file(uri, tmp_path / "dl" / "object.bin")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    assert sha256(out) == digest
    assert grown < 4 * store.PART_SIZE < BIG, f"peak memory grew by {grown >> 20} MiB: not streamed"
    assert [p.name for p in out.parent.iterdir()] == ["object.bin"]  # no temp file left beside it
    if s3_env.log_path:  # the server says it assembled a multipart upload at that key
        assert any(".rclone_temp_multipart_" in line and f"to: {bucket}/big/object.bin" in line
                   for line in s3_env.log().splitlines())


# --- S3: errors --------------------------------------------------------------------------------


def test_missing_bucket_is_a_clear_error(s3_env):
    with pytest.raises(StoreError) as info:
        store.read_bytes("s3://no-such-bucket-here/some/key")
    msg = str(info.value)
    assert "bucket 'no-such-bucket-here' does not exist" in msg and s3_env.url in msg and "some/key" in msg
    assert not isinstance(info.value, NotFoundError)
    assert s3_env.secret_key not in full_text(info.value)


def test_missing_key_is_not_found(bucket, s3_env):
    with pytest.raises(NotFoundError) as info:
        store.read_bytes(f"s3://{bucket}/no/such/key.bin")
    msg = str(info.value)
    assert "'no/such/key.bin'" in msg and repr(bucket) in msg and s3_env.url in msg
    assert isinstance(info.value, FileNotFoundError)
    assert s3_env.secret_key not in full_text(info.value)


def test_wrong_credentials_are_a_clear_error_without_the_secret(bucket, s3_env, monkeypatch):
    store.write_bytes(f"s3://{bucket}/k", b"x")
    wrong = "not-the-secret-" + s3_env.secret_key[:6]
    monkeypatch.setenv("XDC_S3_SECRET_KEY", wrong)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.read_bytes(f"s3://{bucket}/k")
    assert time.monotonic() - started < 2, "a permanent error must not be retried"
    msg = str(info.value)
    assert "access denied" in msg and "XDC_S3_ACCESS_KEY/XDC_S3_SECRET_KEY" in msg
    assert s3_env.url in msg and repr(bucket) in msg and "'k'" in msg
    text = full_text(info.value)
    assert wrong not in text and s3_env.secret_key not in text


def test_nothing_listening_fails_after_the_retries_naming_the_endpoint(monkeypatch, caplog, s3_env):
    endpoint = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("XDC_S3_ENDPOINT", f"http://{endpoint}")
    monkeypatch.setenv("XDC_S3_RETRIES", "3")
    monkeypatch.setenv("XDC_S3_RETRY_BASE", "0.01")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(StoreError) as info:
        store.read_bytes("s3://some-bucket/k")
    assert time.monotonic() - started < 5
    assert f"http://{endpoint} failed 3 times" in str(info.value) and "XDC_S3_ENDPOINT" in str(info.value)
    assert "Connection refused" in str(info.value)
    # urllib3's Retry under the SDK: 3 attempts in all, so 2 retries
    assert len([r for r in caplog.records if r.getMessage().startswith("Retrying")]) == 2
    assert s3_env.secret_key not in full_text(info.value) + caplog.text


def test_retries_until_the_server_comes_up(tmp_path, monkeypatch, caplog, s3_env):
    port, keys = free_port(), ("late-access-key", "late-secret-key-123")
    (tmp_path / "root" / "late-bucket").mkdir(parents=True)
    (tmp_path / "root" / "late-bucket" / "k.txt").write_bytes(b"worth the wait")
    done = threading.Event()

    def serve_later() -> None:
        time.sleep(0.5)
        with running_s3_server(port=port, root=tmp_path / "root", keys=keys):
            done.wait(30)

    thread = threading.Thread(target=serve_later, daemon=True)
    thread.start()
    for name, value in {"XDC_S3_ENDPOINT": f"http://127.0.0.1:{port}", "XDC_S3_ACCESS_KEY": keys[0],
                        "XDC_S3_SECRET_KEY": keys[1], "XDC_S3_RETRIES": "8", "XDC_S3_RETRY_BASE": "0.1"}.items():
        monkeypatch.setenv(name, value)
    try:
        with caplog.at_level(logging.WARNING):
            assert store.read_bytes("s3://late-bucket/k.txt") == b"worth the wait"
        assert any("Connection refused" in r.getMessage() for r in caplog.records)
    finally:
        done.set()
        thread.join(10)


# --- S3: atomicity -----------------------------------------------------------------------------


def test_killed_upload_leaves_nothing_a_later_step_would_trust(bucket, big_file, s3_env, tmp_path):
    path, digest = big_file
    uri = f"s3://{bucket}/out/model.bin"
    code = "import sys; from xdc_core import store; print('go', flush=True); store.upload_file(sys.argv[1], sys.argv[2])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), uri], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"go\n"
        if s3_env.root is not None:  # kill as soon as the server has received some of it
            bucket_dir, deadline = s3_env.root / bucket, time.monotonic() + 20
            while not any(f for _, _, f in os.walk(bucket_dir)) and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(0.4)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the upload finished before it could be killed"
    time.sleep(0.3)  # let the server notice the dropped connection
    assert not store.exists(uri)
    assert store.list_keys(f"s3://{bucket}/out") == [] and store.list_keys(f"s3://{bucket}") == []
    with pytest.raises(NotFoundError):
        store.download_file(uri, tmp_path / "model.bin")
    assert not (tmp_path / "model.bin").exists()
    if s3_env.root is not None:  # on disk, at most the server's hidden temp file of the upload
        left = [f for _, _, fs in os.walk(s3_env.root / bucket) for f in fs]
        assert all(f.startswith(".rclone_temp_") for f in left), left
    # the rerun completes
    store.upload_file(path, uri)
    assert sha256(store.download_file(uri, tmp_path / "model.bin")) == digest
    assert store.list_keys(f"s3://{bucket}/out") == ["model.bin"]
