"""Typed settings, validated once at the boundary.

The defaults are the paper's (§4.1): 8-frame clips at 30 fps, frames scaled so the short side is
256 then cropped to 224, 2 s of 16 kHz mono audio as a 40x100 log-mel, 10 clips per video at
inference. CPU runs override the sizes from a YAML file or the command line.

Step functions in ``xdc_core`` take these models (or plain values), never raw dicts: a wrong
value fails here, with a message naming the field and its allowed range, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range. The message names each bad field."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """How videos become training inputs (decode, dataset, readers)."""

    clip_frames: int = Field(8, ge=1, le=128, description="frames per video clip (L)")
    fps: float = Field(30.0, gt=0, le=120, description="frame rate clips are sampled at")
    short_side: int = Field(256, ge=16, le=1080, description="frames are scaled so their short side is this")
    crop_size: int = Field(224, ge=8, le=1080, description="square crop taken from the scaled frame")
    audio_rate: int = Field(16000, ge=4000, le=48000, description="audio sample rate in Hz (mono)")
    audio_seconds: float = Field(2.0, gt=0, le=30, description="audio window per clip, in seconds")
    n_mels: int = Field(40, ge=8, le=256, description="mel bands of the log-mel spectrogram (Q)")
    mel_frames: int = Field(100, ge=8, le=2000, description="time frames of the log-mel spectrogram (P)")
    eval_clips: int = Field(10, ge=1, le=100, description="uniformly spaced clips per video at inference")
    min_duration_s: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="videos shorter than this are quarantined by decode; default: the audio window",
    )

    @model_validator(mode="after")
    def _check_relations(self) -> DataConfig:
        if self.crop_size > self.short_side:
            raise ValueError(
                f"crop_size ({self.crop_size}) must be <= short_side ({self.short_side}): "
                "the crop is taken from the scaled frame"
            )
        if self.audio_rate * self.audio_seconds < 2 * self.mel_frames:
            raise ValueError(
                f"mel_frames ({self.mel_frames}) is too many for {self.audio_seconds} s at "
                f"{self.audio_rate} Hz: each frame needs a hop of at least 2 samples"
            )
        return self

    @property
    def clip_seconds(self) -> float:
        """Duration covered by one clip: L frames at the target rate."""
        return self.clip_frames / self.fps

    @property
    def audio_samples(self) -> int:
        return round(self.audio_rate * self.audio_seconds)

    @property
    def required_duration_s(self) -> float:
        """The shortest video decode accepts (see ``min_duration_s``)."""
        return self.audio_seconds if self.min_duration_s is None else self.min_duration_s


class DecodeConfig(_Strict):
    """How ``xdc decode`` writes the training-ready dataset."""

    workers: int = Field(2, ge=1, le=256, description="parallel worker processes")
    keyframe_interval: int = Field(
        16, ge=1, le=600, description="GOP of the re-encoded video: bounds the frames decoded per random seek"
    )
    crf: int = Field(20, ge=0, le=51, description="x264 quality of the re-encoded video (lower is better)")


class Config(_Strict):
    """The whole settings tree; later stages add their sections here."""

    data: DataConfig = DataConfig()
    decode: DecodeConfig = DecodeConfig()


def _field_range(model: type[BaseModel], name: str) -> str:
    field = model.model_fields.get(name)
    if field is None:
        return ""
    lo = hi = None
    lo_incl = hi_incl = True
    for meta in field.metadata:
        for attr, incl in (("ge", True), ("gt", False)):
            if getattr(meta, attr, None) is not None:
                lo, lo_incl = getattr(meta, attr), incl
        for attr, incl in (("le", True), ("lt", False)):
            if getattr(meta, attr, None) is not None:
                hi, hi_incl = getattr(meta, attr), incl
    if lo is None and hi is None:
        return ""
    left = "[" if lo_incl else "("
    right = "]" if hi_incl else ")"
    return f"; allowed range {left}{'' if lo is None else lo}, {'' if hi is None else hi}{right}"


def _model_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel], str]:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
    return model, str(loc[-1]) if loc else ""


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """One line per bad field: ``data.clip_frames: Input should be ... (got 0); allowed range [1, 128]``."""
    lines = [f"invalid settings in {source}:"]
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        model, name = _model_at(loc)
        # A cross-field check gets the whole section as input: its message already has the values.
        got = "" if e["type"] == "missing" or isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"
        if e["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            lines.append(f"  {where}: unknown setting; known settings here: {known}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {msg}{got}{_field_range(model, name)}")
    return "\n".join(lines)


def build_config(values: dict[str, Any] | None = None, source: str = "config") -> Config:
    """Validate a nested dict of settings into a :class:`Config`, or raise :class:`ConfigError`."""
    try:
        return Config.model_validate(values or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load settings from a YAML file (optional), then apply dotted overrides like ``{"data.fps": 15}``."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of settings, not {type(loaded).__name__}")
        values = loaded
        source = str(path)
    if overrides:
        source += " with overrides " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted}: {p} is a value, not a section")
            node = child
        node[leaf] = value
    return build_config(values, source)
