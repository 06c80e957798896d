"""One media file: probe it, read a video clip, read audio — through PyAV (which bundles FFmpeg).

Times are seconds from the first frame of the chosen video stream; audio is aligned to the same
clock, so ``audio(t, 2.0)`` is the sound heard while frame ``t`` is shown.

Stream choice is deterministic: the video stream with the most pixels (cover-art pictures
excluded), the audio stream with the highest sample rate then the most channels; ties go to the
lowest stream index.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .errors import CorruptData, EmptyFile, FileMissing, NoAudioStream, NoVideoStream, Unreadable
from .timing import resample_frames

Crop = Literal["center", "random"]


@dataclass(frozen=True)
class VideoStreamInfo:
    index: int
    codec: str
    width: int
    height: int
    fps: float
    duration: float | None
    frames: int | None


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a file without decoding it."""

    path: str
    container: str
    duration: float | None
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None
    video_streams: int
    audio_streams: int


def scaled_size(width: int, height: int, short_side: int, even: bool = False) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, keeping the aspect ratio."""
    scale = short_side / min(width, height)
    w, h = round(width * scale), round(height * scale)
    if width <= height:
        w = short_side
    else:
        h = short_side
    if even:  # yuv420p (the re-encoded video) needs even sizes
        w, h = w + (w % 2), h + (h % 2)
    return w, h


def _stream_seconds(stream: av.stream.Stream, value: int | None) -> float | None:
    if value is None or stream.time_base is None:
        return None
    return float(value * stream.time_base)


class MediaFile:
    """An open media file. Use as a context manager; not shareable across processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        p = Path(path)
        if not p.exists():
            raise FileMissing(self.path, f"file not found (looked for {p.absolute()})")
        if p.is_dir():
            raise Unreadable(self.path, "is a directory, not a media file")
        if p.stat().st_size == 0:
            raise EmptyFile(self.path, "empty file (0 bytes)")
        try:
            self._container = av.open(self.path, mode="r")
        except av.error.FFmpegError as err:
            raise Unreadable(
                self.path,
                f"cannot open as a media container ({err.strerror or err}): not a video file, "
                "or its header is damaged or missing (e.g. a truncated download)",
            ) from None
        except OSError as err:
            raise Unreadable(self.path, f"cannot open: {err}") from None
        self._vstream = self._best_video_stream()
        self._astream = self._best_audio_stream()
        # One scaler per file: building a swscale context per frame costs more than scaling it.
        self._scaler = VideoReformatter()
        self._vstart = _stream_seconds(self._vstream, self._vstream.start_time) if self._vstream else None
        if self._vstart is None:
            self._vstart = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> MediaFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- probing -----------------------------------------------------------------------------

    def _best_video_stream(self) -> av.video.stream.VideoStream | None:
        candidates = [
            s
            for s in self._container.streams.video
            if not (s.disposition & av.stream.Disposition.attached_pic) and s.codec_context.width > 0
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda s: (-s.codec_context.width * s.codec_context.height, s.index))

    def _best_audio_stream(self) -> av.audio.stream.AudioStream | None:
        candidates = [s for s in self._container.streams.audio if s.codec_context.sample_rate > 0]
        if not candidates:
            return None
        return min(candidates, key=lambda s: (-s.codec_context.sample_rate, -s.codec_context.channels, s.index))

    @property
    def info(self) -> MediaInfo:
        c = self._container
        video = audio = None
        if (vs := self._vstream) is not None:
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            video = VideoStreamInfo(
                index=vs.index,
                codec=vs.codec_context.name,
                width=vs.codec_context.width,
                height=vs.codec_context.height,
                fps=float(rate) if rate else 0.0,
                duration=_stream_seconds(vs, vs.duration),
                frames=vs.frames or None,
            )
        if (a := self._astream) is not None:
            audio = AudioStreamInfo(
                index=a.index,
                codec=a.codec_context.name,
                sample_rate=a.codec_context.sample_rate,
                channels=a.codec_context.channels,
                duration=_stream_seconds(a, a.duration),
            )
        return MediaInfo(
            path=self.path,
            container=c.format.name,
            duration=c.duration / av.time_base if c.duration else None,
            video=video,
            audio=audio,
            video_streams=len(c.streams.video),
            audio_streams=len(c.streams.audio),
        )

    @property
    def duration(self) -> float:
        """Best estimate of the video's duration in seconds (video stream first, then container)."""
        info = self.info
        for d in (info.video.duration if info.video else None, info.duration):
            if d:
                return d
        return 0.0

    @property
    def declared_duration(self) -> float:
        """The longest duration the headers promise (stream, container, frame count / fps).

        Decoding much less than this means the file is truncated.
        """
        info = self.info
        candidates = [info.duration or 0.0]
        if info.video:
            candidates.append(info.video.duration or 0.0)
            if info.video.frames and info.video.fps:
                candidates.append(info.video.frames / info.video.fps)
        return max(candidates)

    def require_video(self) -> av.video.stream.VideoStream:
        if self._vstream is None:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise NoVideoStream(self.path, f"no video stream (streams present: {', '.join(kinds)})")
        return self._vstream

    def require_audio(self) -> av.audio.stream.AudioStream:
        if self._astream is None:
            raise NoAudioStream(self.path, "no audio stream")
        return self._astream

    # -- video -------------------------------------------------------------------------------

    def _seek(self, stream: av.stream.Stream, seconds: float) -> None:
        if seconds <= 0:
            target = stream.start_time or 0
        else:
            target = int((seconds + (self._vstart or 0.0)) / stream.time_base)
        try:
            self._container.seek(target, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as err:
            raise CorruptData(self.path, f"cannot seek to {seconds:.2f} s: {err.strerror or err}") from None

    def timed_frames(self, start: float = 0.0) -> Iterator[tuple[float, av.VideoFrame]]:
        """Decoded frames of the chosen video stream from the keyframe at or before ``start``."""
        vs = self.require_video()
        if start > 0:
            self._seek(vs, start)
        elif self._container.streams.video:
            self._seek(vs, 0.0)
        fallback_step = 1.0 / float(vs.average_rate or 25)
        t = -fallback_step
        try:
            for frame in self._container.decode(vs):
                t = (frame.time - self._vstart) if frame.time is not None else t + fallback_step
                yield t, frame
        except av.error.FFmpegError as err:
            raise CorruptData(self.path, f"corrupt video data at {max(t, 0.0):.2f} s: {err.strerror or err}") from None

    def video_clip(
        self,
        start: float,
        num_frames: int,
        fps: float,
        short_side: int,
        crop_size: int,
        crop: Crop = "center",
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """``num_frames`` RGB frames at ``fps`` from ``start``, scaled and cropped: uint8 ``[3, L, crop, crop]``.

        Frames come from the nearest source frame of each tick (any source rate works). A clip
        running past the end of the video repeats its last frame. ``crop="random"`` draws one
        crop position per clip from ``rng``.
        """
        vs = self.require_video()
        w, h = scaled_size(vs.codec_context.width, vs.codec_context.height, short_side)
        if crop == "random":
            rng = rng if rng is not None else np.random.default_rng()
            y0 = int(rng.integers(0, h - crop_size + 1))
            x0 = int(rng.integers(0, w - crop_size + 1))
        else:
            y0, x0 = (h - crop_size) // 2, (w - crop_size) // 2
        out = np.empty((3, num_frames, crop_size, crop_size), dtype=np.uint8)
        # A source frame repeated at a higher target rate is converted once.
        last_frame: av.VideoFrame | None = None
        last_rgb: np.ndarray | None = None
        i = -1
        for i, frame in enumerate(resample_frames(self.timed_frames(start), fps, start, num_frames)):
            if frame is not last_frame:
                last_rgb = self.scale(frame, w, h, "rgb24").to_ndarray()
                last_frame = frame
            out[:, i] = last_rgb[y0 : y0 + crop_size, x0 : x0 + crop_size].transpose(2, 0, 1)  # type: ignore[index]
        if i < 0:
            raise CorruptData(self.path, f"no video frame could be decoded at or after {start:.2f} s")
        return out

    def scale(self, frame: av.VideoFrame, width: int, height: int, pix_fmt: str) -> av.VideoFrame:
        """``frame`` scaled (bilinear) and converted, reusing this file's swscale context."""
        return self._scaler.reformat(frame, width=width, height=height, format=pix_fmt, interpolation="BILINEAR")

    # -- audio -------------------------------------------------------------------------------

    def audio(self, start: float = 0.0, seconds: float | None = None, rate: int = 16000) -> np.ndarray:
        """Mono float32 samples at ``rate`` from ``start`` (video clock), ``seconds`` long or to the end.

        Any sample rate and channel layout is resampled/downmixed by libswresample. A window
        reaching past the end of the audio is zero-padded to its full length. The whole track
        (``seconds=None``) is held in memory: for long files use :meth:`iter_audio`.
        """
        abs_start = start + (self._vstart or 0.0)
        stop = None if seconds is None else abs_start + seconds
        chunks: list[np.ndarray] = []
        t0: float | None = None
        for t0, chunk in self._resampled_audio(start, stop, rate):
            chunks.append(chunk)
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        offset = round(((abs_start - t0) if t0 is not None else 0.0) * rate)
        if offset < 0:  # audio starts after the video: silence until it does
            samples = np.concatenate([np.zeros(-offset, np.float32), samples])
            offset = 0
        samples = samples[offset:]
        if seconds is not None:
            n = round(seconds * rate)
            samples = samples[:n] if len(samples) >= n else np.pad(samples, (0, n - len(samples)))
        return samples.astype(np.float32, copy=False)

    def iter_audio(self, rate: int = 16000, start: float = 0.0) -> Iterator[np.ndarray]:
        """The samples ``audio(start, None, rate)`` returns, as consecutive float32 chunks.

        Memory stays bounded whatever the duration: each chunk comes from at most
        ``AUDIO_BATCH_SAMPLES`` source samples. Joined, the chunks equal :meth:`audio`'s array,
        and what one resampling call on the whole track gave, sample for sample: libswresample
        keeps its state between the batches of one resampler, so batching does not change its output.
        """
        abs_start = start + (self._vstart or 0.0)
        skip: int | None = None  # samples still to drop before ``abs_start``; None until t0 is known
        for t0, chunk in self._resampled_audio(start, None, rate):
            if skip is None:
                skip = round((abs_start - t0) * rate)
                while skip < 0:  # audio starts after the video: silence until it does
                    pad = min(-skip, AUDIO_BATCH_SAMPLES)
                    yield np.zeros(pad, np.float32)
                    skip += pad
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if len(chunk):
                yield chunk.astype(np.float32, copy=False)

    def _resampled_audio(self, start: float, stop: float | None, rate: int) -> Iterator[tuple[float, np.ndarray]]:
        """``(t0, chunk)``: mono float32 chunks at ``rate`` from the first frame decoded at or
        before ``start`` (video clock) to ``stop`` (absolute stream seconds) or the end; ``t0`` is
        that first frame's time (absolute), the same in every pair.
        """
        a = self.require_audio()
        if start > 0:
            self._seek(a, max(0.0, start - 0.05))  # a little before: decoders re-prime after a seek
        else:
            self._seek(a, 0.0)
        # Decoded frames are batched and resampled in one libswresample call per batch: per-frame
        # resampling costs more than decoding a 2 s window. A batch ends where the format changes
        # (a new resampler is needed) or at AUDIO_BATCH_SAMPLES, which bounds the memory a long
        # track needs; within one format the resampler carries over, so batching changes nothing.
        batch: list[np.ndarray] = []
        batch_samples = 0
        mixer: _MonoResampler | None = None
        t0: float | None = None
        t = start + (self._vstart or 0.0)
        try:
            for frame in self._container.decode(a):
                if frame.time is not None:
                    t = frame.time
                if t0 is None:
                    t0 = t
                kind = (frame.format.name, frame.layout.name, frame.sample_rate)
                if mixer is not None and kind != mixer.kind:
                    if batch:
                        yield t0, mixer.push(batch)
                        batch, batch_samples = [], 0
                    yield t0, mixer.flush()
                    mixer = None
                if mixer is None:
                    mixer = _MonoResampler(kind, rate)
                batch.append(frame.to_ndarray())
                batch_samples += frame.samples
                if stop is not None and t + frame.samples / frame.sample_rate > stop + 0.01:
                    break
                if batch_samples >= AUDIO_BATCH_SAMPLES:
                    yield t0, mixer.push(batch)
                    batch, batch_samples = [], 0
            if mixer is not None:
                if batch:
                    yield t0, mixer.push(batch)
                yield t0, mixer.flush()
        except av.error.FFmpegError as err:
            raise CorruptData(
                self.path, f"corrupt audio data at {max(t - (self._vstart or 0.0), 0.0):.2f} s: {err.strerror or err}"
            ) from None


# Source samples (per channel) resampled per libswresample call: about 5 s at 48 kHz, so a 2 s
# training window is still one call, and a long track costs a few MB at a time instead of all of it.
AUDIO_BATCH_SAMPLES = 1 << 18


class _MonoResampler:
    """Downmix to mono and resample a run of decoded audio of one format, layout and rate."""

    def __init__(self, kind: tuple[str, str, int], rate: int) -> None:
        self.kind = kind
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)

    def push(self, batch: list[np.ndarray]) -> np.ndarray:
        """Resample the decoded arrays of ``batch`` (consecutive frames of this run)."""
        fmt, layout, src_rate = self.kind
        frame = av.AudioFrame.from_ndarray(np.concatenate(batch, axis=1), format=fmt, layout=layout)
        frame.sample_rate = src_rate
        return _joined(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples libswresample still holds (its filter delay) at the end of the run."""
        return _joined(self._resampler.resample(None))


def _joined(frames: list[av.AudioFrame]) -> np.ndarray:
    out = [f.to_ndarray()[0] for f in frames]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Streams, duration, frame rate and audio presence of ``path``, without decoding."""
    with MediaFile(path) as m:
        return m.info
