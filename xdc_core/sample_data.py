"""The embedded sample dataset: short synthetic audio-visual videos with a hidden class.

Each video belongs to one of K latent classes, and the class decides both what is seen and what
is heard:

* seen: the shape of a moving object and its motion pattern;
* heard: a tone at a class-specific pitch with a class-specific rhythm (on/off pulses).

Strong nuisances, drawn independently in each modality and independent of the class, carry most
of the signal energy:

* video: background colour and texture (stripes of random angle, period and contrast), object
  tint, size, position and speed, sensor noise;
* audio: 1-3 steady distractor tones in the classes' pitch range, as loud as the class tone or
  louder; background noise of random level and colour; a random low hum; loudness (15 dB range).

So, like real video, clustering one modality's raw features finds the nuisances (background
colour, loudness), while the only thing the two modalities share is the class — which is what
cross-modal clustering exploits. Labels are written to the manifest for evaluation only.
Everything is deterministic given the seed; video ``i`` does not depend on how many are made.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import av
import numpy as np

from .manifest import write_manifest

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "bar", "plus", "vbar", "hourglass", "half", "frame")
MOTIONS = ("horizontal", "vertical", "circle", "diagonal", "zigzag", "still")
# Pitches spaced by a musical fifth or more so each class is its own band of the log-mel.
PITCHES_HZ = (330.0, 520.0, 800.0, 1250.0, 1900.0, 2900.0, 4200.0, 600.0, 420.0, 1000.0, 1600.0, 2400.0)
PULSE_HZ = (0.0, 2.0, 4.0, 1.0, 3.0, 6.0, 1.5, 5.0, 2.5, 3.5, 0.5, 4.5)


@dataclass(frozen=True)
class SampleSpec:
    videos: int = 2000  # 500 test videos: a top-1 difference's 95% interval is about ±0.04 wide
    classes: int = 8
    seed: int = 0
    seconds: float = 3.0
    width: int = 64
    height: int = 48
    fps: int = 30
    audio_rate: int = 22050

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(SHAPES):
            raise ValueError(f"--classes must be between 1 and {len(SHAPES)} (got {self.classes})")
        if self.videos < self.classes:
            raise ValueError(f"--videos ({self.videos}) must be at least --classes ({self.classes})")
        if self.seconds <= 0 or self.width < 32 or self.height < 32:
            raise ValueError("seconds must be > 0 and the frame at least 32x32")


def class_description(c: int) -> dict[str, object]:
    return {
        "label": f"c{c}",
        "shape": SHAPES[c],
        "motion": MOTIONS[c % len(MOTIONS)],
        "pitch_hz": PITCHES_HZ[c],
        "pulse_hz": PULSE_HZ[c],
    }


# -- pictures ---------------------------------------------------------------------------------


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = (yy - cy) / r, (xx - cx) / r
    if shape == "disc":
        return dy**2 + dx**2 <= 1
    if shape == "square":
        return (np.abs(dy) <= 0.8) & (np.abs(dx) <= 0.8)
    if shape == "triangle":
        return (dy <= 0.8) & (dy >= -0.9 + 2 * np.abs(dx))
    if shape == "cross":
        return ((np.abs(dy - dx) <= 0.35) | (np.abs(dy + dx) <= 0.35)) & (np.abs(dy) <= 0.9) & (np.abs(dx) <= 0.9)
    if shape == "ring":
        d = dy**2 + dx**2
        return (d <= 1) & (d >= 0.45)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1
    if shape == "bar":
        return (np.abs(dy) <= 0.3) & (np.abs(dx) <= 1)
    if shape == "plus":
        return ((np.abs(dy) <= 0.3) | (np.abs(dx) <= 0.3)) & (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
    if shape == "vbar":
        return (np.abs(dx) <= 0.3) & (np.abs(dy) <= 1)
    if shape == "hourglass":
        return (np.abs(dx) <= np.abs(dy)) & (np.abs(dy) <= 0.9)
    if shape == "half":
        return (dy**2 + dx**2 <= 1) & (dy <= 0)
    if shape == "frame":
        return (np.maximum(np.abs(dy), np.abs(dx)) <= 0.9) & (np.maximum(np.abs(dy), np.abs(dx)) >= 0.55)
    raise ValueError(shape)


def _motion(motion: str, phase: float) -> tuple[float, float]:
    """Offset in [-1, 1]² at ``phase`` (cycles since the start)."""
    s, c = np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)
    return {
        "horizontal": (0.0, s),
        "vertical": (s, 0.0),
        "circle": (s, c),
        "diagonal": (s, s),
        "zigzag": (abs((phase * 2) % 2 - 1) * 2 - 1, s),
        "still": (0.0, 0.0),
    }[motion]


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)


def _frames(c: int, spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, H, W, 3] for one video of class ``c``."""
    desc = class_description(c)
    n = round(spec.seconds * spec.fps)
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # float32 throughout: this is the slow part
    # Nuisances: all drawn independently of the class.
    bg = _hsv_to_rgb(rng.uniform(), rng.uniform(0.15, 0.6), rng.uniform(0.3, 0.9))
    angle, period, contrast = rng.uniform(0, np.pi), rng.uniform(6, 30), rng.uniform(0.0, 0.35)
    stripes = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    background = np.clip(bg[None, None, :] * (1 + contrast * stripes[..., None]), 0, 1).astype(np.float32)
    # The object stands out by luminance (dark on bright backgrounds, bright on dark ones), as
    # objects in real footage usually do; its tint is a nuisance.
    value = rng.uniform(0.0, 0.2) if bg.max() > 0.6 else rng.uniform(0.85, 1.0)
    fg = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), value).astype(np.float32)
    radius = rng.uniform(0.28, 0.4) * min(h, w)
    cy0, cx0 = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    amp = rng.uniform(0.1, 0.2) * min(h, w)
    cycles_per_s, phase0 = rng.uniform(0.8, 1.5), rng.uniform()
    noise = rng.uniform(0.01, 0.06)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        dy, dx = _motion(str(desc["motion"]), phase0 + cycles_per_s * t / spec.fps)
        mask = _shape_mask(str(desc["shape"]), yy, xx, cy0 + amp * dy, cx0 + amp * dx, radius)
        frame = np.where(mask[..., None], fg[None, None, :], background)
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(noise)
        out[t] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    return out


