"""libx264 settings that make its output byte-reproducible on the machine that runs it.

One encoder thread is not enough. x264's AVX-512 ``mbtree_propagate_list`` kernel steps 8
macroblocks at a time with no tail case: when a frame's width in macroblocks is not a multiple
of 8 (most widths) it reads up to 7 stale entries past the end of each row and adds them into the
macroblock-tree costs. The rate control, and so the bytes, then depend on what the process's heap
held before: 20 encodes of the same frames in one process gave up to 12 different files, with or
without other load. With the same CPU flags minus AVX-512 every repeat was identical (and no
slower at these frame sizes), so that is what x264 gets on a CPU with AVX-512; elsewhere nothing
changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

import av

X264_CPU_AVX512 = 1 << 16  # x264.h; no other architecture uses this bit


def _candidates() -> Iterator[str]:
    maps = Path("/proc/self/maps")  # Linux: the copy that `import av` already loaded
    if maps.is_file():
        yield from sorted({line.split()[-1] for line in maps.read_text().splitlines() if "/libx264" in line})
    pkg = Path(av.__file__).parent
    for libs in (pkg.parent / "av.libs", pkg / ".dylibs"):  # auditwheel / delvewheel, delocate
        if libs.is_dir():
            yield from sorted(str(p) for p in libs.iterdir() if "x264" in p.name)
    if found := ctypes.util.find_library("x264"):  # a PyAV built against the system FFmpeg
        yield found


def _libx264() -> ctypes.CDLL | None:
    """The libx264 that PyAV's libavcodec uses (wheels bundle it under a hashed file name)."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            lib.x264_cpu_detect.restype = ctypes.c_uint32
        except (OSError, AttributeError):
            continue
        return lib
    return None


@functools.cache
def _cpu_flags() -> int | None:
    """x264's CPU flags for this machine, without AVX-512; None where x264 would not use AVX-512."""
    lib = _libx264()
    if lib is None:
        warnings.warn(
            "libx264 not found, so its CPU flags are unknown: on a CPU with AVX-512 the re-encoded videos "
            "may differ from run to run",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    flags = int(lib.x264_cpu_detect())
    return flags & ~X264_CPU_AVX512 if flags & X264_CPU_AVX512 else None


def reproducible_params(params: str) -> str:
    """An ``x264-params`` value: ``params`` plus the CPU flags that keep the output reproducible."""
    flags = _cpu_flags()
    if flags is None:
        return params
    return f"{params}:asm={flags}" if params else f"asm={flags}"
