"""Reading one media file: probing, video clips, audio windows, log-mel."""

from .errors import MediaError
from .file import MediaFile, MediaInfo, probe, scaled_size

__all__ = ["MediaError", "MediaFile", "MediaInfo", "probe", "scaled_size"]