# -- sounds -----------------------------------------------------------------------------------


def _sound(c: int, spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """float32 mono samples in [-1, 1] for one video of class ``c``."""
    desc = class_description(c)
    n = round(spec.seconds * spec.audio_rate)
    t = np.arange(n) / spec.audio_rate
    pitch = float(desc["pitch_hz"]) * rng.uniform(0.97, 1.03)  # slight detune, still its own band
    tone = np.sin(2 * np.pi * pitch * t + rng.uniform(0, 2 * np.pi)) + 0.3 * np.sin(4 * np.pi * pitch * t)
    pulse = float(desc["pulse_hz"])
    if pulse > 0:  # class rhythm: the tone is on for half of each pulse period
        tone *= (np.sin(2 * np.pi * pulse * t + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float64)
    # Nuisances: steady distractor tones anywhere in the classes' pitch range (as loud as the
    # class tone or louder), a hum, background noise of random colour, loudness.
    distract = sum(
        rng.uniform(0.25, 0.7) * np.sin(2 * np.pi * rng.uniform(250, 4500) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(int(rng.integers(1, 4)))
    )
    hum = rng.uniform(0.0, 0.5) * np.sin(2 * np.pi * rng.uniform(50, 150) * t)
    white = rng.normal(0, 1, n + 64)
    width = int(rng.integers(1, 33))  # box filter: 1 = white noise, wider = darker (low-passed)
    noise = np.convolve(white, np.ones(width) / np.sqrt(width), mode="valid")[:n]
    noise *= rng.uniform(0.02, 0.4)
    gain = 10 ** (rng.uniform(-15, 0) / 20)
    wave = gain * (0.6 * tone + distract + hum + noise)
    return np.clip(wave / 3.5, -1, 1).astype(np.float32)


# -- files ------------------------------------------------------------------------------------


def write_video(
    path: Path, frames: np.ndarray, fps: int, audio: np.ndarray, audio_rate: int, keyframe_interval: int = 12
) -> None:
    """Write an H.264 + AAC mp4 with PyAV (bundled FFmpeg; no system encoder needed)."""
    from .media.x264 import reproducible_params

    with av.open(str(path), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # Deterministic output, byte for byte: one thread, and no AVX-512 kernel (see media/x264.py).
        vs.codec_context.thread_count = 1
        vs.options = {
            "crf": "23",
            "preset": "veryfast",
            "x264-params": reproducible_params(f"keyint={keyframe_interval}"),
        }
        aus = out.add_stream("aac", rate=audio_rate, layout="mono")
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        chunk = 1024  # the AAC encoder's frame size
        for start in range(0, len(audio), chunk):
            part = audio[start : start + chunk]
            if len(part) < chunk:
                part = np.pad(part, (0, chunk - len(part)))
            af = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = audio_rate, start, Fraction(1, audio_rate)
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))


def _make_one(path: Path, c: int, i: int, spec: SampleSpec) -> None:
    rng = np.random.default_rng([spec.seed, 1, i])  # per video: video i never depends on N
    write_video(path, _frames(c, spec, rng), spec.fps, _sound(c, spec, rng), spec.audio_rate)


def make_sample_dataset(out_dir: str | Path, spec: SampleSpec = SampleSpec(), workers: int = 2) -> Path:
    """Write ``spec.videos`` mp4 files, ``manifest.csv`` and ``classes.json`` to ``out_dir``.

    Classes are balanced; one video in four of each class is in the ``test`` split.
    Returns the manifest's path.
    """
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    labels = np.random.default_rng([spec.seed, 0]).permutation(np.arange(spec.videos) % spec.classes)
    jobs = [(out / f"videos/sample_{i:04d}.mp4", c, i, spec) for i, c in enumerate(labels.tolist())]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_make_one, *zip(*jobs, strict=True), chunksize=8))
    seen = [0] * spec.classes
    rows: list[tuple[str, str | None, str | None]] = []
    for i, c in enumerate(labels.tolist()):
        rel = f"videos/sample_{i:04d}.mp4"
        split = "test" if seen[c] % 4 == 3 else "train"
        seen[c] += 1
        rows.append((rel, f"c{c}", split))
    manifest = out / "manifest.csv"
    write_manifest(manifest, rows)
    (out / "classes.json").write_text(
        json.dumps([class_description(c) for c in range(spec.classes)], indent=2) + "\n"
    )
    return manifest
