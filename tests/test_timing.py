import numpy as np
import pytest

from xdc_core.media.timing import audio_window_start, random_clip_start, resample_frames, uniform_clip_starts


def frames_at(fps: float, n: int) -> list[tuple[float, int]]:
    return [(i / fps, i) for i in range(n)]


def test_same_rate_is_identity():
    assert list(resample_frames(frames_at(30, 10), 30)) == list(range(10))


def test_lower_source_rate_repeats_nearest_frames():
    # 10 fps -> 30 fps: each source frame covers three ticks, centred on it.
    assert list(resample_frames(frames_at(10, 3), 30, count=9)) == [0, 0, 1, 1, 1, 2, 2, 2, 2]


def test_higher_source_rate_skips_frames():
    assert list(resample_frames(frames_at(60, 12), 30, count=6)) == [0, 2, 4, 6, 8, 10]


def test_start_offset_skips_frames_before_it():
    # A seek lands on an earlier keyframe: frames before the start are decoded but not used.
    assert list(resample_frames(frames_at(30, 30), 30, start=0.5, count=3)) == [15, 16, 17]


def test_short_source_repeats_its_last_frame():
    assert list(resample_frames(frames_at(30, 3), 30, count=6)) == [0, 1, 2, 2, 2, 2]


def test_without_count_runs_to_the_end_of_the_last_frame():
    out = list(resample_frames(frames_at(25, 25), 30, last_frame_seconds=1 / 25))
    assert len(out) == 30 and out[0] == 0 and out[-1] == 24


def test_no_frames_gives_nothing():
    assert list(resample_frames([], 30, count=4)) == []


def test_uniform_clip_starts_cover_the_video():
    starts = uniform_clip_starts(10.0, 0.5, 10)
    assert starts[0] == 0 and starts[-1] == pytest.approx(9.5)
    assert np.allclose(np.diff(starts), 9.5 / 9)
    assert uniform_clip_starts(0.2, 0.5, 3) == [0.0, 0.0, 0.0]
    assert uniform_clip_starts(4.0, 1.0, 1) == [1.5]


def test_random_clip_start_stays_inside():
    rng = np.random.default_rng(0)
    starts = [random_clip_start(3.0, 0.5, rng) for _ in range(200)]
    assert min(starts) >= 0 and max(starts) <= 2.5 and np.std(starts) > 0.5
    assert random_clip_start(0.3, 0.5, rng) == 0.0


def test_audio_window_is_centred_then_clamped():
    assert audio_window_start(4.0, 0.5, 2.0, 10.0) == pytest.approx(3.25)
    assert audio_window_start(0.1, 0.5, 2.0, 10.0) == 0.0
    assert audio_window_start(9.5, 0.5, 2.0, 10.0) == 8.0
    assert audio_window_start(0.5, 0.5, 2.0, 1.0) == 0.0  # shorter than the window: start at 0, pad the end
