"""Typed errors for media that cannot be used, each naming the file and the cause.

``code`` is a stable short key (used for the reason histogram in ``summary.json``); ``reason`` is
the specific human text written to ``quarantine.csv``.
"""

from __future__ import annotations


class MediaError(Exception):
    """A media file cannot be used for audio-visual training."""

    code = "media_error"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class FileMissing(MediaError):
    code = "file_not_found"


class EmptyFile(MediaError):
    code = "empty_file"


class Unreadable(MediaError):
    """Not a media container FFmpeg can open (wrong format, garbage, header destroyed)."""

    code = "unreadable"


class NoVideoStream(MediaError):
    code = "no_video_stream"


class NoAudioStream(MediaError):
    code = "no_audio_stream"


class CorruptData(MediaError):
    """The container opened but decoding a packet failed."""

    code = "corrupt_data"


class Truncated(MediaError):
    """Decoding stopped well before the duration the container declares."""

    code = "truncated"


class TooShort(MediaError):
    code = "too_short"


class WorkerCrashed(MediaError):
    """The decoder process died on this file (e.g. a crash inside FFmpeg)."""

    code = "worker_crashed"


class UnexpectedError(MediaError):
    code = "unexpected_error"
