"""The embedded sample dataset and its family: short synthetic audio-visual videos with a hidden class.

Each video belongs to one of K latent classes, and the class decides both what is seen and what
is heard. Three kinds of generator draw the class differently (``SampleSpec.kind``):

* ``shapes`` (the embedded default): the shape of a moving object and its motion pattern; a tone
  at a class-specific pitch with a class-specific rhythm (on/off pulses);
* ``gratings``: a drifting grating whose orientation and drift direction are the class, in a
  window anywhere in the frame; a tone of random pitch whose amplitude-modulation rate is the class;
* ``pinwheels``: a rotating pinwheel whose number of spokes and sense of rotation are the class;
  repeated frequency sweeps whose direction and repetition rate are the class, from a random start
  pitch with a random timbre (harmonics).

Strong nuisances, drawn independently in each modality and independent of the class, carry most
of the signal energy:

* video: background colour and texture (stripes of random angle, period and contrast), object
  tint, size, position and speed, sensor noise;
* audio: 1-3 steady distractor tones in the classes' pitch range, as loud as the class tone or
  louder; background noise of random level and colour; a random low hum; loudness (15 dB range).

(The other kinds have the same nuisances, drawn the same way.) So, like real video, clustering one
modality's raw features finds the nuisances (background colour, loudness), while the only thing the
two modalities share is the class — which is what cross-modal clustering exploits. Labels are
written to the manifest for evaluation only.

Three knobs turn the difficulty independently of the kind: ``video_signal`` and ``audio_signal``
scale the class's part of each modality (its contrast, its loudness), ``nuisance`` scales every
nuisance (colour saturation, texture, noise, distractors, loudness range). At 1.0 (the default)
they leave the ``shapes`` videos bit for bit as they were. Everything is deterministic given the
seed; video ``i`` does not depend on how many are made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .manifest import write_manifest
from .worker_pool import worker_pool

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "bar", "plus", "vbar", "hourglass", "half", "frame")
MOTIONS = ("horizontal", "vertical", "circle", "diagonal", "zigzag", "still")
# Pitches spaced by a musical fifth or more so each class is its own band of the log-mel.
PITCHES_HZ = (330.0, 520.0, 800.0, 1250.0, 1900.0, 2900.0, 4200.0, 600.0, 420.0, 1000.0, 1600.0, 2400.0)
PULSE_HZ = (0.0, 2.0, 4.0, 1.0, 3.0, 6.0, 1.5, 5.0, 2.5, 3.5, 0.5, 4.5)


KINDS = ("shapes", "gratings", "pinwheels")
MAX_CLASSES = len(SHAPES)
# gratings: the amplitude-modulation rates, a ratio of ~1.3 apart, all below the 25 Hz that the
# log-mel frame rate of the presets (50 frames/s) resolves.
AM_RATES_HZ = tuple(round(1.5 * 1.27**i, 2) for i in range(MAX_CLASSES))
# pinwheels: sweeps per second (each class also has a direction, up or down).
SWEEP_RATES_HZ = (1.0, 1.6, 2.5, 4.0, 6.0, 9.0)


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
    kind: str = "shapes"
    video_signal: float = 1.0  # the class's contrast in the picture (0: invisible)
    audio_signal: float = 1.0  # the class's loudness in the sound (0: inaudible)
    nuisance: float = 1.0  # every nuisance's strength (0: none)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if not 1 <= self.classes <= MAX_CLASSES:
            raise ValueError(f"--classes must be between 1 and {MAX_CLASSES} (got {self.classes})")
        if self.videos < self.classes:
            raise ValueError(f"--videos ({self.videos}) must be at least --classes ({self.classes})")
        if self.seconds <= 0 or self.width < 32 or self.height < 32:
            raise ValueError("seconds must be > 0 and the frame at least 32x32")
        for name in ("video_signal", "audio_signal", "nuisance"):
            if not 0 <= getattr(self, name) <= 4:
                raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 4 (got {getattr(self, name)})")


def class_description(c: int, kind: str = "shapes", classes: int = MAX_CLASSES) -> dict[str, object]:
    """What class ``c`` looks and sounds like (written to classes.json for the reader)."""
    if kind == "gratings":
        orient, direction = _split(c, classes)
        return {"label": f"c{c}", "orientation_deg": round(180 * orient / -(-classes // 2), 1),
                "drift": ("forward", "backward")[direction], "am_rate_hz": AM_RATES_HZ[c]}
    if kind == "pinwheels":
        spokes, sense = _split(c, classes)
        return {"label": f"c{c}", "spokes": spokes + 1, "rotation": ("clockwise", "anticlockwise")[sense],
                "sweep": ("up", "down")[c % 2], "sweeps_per_s": SWEEP_RATES_HZ[(c // 2) % len(SWEEP_RATES_HZ)]}
    return {
        "label": f"c{c}",
        "shape": SHAPES[c],
        "motion": MOTIONS[c % len(MOTIONS)],
        "pitch_hz": PITCHES_HZ[c],
        "pulse_hz": PULSE_HZ[c],
    }


def _split(c: int, classes: int) -> tuple[int, int]:
    """Class ``c`` as (one of ceil(K/2) values, one of 2): e.g. an orientation and a direction."""
    half = -(-classes // 2)
    return c % half, c // half


def _scaled(x, s: float, around=0.0):  # type: ignore[no-untyped-def]
    """``x`` moved towards ``around`` by the factor ``s``; exactly ``x`` at 1 (the default data's bytes)."""
    return x if s == 1.0 else around + s * (x - around)


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


def _background(spec: SampleSpec, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray):  # type: ignore[no-untyped-def]
    """The picture's nuisances, drawn independently of the class: a background colour with a
    striped texture, an object tint whose luminance stands out from the background (dark on bright
    backgrounds, bright on dark ones, as objects in real footage usually do), sensor noise.
    Returns (background [H, W, 3], its colour, the object colour) and leaves the noise level to
    :func:`_frames`: the draws keep the order the embedded data was made with."""
    k = spec.nuisance
    bg = _hsv_to_rgb(rng.uniform(), _scaled(rng.uniform(0.15, 0.6), k), rng.uniform(0.3, 0.9))
    angle, period, contrast = rng.uniform(0, np.pi), rng.uniform(6, 30), _scaled(rng.uniform(0.0, 0.35), k)
    stripes = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    background = np.clip(bg[None, None, :] * (1 + contrast * stripes[..., None]), 0, 1).astype(np.float32)
    value = rng.uniform(0.0, 0.2) if bg.max() > 0.6 else rng.uniform(0.85, 1.0)
    fg = _hsv_to_rgb(rng.uniform(), _scaled(rng.uniform(0.0, 0.4), k), value).astype(np.float32)
    return background, bg, fg


def _finish(frame: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(frame * 255, 0, 255).astype(np.uint8)


def _frames(c: int, spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, H, W, 3] for one video of class ``c``."""
    n = round(spec.seconds * spec.fps)
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # float32 throughout: this is the slow part
    background, _, fg = _background(spec, rng, yy, xx)
    # The class's contrast: the object's colour moved towards the background behind it (at 0 the
    # object is gone, texture and all).
    fg = _scaled(fg[None, None, :], spec.video_signal, background).astype(np.float32)
    scene = {"shapes": _shape_scene, "gratings": _grating_scene, "pinwheels": _pinwheel_scene}[spec.kind]
    frame_at = scene(c, spec, rng, yy, xx, background, fg)
    noise = _scaled(rng.uniform(0.01, 0.06), spec.nuisance)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        out[t] = _finish(frame_at(t / spec.fps), noise, rng)
    return out


# A scene draws its nuisances once and returns the frame at time t (seconds), before sensor noise.
# ``fg`` is the object's colour, [1, 1, 3] or per pixel [H, W, 3].


def _shape_scene(c, spec, rng, yy, xx, background, fg):  # type: ignore[no-untyped-def]
    """An object of the class's shape moving with the class's motion; its size, place, speed: nuisances."""
    desc = class_description(c)
    h, w = spec.height, spec.width
    radius = rng.uniform(0.28, 0.4) * min(h, w)
    cy0, cx0 = rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w
    amp = rng.uniform(0.1, 0.2) * min(h, w)
    cycles_per_s, phase0 = rng.uniform(0.8, 1.5), rng.uniform()

    def frame_at(t: float) -> np.ndarray:
        dy, dx = _motion(str(desc["motion"]), phase0 + cycles_per_s * t)
        mask = _shape_mask(str(desc["shape"]), yy, xx, cy0 + amp * dy, cx0 + amp * dx, radius)
        return np.where(mask[..., None], fg, background)

    return frame_at


def _window(spec: SampleSpec, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, float]:
    """A disc anywhere in the frame (place and size: nuisances), and its radius."""
    h, w = spec.height, spec.width
    r = rng.uniform(0.3, 0.45) * min(h, w)
    cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r, r


def _grating_scene(c, spec, rng, yy, xx, background, fg):  # type: ignore[no-untyped-def]
    """A grating of the class's orientation drifting in the class's direction; its period and speed: nuisances."""
    orient, direction = _split(c, spec.classes)
    theta = np.pi * orient / -(-spec.classes // 2)
    mask, _ = _window(spec, rng, yy, xx)
    period, speed = rng.uniform(7, 12), rng.uniform(0.8, 1.6)  # pixels; periods per second
    along = (np.cos(theta) * xx + np.sin(theta) * yy) / period
    sign = 1.0 if direction == 0 else -1.0
    phase0 = rng.uniform()

    def frame_at(t: float) -> np.ndarray:
        wave = (0.5 + 0.5 * np.sin(2 * np.pi * (along - sign * (phase0 + speed * t)))).astype(np.float32)
        tex = fg * wave[..., None] + background * (1 - wave[..., None])
        return np.where(mask[..., None], tex, background)

    return frame_at


def _pinwheel_scene(c, spec, rng, yy, xx, background, fg):  # type: ignore[no-untyped-def]
    """A pinwheel with the class's number of spokes turning in the class's sense; its place, size and speed: nuisances."""
    spokes, sense = _split(c, spec.classes)
    mask, r = _window(spec, rng, yy, xx)
    cy = float((yy * mask).sum() / mask.sum())
    cx = float((xx * mask).sum() / mask.sum())
    angle = np.arctan2(yy - cy, xx - cx)
    turns, phase0 = rng.uniform(0.4, 0.9), rng.uniform()  # turns per second
    sign = 1.0 if sense == 0 else -1.0
    hub = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.2 * r) ** 2

    def frame_at(t: float) -> np.ndarray:
        a = angle - sign * 2 * np.pi * (phase0 + turns * t)
        on = (np.cos((spokes + 1) * a) > 0.3) & mask | hub
        return np.where(on[..., None], fg, background)

    return frame_at


# -- sounds -----------------------------------------------------------------------------------


def _sound(c: int, spec: SampleSpec, rng: np.random.Generator) -> np.ndarray:
    """float32 mono samples in [-1, 1] for one video of class ``c``."""
    n = round(spec.seconds * spec.audio_rate)
    t = np.arange(n) / spec.audio_rate
    draw = {"shapes": _pulsed_tone, "gratings": _modulated_tone, "pinwheels": _sweeps}[spec.kind]
    tone = draw(c, spec, rng, t)
    # Nuisances: steady distractor tones anywhere in the classes' pitch range (as loud as the
    # class tone or louder), a hum, background noise of random colour, loudness.
    k = spec.nuisance
    distract = sum(
        _scaled(rng.uniform(0.25, 0.7), k) * np.sin(2 * np.pi * rng.uniform(250, 4500) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(int(rng.integers(1, 4)))
    )
    hum = _scaled(rng.uniform(0.0, 0.5), k) * np.sin(2 * np.pi * rng.uniform(50, 150) * t)
    white = rng.normal(0, 1, n + 64)
    width = int(rng.integers(1, 33))  # box filter: 1 = white noise, wider = darker (low-passed)
    noise = np.convolve(white, np.ones(width) / np.sqrt(width), mode="valid")[:n]
    noise *= _scaled(rng.uniform(0.02, 0.4), k)
    gain = 10 ** (_scaled(rng.uniform(-15, 0), k) / 20)
    wave = gain * (_scaled(0.6, spec.audio_signal) * tone + distract + hum + noise)
    return np.clip(wave / 3.5, -1, 1).astype(np.float32)


def _pulsed_tone(c: int, spec: SampleSpec, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """The class's pitch (slightly detuned, still its own band), on and off at the class's rhythm."""
    desc = class_description(c)
    pitch = float(desc["pitch_hz"]) * rng.uniform(0.97, 1.03)
    tone = np.sin(2 * np.pi * pitch * t + rng.uniform(0, 2 * np.pi)) + 0.3 * np.sin(4 * np.pi * pitch * t)
    pulse = float(desc["pulse_hz"])
    if pulse > 0:  # the tone is on for half of each pulse period
        tone *= (np.sin(2 * np.pi * pulse * t + rng.uniform(0, 2 * np.pi)) > 0).astype(np.float64)
    return tone


def _modulated_tone(c: int, spec: SampleSpec, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A tone of any pitch (a nuisance) whose loudness swells and fades at the class's rate."""
    pitch = 300 * 2 ** rng.uniform(0, 3.5)
    carrier = np.sin(2 * np.pi * pitch * t + rng.uniform(0, 2 * np.pi))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * AM_RATES_HZ[c] * t + rng.uniform(0, 2 * np.pi))
    return 1.3 * envelope * carrier


def _sweeps(c: int, spec: SampleSpec, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Repeated frequency sweeps, up or down an octave at the class's rate, from any start pitch with
    any timbre (the weights of three harmonics: nuisances, like a speaker's voice)."""
    desc = class_description(c, "pinwheels", spec.classes)
    rate = float(desc["sweeps_per_s"])
    cycle = (t * rate + rng.uniform()) % 1.0
    octaves = cycle if desc["sweep"] == "up" else 1.0 - cycle
    f0 = 250 * 2 ** rng.uniform(0, 2.5)
    # Phase is the running sum of the instantaneous frequency.
    phase = 2 * np.pi * np.cumsum(f0 * 2**octaves) / spec.audio_rate
    harmonics = rng.dirichlet(np.ones(3))
    return 1.3 * sum(a * np.sin((i + 1) * phase) for i, a in enumerate(harmonics))


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
    with worker_pool(workers) as pool:  # a killed sample-data run leaves no workers behind
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
        json.dumps([class_description(c, spec.kind, spec.classes) for c in range(spec.classes)], indent=2) + "\n"
    )
    return manifest
