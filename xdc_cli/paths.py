"""Object-store URIs wherever a command takes a path: inputs are fetched, outputs published.

The step functions work on local files; these two context managers put a local copy in front of
an ``s3://``/``minio://`` URI (credentials from ``XDC_S3_*``, see :mod:`xdc_core.store`) and
leave a local path alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from xdc_core import store


@contextmanager
def local_input(uri: str | None, folder: bool = False) -> Iterator[Path | None]:
    """A local path holding ``uri`` (a file, or with ``folder`` every object under it) for the block."""
    if uri is None or not store.is_remote(uri):
        yield None if uri is None else Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="xdc-in-") as tmp:
        local = Path(tmp) / PurePosixPath(str(uri).rstrip("/")).name
        if folder:
            store.download_dir(uri, local)
        else:
            store.download_file(uri, local)
        yield local


@contextmanager
def local_output(uri: str | None, folder: bool = False) -> Iterator[Path | None]:
    """A local path to write ``uri`` to; a remote ``uri`` gets what was written there when the block
    succeeds (nothing is published from a failed step)."""
    if uri is None or not store.is_remote(uri):
        yield None if uri is None else Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="xdc-out-") as tmp:
        local = Path(tmp) / PurePosixPath(str(uri).rstrip("/")).name
        yield local
        if folder:
            store.upload_dir(local, uri)
        elif local.is_file():
            store.upload_file(local, uri)
