"""One artifact store for every read and write: local paths, ``file://`` and ``s3://``/``minio://``.

Plain paths and ``file:///abs/path`` work on the filesystem; ``s3://bucket/key`` and
``minio://bucket/key`` (the same thing) go through the ``minio`` SDK to the server named by
environment variables only (see :class:`S3Settings`), so code and configs never hold secrets.

Atomicity -- a killed step must never leave a half-written object that a later step trusts:

* local writes go to a hidden temp file in the target's folder (``.NAME.PID-RANDOM.xdc-partial``),
  are fsynced, then ``os.replace``-d into place; :func:`list_keys` skips such leftovers, and the
  next write of NAME (or :func:`remove_stale_partials`) removes those whose writer PID is gone.
* S3: a PUT and a *completed* multipart upload are atomic; an unfinished multipart upload is
  invisible. Checked against ``rclone serve s3`` (the test server): it writes a PUT to
  ``.rclone_temp_put_*`` and a multipart upload to ``.rclone_temp_multipart_*`` next to the
  key, hides both from listings and renames on success; a killed client leaves nothing at the
  key (a killed multipart may leave a hidden temp file on the server's disk). So uploads go
  straight to the final key: a temp key plus server-side copy would only double the I/O.

Transient failures (connection errors, timeouts, HTTP 5xx, SlowDown...) are retried with
exponential backoff by urllib3's ``Retry`` under the SDK, each request with connect and read
timeouts, so a dead or hanging server costs a bounded wait; permanent ones raise
:class:`StoreError` at once, naming endpoint, bucket, key and what to do -- never the credentials.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from urllib3.util.retry import Retry

from .errors import XdcError

log = logging.getLogger(__name__)
T = TypeVar("T")
Uri = str | os.PathLike[str]  # a path, file:///path, s3://bucket/key or minio://bucket/key

PARTIAL_SUFFIX = ".xdc-partial"  # marks a local write in progress (or killed): never trusted
PART_SIZE = 16 * 1024 * 1024  # multipart part size; S3 allows 5 MiB..5 GiB and 10,000 parts
CHUNK = 1024 * 1024  # streaming chunk for downloads and local copies
WORKERS = 8  # parallel transfers in upload_dir / download_dir
MAX_DELAY = 8.0  # cap of one backoff sleep, seconds

TRANSIENT_CODES = {"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable", "RequestTimeTooSkewed"}
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class StoreError(XdcError):
    """A store operation failed; the message says where (endpoint, bucket, key) and what to do."""


class NotFoundError(StoreError, FileNotFoundError):
    """The object or file does not exist (the bucket, if any, does)."""


class StoreUnavailable(StoreError):
    """The server did not answer usably within the retries: nothing is wrong with the object
    itself, so a step stops (a rerun resumes) rather than give up on that object."""


# --- where: URIs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A parsed URI: a local ``path``, or ``bucket`` and ``key`` on the S3 server."""

    scheme: str  # "file", "s3" or "minio"
    path: Path | None = None
    bucket: str = ""
    key: str = ""

    @property
    def is_local(self) -> bool:
        return self.path is not None

    def child(self, name: str) -> Location:
        """The location of ``name`` (a relative, '/'-separated path) under this one."""
        if self.path is not None:
            return Location(self.scheme, path=self.path / name)
        key = f"{self.key.rstrip('/')}/{name}" if self.key else name
        return Location(self.scheme, bucket=self.bucket, key=key)

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"{self.scheme}://{self.bucket}/{self.key}"


def parse_uri(uri: Uri) -> Location:
    """Parse a plain path, ``file:///abs/path``, ``s3://bucket/key`` or ``minio://bucket/key``."""
    text = os.fspath(uri)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return Location("file", path=Path(text))
    scheme = scheme.lower()
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise StoreError(f"malformed URI {text!r}: expected file:///absolute/path")
        return Location("file", path=Path("/" + path))
    if scheme not in ("s3", "minio"):
        raise StoreError(f"unsupported URI {text!r}: use a path, file:///path, s3://bucket/key or minio://bucket/key")
    bucket, _, key = rest.partition("/")
    if not BUCKET_RE.fullmatch(bucket):
        raise StoreError(
            f"malformed URI {text!r}: expected {scheme}://bucket/key with a bucket name of 3-63 "
            "lowercase letters, digits, '.' or '-'"
        )
    return Location(scheme, bucket=bucket, key=key)


