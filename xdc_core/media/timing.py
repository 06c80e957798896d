"""Where clips and audio windows start, and how source frames map to target-rate frames.

Pure functions: times are seconds from the first video frame of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def random_clip_start(duration: float, clip_seconds: float, rng: np.random.Generator) -> float:
    """Temporal jitter for training: a start drawn uniformly so the clip fits in the video.

    A video shorter than one clip starts at 0 (its last frame is then repeated, see
    :func:`resample_frames`).
    """
    latest = max(0.0, duration - clip_seconds)
    return float(rng.uniform(0.0, latest)) if latest > 0 else 0.0


def uniform_clip_starts(duration: float, clip_seconds: float, n: int) -> list[float]:
    """``n`` deterministic, uniformly spaced clip starts covering the whole video (first and last included)."""
    latest = max(0.0, duration - clip_seconds)
    if n == 1:
        return [latest / 2]
    return [latest * i / (n - 1) for i in range(n)]


def audio_window_start(clip_start: float, clip_seconds: float, window_seconds: float, duration: float) -> float:
    """The audio window is centred on the clip, then shifted to lie inside the video when it can.

    A video shorter than the window starts it at 0 and the audio is zero-padded at the end.
    """
    centre = clip_start + clip_seconds / 2
    latest = max(0.0, duration - window_seconds)
    return min(max(0.0, centre - window_seconds / 2), latest)


def resample_frames(
    frames: Iterable[tuple[float, T]],
    fps: float,
    start: float = 0.0,
    count: int | None = None,
    last_frame_seconds: float | None = None,
) -> Iterator[T]:
    """Pick, for each tick ``start + i / fps``, the source frame nearest in time.

    ``frames`` yields ``(time, frame)`` in presentation order at any rate, so a 25 fps source
    repeats some frames at 30 fps and a 60 fps source skips some. With ``count`` the output has
    exactly ``count`` frames: when the source ends first, its last frame is repeated (the
    short-video rule). Without ``count`` it runs to the end of the source, i.e. while the tick is
    before the last frame's time plus ``last_frame_seconds`` (default: one tick).
    """
    tick = 0
    prev_t: float | None = None
    prev: T | None = None
    eps = 1e-6
    for t, frame in frames:
        if prev_t is None:
            prev_t, prev = t, frame
            continue
        boundary = (prev_t + t) / 2  # ticks before the midpoint are nearer to the previous frame
        while count is None or tick < count:
            if start + tick / fps >= boundary - eps:
                break
            yield prev  # type: ignore[misc]
            tick += 1
        if count is not None and tick >= count:
            return
        prev_t, prev = t, frame
    if prev_t is None:
        return
    end = prev_t + (1 / fps if last_frame_seconds is None else last_frame_seconds)
    while (tick < count) if count is not None else (start + tick / fps < end - eps):
        yield prev  # type: ignore[misc]
        tick += 1
