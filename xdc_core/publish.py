"""An object-store OUT for :func:`xdc_core.run.run`: compute in a local folder, publish to the bucket.

:func:`mirror` fetches what a previous attempt already stored (finished iterations, the decoded
dataset), so a rerun resumes, and returns the local folder and the ``publish`` callback the loop
calls with each finished file or folder: a crash loses at most the step in flight.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import store


def work_dir(uri: str) -> Path:
    """The local working folder of a run whose OUT is ``uri``: ``$XDC_WORK_DIR`` (default: the
    system temp folder) / a name derived from the URI, so a rerun finds its own files."""
    base = Path(os.environ.get("XDC_WORK_DIR") or Path(tempfile.gettempdir()) / "xdc-work")
    return base / hashlib.sha1(uri.encode()).hexdigest()[:16]


def _version(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def mirror(uri: str, log: Callable[[str], None] = print) -> tuple[Path, Callable[[Path], None]]:
    """``(local folder, publish)`` for the object-store OUT ``uri``, after fetching what it holds."""
    local = work_dir(uri)
    local.mkdir(parents=True, exist_ok=True)
    fetched = store.download_dir(uri, local)
    log(f"OUT is {uri}: working in {local}" + (f", {len(fetched)} files fetched from it" if fetched else ""))
    stored = {p: _version(p) for p in fetched}  # local file -> (size, mtime) of what the store holds

    def publish(path: Path) -> None:
        """Upload ``path`` (a file or a folder), skipping files the store holds unchanged and the
        training checkpoints (they only matter on the machine that trains)."""
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if f.name in ("last.pt", "last.pt.sha256") or stored.get(f) == _version(f):
                continue
            store.upload_file(f, f"{uri.rstrip('/')}/{f.relative_to(local).as_posix()}")
            stored[f] = _version(f)

    return local, publish