def _object(uri: Uri) -> Location:
    """Parse a URI that must name one object (a key, not just a bucket)."""
    loc = parse_uri(uri)
    if not loc.is_local and (not loc.key or loc.key.endswith("/")):
        raise StoreError(f"URI {uri!s} names no object: expected {loc.scheme}://{loc.bucket}/path/to/object")
    if not loc.is_local and {".", ".."} & set(loc.key.split("/")):
        raise StoreError(f"URI {uri!s}: an object key has no '.' or '..' parts (S3 keys are names, not paths "
                         "to walk): name the object itself")
    return loc


# --- how: connection settings ------------------------------------------------------------------


def _env(*names: str) -> str:
    return next((os.environ[n].strip() for n in names if os.environ.get(n, "").strip()), "")


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise StoreError(f"{name}={value!r} is not a boolean: use true or false")


@dataclass(frozen=True, repr=False)
class S3Settings:
    """Connection settings, from the environment only (see :meth:`from_env`).

    Read at each operation (a few dict lookups, so a changed environment takes effect); one
    client is kept per distinct settings. ``repr`` masks the keys.
    """

    endpoint: str  # host[:port], as minio wants it
    access_key: str
    secret_key: str
    secure: bool = True
    region: str | None = None
    retries: int = 5  # attempts in all, not extra ones
    retry_base: float = 0.5  # backoff factor, seconds: no sleep before the first retry, then 2, 4... x this, up to MAX_DELAY
    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 60.0  # seconds a server may stay silent while answering (not the whole transfer)

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    def __repr__(self) -> str:  # credentials masked: settings end up in logs and tracebacks
        return (
            f"S3Settings(endpoint={self.url!r}, access_key='***', secret_key='***', "
            f"region={self.region!r}, retries={self.retries}, retry_base={self.retry_base}, "
            f"timeouts={self.connect_timeout}/{self.read_timeout})"
        )

    @property
    def longest_wait(self) -> float:
        """A bound on how long one request takes to fail against a server that accepts connections
        but never answers: each attempt waits ``read_timeout``, with urllib3's backoffs between
        (none before the first retry, then ``retry_base`` x 2, 4... plus jitter, capped)."""
        backoffs = sum(min(MAX_DELAY, self.retry_base * (2 ** (n - 1) + 1)) for n in range(2, self.retries))
        return self.retries * self.read_timeout + backoffs

    def retry(self) -> Retry:
        """urllib3's retry policy of every request: ``retries`` attempts in all on connection
        errors, timeouts and 5xx/429 answers (idempotent methods only; the S3 API's POSTs are
        retried whole by :func:`_call`), exponential backoff with jitter, Retry-After honoured."""
        return Retry(
            total=self.retries - 1, backoff_factor=self.retry_base, backoff_max=MAX_DELAY,
            backoff_jitter=self.retry_base, status_forcelist=TRANSIENT_STATUS, respect_retry_after_header=True,
            raise_on_status=True, redirect=False,
        )

    @classmethod
    def from_env(cls) -> S3Settings:
        """Read ``XDC_S3_*`` (falling back to the usual AWS_*/MINIO_* names); fail naming what to set."""
        endpoint = _env("XDC_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
        access = _env("XDC_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY")
        secret = _env("XDC_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY")
        missing = [
            what
            for what, value in (
                ("XDC_S3_ENDPOINT (or AWS_ENDPOINT_URL / MINIO_ENDPOINT)", endpoint),
                ("XDC_S3_ACCESS_KEY (or AWS_ACCESS_KEY_ID / MINIO_ACCESS_KEY)", access),
                ("XDC_S3_SECRET_KEY (or AWS_SECRET_ACCESS_KEY / MINIO_SECRET_KEY)", secret),
            )
            if not value
        ]
        if missing:
            raise StoreError("s3:// and minio:// URIs need a server: set " + ", ".join(missing))
        secure = True
        scheme, sep, hostport = endpoint.partition("://")
        if sep:  # a URL: its scheme says TLS or not, and it must not carry a path
            if scheme.lower() not in ("http", "https") or hostport.strip("/").count("/"):
                raise StoreError(f"S3 endpoint {endpoint!r}: expected host:port or http(s)://host:port")
            secure, endpoint = scheme.lower() == "https", hostport.strip("/")
        if _env("XDC_S3_SECURE"):
            secure = _flag("XDC_S3_SECURE", _env("XDC_S3_SECURE"))
        try:
            retries = max(1, int(_env("XDC_S3_RETRIES") or 5))
            numbers = {name: float(_env(f"XDC_S3_{name.upper()}") or default)
                       for name, default in (("retry_base", 0.5), ("connect_timeout", 10.0), ("read_timeout", 60.0))}
        except ValueError:
            raise StoreError("XDC_S3_RETRIES must be an integer; XDC_S3_RETRY_BASE, XDC_S3_CONNECT_TIMEOUT and "
                             "XDC_S3_READ_TIMEOUT numbers of seconds") from None
        if numbers["connect_timeout"] <= 0 or numbers["read_timeout"] <= 0:
            raise StoreError("XDC_S3_CONNECT_TIMEOUT and XDC_S3_READ_TIMEOUT must be more than 0 seconds")
        numbers["retry_base"] = max(0.0, numbers["retry_base"])
        return cls(endpoint, access, secret, secure, _env("XDC_S3_REGION") or None, retries, **numbers)


@functools.lru_cache(maxsize=4)
def _client(settings: S3Settings) -> Minio:
    """One client per distinct settings; its requests retry and time out as ``settings`` say."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
        maxsize=WORKERS + 2, retries=settings.retry(),
    )
    return Minio(settings.endpoint, settings.access_key, settings.secret_key,
                 secure=settings.secure, region=settings.region, http_client=http)


# --- errors and retries ------------------------------------------------------------------------


def _code_and_status(err: Exception) -> tuple[str | None, int | None]:
    if isinstance(err, S3Error):
        return err.code, err.response.status if err.response is not None else None
    if isinstance(err, ServerError):
        return None, err.status_code
    if isinstance(err, InvalidResponseError):  # an error body the SDK could not parse as XML
        found = re.search(r"<Code>([^<]+)</Code>", str(err))
        return (found.group(1) if found else None), getattr(err, "_code", None)
    return None, None


def _is_transient(err: Exception) -> bool:
    if isinstance(err, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return True
    code, status = _code_and_status(err)
    return code in TRANSIENT_CODES or (code is None and status in TRANSIENT_STATUS)


def _explain(settings: S3Settings, loc: Location, action: str, err: Exception) -> StoreError:
    """Turn a permanent SDK error into a StoreError that says where and what to do."""
    code, status = _code_and_status(err)
    if code == "NoSuchBucket":
        return StoreError(f"bucket {loc.bucket!r} does not exist on {settings.url}: create it or fix the URI {loc}")
    if code in ("NoSuchKey", "NoSuchObject") or (code is None and status == 404):
        return NotFoundError(
            f"no object {loc.key!r} in bucket {loc.bucket!r} on {settings.url} ({action} {loc}): "
            "check the URI, or run the step that writes it first"
        )
    if code in ACCESS_CODES or status == 403:
        return StoreError(
            f"access denied ({code or status}) to {action} {loc} (bucket {loc.bucket!r}, key {loc.key!r}) "
            f"on {settings.url}: check XDC_S3_ACCESS_KEY/XDC_S3_SECRET_KEY and the bucket's policy"
        )
    detail = getattr(err, "message", None) or type(err).__name__
    return StoreError(f"{action} {loc} on {settings.url} failed: {code or status}: {detail}")


def _call(loc: Location, action: str, fn: Callable[[Minio], T]) -> T:
    """Run ``fn(client)``; a :class:`StoreError` saying where and what to do when it fails.

    urllib3 retries each request (:meth:`S3Settings.retry`). What it cannot see is retried here,
    the whole operation again with the same backoff: a response body cut off or stalled after
    the headers came (a download), an S3 error code urllib3 does not read from the XML body
    (``RequestTimeout`` is a 400, ``SlowDown`` may come with any status) and a failed POST (the
    multipart uploads' start and end, which urllib3 leaves alone as not idempotent). ``fn`` must
    be safe to repeat from the start (it reopens files and streams itself).
    """
    settings = S3Settings.from_env()
    client = _client(settings)
    for attempt in range(1, settings.retries + 1):
        try:
            return fn(client)
        except (MinioException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as err:
            retried = isinstance(err, urllib3.exceptions.MaxRetryError)  # urllib3 gave up already
            if not retried and not _is_transient(err):
                raise _explain(settings, loc, action, err) from err
            cause = err.reason if retried and err.reason is not None else err
            reason = str(cause).replace(settings.secret_key, "***")[:300]
            if retried or attempt == settings.retries:
                raise StoreUnavailable(
                    f"{action} {loc}: {settings.url} failed {settings.retries} times, last with: {reason}; check "
                    "that the server runs and is not overloaded, and that XDC_S3_ENDPOINT points at it (each try "
                    f"waits at most XDC_S3_READ_TIMEOUT={settings.read_timeout:g} s for an answer)"
                ) from err
            delay = min(MAX_DELAY, settings.retry_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning("%s %s: %s; retry %d/%d in %.2fs", action, loc, reason, attempt, settings.retries - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _part_size(size: int) -> int:
    """PART_SIZE, or bigger where needed to stay within S3's 10,000 parts."""
    return max(PART_SIZE, -(-size // (10_000 * CHUNK)) * CHUNK)


# --- local files -------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Write to a hidden temp file beside ``path``; rename it over ``path`` only on success, so a
    killed process never leaves a truncated file under the final name. The one atomic writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, path.name)  # a killed earlier write of this file
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    try:
        with open(tmp, "xb") as f:  # not mkstemp: that would make the file 0600, ignoring umask
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:  # a write or fsync error (a full disk) names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[0-9a-f]{8}" + re.escape(PARTIAL_SUFFIX))


def _writer_gone(pid: str | None) -> bool:
    if pid is None:  # the name of an older xdc: no writer of that version runs any more
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's process: alive; or no pid at all
        return False
    return False


def _remove_stale(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temp files in ``folder`` (of ``name`` only, if given) whose writing process is gone."""
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            found = _PARTIAL.fullmatch(entry.name)
            if found and (name is None or found["name"] == name) and _writer_gone(found["pid"]):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def remove_stale_partials(root: str | os.PathLike[str]) -> list[Path]:
    """Remove, under the folder ``root``, the temp files of atomic writes whose process was killed
    (only ours, by their name and a writer PID that no longer runs). Returns what was removed."""
    removed = []
    for folder, _, _ in os.walk(root):
        removed += _remove_stale(Path(folder))
    return removed


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2) + "\n").encode())


def _copy_local(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, atomic_write(dst) as fout:
        shutil.copyfileobj(fin, fout, CHUNK)


# --- the operations ----------------------------------------------------------------------------


def exists(uri: Uri) -> bool:
    """Whether an object (a file, locally) exists at ``uri``. A missing bucket is an error."""
    loc = _object(uri)
    if loc.path is not None:
        return loc.path.is_file()
    try:
        _call(loc, "stat", lambda c: c.stat_object(loc.bucket, loc.key))
    except NotFoundError:
        return False
    return True


def stat(uri: Uri) -> tuple[int, str] | None:
    """``(size, version)`` of the object at ``uri`` (version: the ETag, or a local file's mtime),
    or None when there is none: enough to tell whether a source changed since it was last read."""
    loc = _object(uri)
    if loc.path is not None:
        try:
            st = loc.path.stat()
        except OSError:
            return None
        return st.st_size, str(st.st_mtime_ns)
    try:
        obj = _call(loc, "stat", lambda c: c.stat_object(loc.bucket, loc.key))
    except NotFoundError:
        return None
    return int(obj.size or 0), str(obj.etag)


def is_remote(uri: Uri) -> bool:
    """Whether ``uri`` names an object store (s3://, minio://) rather than the filesystem."""
    return not parse_uri(uri).is_local


def read_bytes(uri: Uri) -> bytes:
    """The whole object at ``uri``."""
    return read_range(uri, 0, None)


def read_range(uri: Uri, offset: int, length: int | None) -> bytes:
    """``length`` bytes from ``offset`` (all to the end if None); shorter at the end, like a file."""
    loc = _object(uri)
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"read_range({loc}): offset and length must be >= 0 (got {offset}, {length})")
    if loc.path is not None:
        with open(loc.path, "rb") as f:
            f.seek(offset)
            return f.read() if length is None else f.read(length)
    if length == 0:
        return b""

    def get(c: Minio) -> bytes:
        try:
            resp = c.get_object(loc.bucket, loc.key, offset=offset, length=length or 0)
        except S3Error as err:
            if err.code == "InvalidRange":  # offset at or past the end: a file read gives b""
                return b""
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    return _call(loc, "read", get)


def write_bytes(uri: Uri, data: bytes) -> None:
    """Store ``data`` at ``uri``, atomically. (BytesIO shares ``data`` rather than copying it.)"""
    loc = _object(uri)
    if loc.path is not None:
        with atomic_write(loc.path) as f:
            f.write(data)
        return
    _call(loc, "write", lambda c: c.put_object(
        loc.bucket, loc.key, io.BytesIO(data), len(data), part_size=_part_size(len(data)), num_parallel_uploads=1))


def upload_file(local_path: str | os.PathLike[str], uri: Uri) -> None:
    """Copy a local file to ``uri``: multipart above PART_SIZE, streamed (one part in memory)."""
    src, loc = Path(local_path), _object(uri)
    if not src.is_file():
        raise FileNotFoundError(f"upload_file: no local file {src}")
    if loc.path is not None:
        _copy_local(src, loc.path)
        return
    # One part at a time: with parallel uploads the SDK reads parts into an unbounded queue, so
    # a file read faster than the network takes it would end up in memory whole.
    size = src.stat().st_size
    _call(loc, "upload", lambda c: c.fput_object(
        loc.bucket, loc.key, str(src), part_size=_part_size(size), num_parallel_uploads=1))


def download_file(uri: Uri, local_path: str | os.PathLike[str]) -> Path:
    """Copy the object at ``uri`` to ``local_path``, streamed, via a temp file and a rename."""
    loc, dst = _object(uri), Path(local_path)
    if loc.path is not None:
        _copy_local(loc.path, dst)
        return dst

    def get(c: Minio) -> None:
        resp = c.get_object(loc.bucket, loc.key)
        try:
            with atomic_write(dst) as f:
                for chunk in resp.stream(CHUNK):
                    f.write(chunk)
        finally:
            resp.close()
            resp.release_conn()

    _call(loc, "download", get)
    return dst


def list_keys(prefix_uri: Uri) -> list[str]:
    """Names of all objects under the folder ``prefix_uri``, relative to it, sorted; [] if none."""
    loc = parse_uri(prefix_uri)
    if loc.path is not None:
        if not loc.path.is_dir():
            return []
        return sorted(
            p.relative_to(loc.path).as_posix()
            for p in loc.path.rglob("*")
            if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)
        )
    prefix = loc.key.rstrip("/") + "/" if loc.key.strip("/") else ""
    names = _call(loc, "list", lambda c: [o.object_name for o in c.list_objects(loc.bucket, prefix, recursive=True)])
    return sorted(n[len(prefix):] for n in names if n and not n.endswith("/"))


def delete(uri: Uri) -> None:
    """Remove the object at ``uri``; removing what is not there is not an error."""
    loc = _object(uri)
    if loc.path is not None:
        loc.path.unlink(missing_ok=True)
        return
    _call(loc, "delete", lambda c: c.remove_object(loc.bucket, loc.key))


def upload_dir(local_dir: str | os.PathLike[str], uri_prefix: Uri) -> list[str]:
    """Mirror the files under ``local_dir`` to ``uri_prefix``; returns their relative names.

    Each file is atomic, the folder as a whole is not: a caller that needs all-or-nothing writes
    a marker (a manifest, a done file) last and has readers check it first.
    """
    src, dst = Path(local_dir), parse_uri(uri_prefix)
    if not src.is_dir():
        raise FileNotFoundError(f"upload_dir: no local folder {src}")
    names = list_keys(src)
    _parallel(lambda name: upload_file(src / name, str(dst.child(name))), names)
    return names


def download_dir(
    uri_prefix: Uri, local_dir: str | os.PathLike[str], only: Iterable[str] | None = None
) -> list[Path]:
    """Mirror the objects under ``uri_prefix`` into ``local_dir``; returns the local paths.

    ``only``: relative names to fetch (e.g. one shard) instead of everything; nothing is listed
    then, and a missing name raises :class:`NotFoundError`.
    """
    src, dst = parse_uri(uri_prefix), Path(local_dir)
    names = list_keys(uri_prefix) if only is None else sorted(set(only))
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise StoreError(f"download_dir({src}): {name!r} is not a relative name under the prefix")
    return _parallel(lambda name: download_file(str(src.child(name)), dst / name), names)


def _parallel(fn: Callable[[str], T], names: list[str]) -> list[T]:
    """``fn`` over ``names`` on a few threads (transfers wait on the network, not the CPU)."""
    if len(names) <= 1:
        return [fn(n) for n in names]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(names))) as pool:
        return list(pool.map(fn, names))
