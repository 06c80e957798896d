"""A pool of spawn worker processes that never outlive the process that started them.

Used wherever xdc fans work out to processes (decoding videos, writing the sample videos): a
``kill -9`` of the parent, a SIGTERM from Kubernetes or a Ctrl-C must not leave workers behind.
``concurrent.futures`` alone does not promise that, hence the initializer and the signal handling.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with(parent: int) -> None:
    """Worker initializer: end this worker when ``parent`` ends, however it ends.

    A spawn worker blocks on the pool's queue, whose pipe it holds both ends of, so a parent killed
    by ``kill -9`` would leave it (and, through it, multiprocessing's resource tracker) waiting for
    ever. Linux kills it with the parent (PR_SET_PDEATHSIG); elsewhere, or if the parent ended before
    the prctl, a thread notices the parent is gone within a second."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the thread below does it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="xdc-parent-watch", daemon=True).start()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` spawn workers that never outlive this process (:func:`end_with`).
    SIGTERM becomes a KeyboardInterrupt while it runs, and an interrupted or failed caller stops its
    workers at once rather than waiting for the tasks in flight (the callers' reruns redo them)."""
    ctx = get_context("spawn")  # no fork: the parent may hold threads (tqdm, torch)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=end_with, initargs=(os.getpid(),))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        yield pool
    except BaseException:
        # The public shutdown waits for the running tasks (terminate_workers() is Python 3.14's)
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
