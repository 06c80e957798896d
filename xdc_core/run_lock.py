"""One ``xdc run`` per OUT at a time: advisory locks on a local OUT and on an object-store OUT.

* Local: ``flock`` on ``OUT/.xdc-run.lock`` (for an object-store OUT, on its local working
  folder). The kernel releases it when the process ends, however it ends.
* Object store: the lock object ``OUT/.xdc-run-lock.json`` saying who holds it (host, pid, start
  time). S3 has no lock to hold and the servers used here ignore conditional writes, so it is
  advisory: a run writes it, reads it back after a moment to see that no other run wrote over it,
  and deletes it when it ends. A ``kill -9`` leaves it behind: a run on the same host whose pid
  is gone is recognised as stale and replaced; from another host the message says how to clear it.

Once a run holds OUT, the temp files of killed writes under it are removed (only ours, by name).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import store
from .errors import RunError
from .layout import RunLayout

LOCK_OBJECT = ".xdc-run-lock.json"
SETTLE_S = 0.5  # how long a run waits before reading its lock object back (another run's write would show)


@contextlib.contextmanager
def local_lock(lock: Path, out: str | Path) -> Iterator[None]:
    """Hold ``flock`` on the file ``lock`` for the block; a :class:`RunError` naming the holder's pid
    when another process holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RunError(f"another xdc run (pid {holder}) is working in {out}: wait for it to end, or use another "
                           "--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(uri: str) -> dict[str, Any] | None:
    """The lock object's content; None when there is none; ``{}`` when it is not one we wrote."""
    try:
        held = json.loads(store.read_bytes(uri))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return held if isinstance(held, dict) else {}


def _stale_here(held: dict[str, Any]) -> bool:
    """Whether ``held`` names a process of this host that no longer runs."""
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _busy(uri: str, out: str, held: dict[str, Any]) -> RunError:
    who = (f"host {held.get('host')}, pid {held.get('pid')}, started {held.get('started')}" if held
           else "an unreadable lock")
    return RunError(
        f"another xdc run ({who}) holds the lock object {uri} of {out}: wait for it to end, or use another --out. "
        f"If no run works there any more (it was killed, or its machine is gone), delete {uri} (e.g. `mc rm` or "
        "`aws s3 rm`) and rerun: the run resumes")


@contextlib.contextmanager
def object_lock(out: str, log: Any = print) -> Iterator[None]:
    """Hold the lock object of the object-store OUT ``out`` for the block (see the module's doc)."""
    uri = f"{out.rstrip('/')}/{LOCK_OBJECT}"
    held = _holder(uri)
    if held is not None:
        if not _stale_here(held):
            raise _busy(uri, out, held)
        log(f"{uri}: replacing the lock of pid {held['pid']}, which no longer runs on this host")
    mine = {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": secrets.token_hex(8)}
    store.write_bytes(uri, json.dumps(mine).encode())
    time.sleep(SETTLE_S)
    held = _holder(uri)
    if not held or held.get("token") != mine["token"]:  # another run wrote over ours meanwhile: it goes on
        raise _busy(uri, out, held or {})
    try:
        yield
    finally:
        with contextlib.suppress(store.StoreError, OSError):  # unreachable now: the next run finds it stale
            if (_holder(uri) or {}).get("token") == mine["token"]:
                store.delete(uri)


@contextlib.contextmanager
def run_lock(layout: RunLayout, name: str | Path | None = None, log: Any = print) -> Iterator[None]:
    """Hold OUT for one run: the local lock, and the lock object when ``name`` (what the user called
    OUT) is an object-store URI; then remove what killed writes left under OUT."""
    out = name or layout.root
    with local_lock(layout.lock, out), (object_lock(str(out), log) if store.is_remote(out)
                                        else contextlib.nullcontext()):
        store.remove_stale_partials(layout.root)
        yield
