"""Typed settings, validated once at the boundary.

The defaults are the paper's (§4.1): 8-frame clips at 30 fps, frames scaled so the short side is
256 then cropped to 224, 2 s of 16 kHz mono audio as a 40x100 log-mel, 10 clips per video at
inference. CPU runs override the sizes from a YAML file or the command line.

Step functions in ``xdc_core`` take these models (or plain values), never raw dicts: a wrong
value fails here, with a message naming the field and its allowed range, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take true as 1: `--set cluster.iterations=yes` ran one iteration
        raise ValueError(f"expected a number, got the boolean {str(value).lower()} (YAML reads yes/no/on/off/"
                         "true/false as booleans)")
    return value


# Numbers that a boolean is not (pydantic's lax mode would accept true as 1 and 1.0).
Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """How videos become training inputs (decode, dataset, readers)."""

    clip_frames: Int = Field(8, ge=1, le=128, description="frames per video clip (L)")
    fps: Float = Field(30.0, gt=0, le=120, description="frame rate clips are sampled at")
    short_side: Int = Field(256, ge=16, le=1080, description="frames are scaled so their short side is this")
    crop_size: Int = Field(224, ge=8, le=1080, description="square crop taken from the scaled frame")
    audio_rate: Int = Field(16000, ge=4000, le=48000, description="audio sample rate in Hz (mono)")
    audio_seconds: Float = Field(2.0, gt=0, le=30, description="audio window per clip, in seconds")
    n_mels: Int = Field(40, ge=8, le=256, description="mel bands of the log-mel spectrogram (Q)")
    mel_frames: Int = Field(100, ge=8, le=2000, description="time frames of the log-mel spectrogram (P)")
    eval_clips: Int = Field(10, ge=1, le=100, description="uniformly spaced clips per video at inference")
    clip_cache: Int = Field(
        0,
        ge=0,
        le=64,
        description="random training clips per video decoded once and reused (0 = decode at every visit): "
        "CPU runs spend their time in SGD instead of FFmpeg; see xdc_core/clip_cache.py",
    )
    min_duration_s: Float | None = Field(
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

    workers: Int = Field(2, ge=1, le=256, description="parallel worker processes")
    keyframe_interval: Int = Field(
        16, ge=1, le=600, description="GOP of the re-encoded video: bounds the frames decoded per random seek"
    )
    crf: Int = Field(20, ge=0, le=51, description="x264 quality of the re-encoded video (lower is better)")


# The video encoders (xdc_core/models.py): torchvision's R(2+1)D-18, and the VMZ/Caffe2 one of the
# released XDC models (other (2+1)D middle channels in layers 2-4, BatchNorm eps 1e-3).
VIDEO_ARCHS = ("r2plus1d_18", "r2plus1d_18_vmz")
VideoArch = Literal[VIDEO_ARCHS]  # type: ignore[valid-type]


class ModelConfig(_Strict):
    """Encoders: the video architecture, and sizes (``width``: the first stage's channels, 64 = full size)."""

    video_arch: VideoArch = Field(
        "r2plus1d_18",
        description="video encoder: r2plus1d_18 (torchvision's) | r2plus1d_18_vmz (the released XDC models' "
        "VMZ R(2+1)D-18, what `xdc checkpoint import` writes)",
    )
    video_width: Int = Field(64, ge=4, le=256, description="R(2+1)D-18 first-stage width")
    audio_width: Int = Field(64, ge=4, le=256, description="ResNet-18 first-stage width")


class EmbedConfig(_Strict):
    """Features for clustering: deterministic clips of every video, averaged per video."""

    clips: Int = Field(1, ge=1, le=100, description="uniformly spaced clips per video (1 = the middle clip)")
    batch_size: Int = Field(32, ge=1, le=4096, description="videos per forward pass")
    workers: Int = Field(2, ge=0, le=64, description="DataLoader worker processes")


# The deep-clustering methods of paper §3 (xdc_core/methods.py says what each one clusters).
METHODS = ("sdc", "mdc", "cdc", "xdc")
MODALITIES: tuple[str, str] = ("video", "audio")  # the two encoders, in the order every loop visits them
Method = Literal[METHODS]  # type: ignore[valid-type]


class ClusterConfig(_Strict):
    """The deep-clustering loop (paper §3): what is clustered, into how many clusters, how often."""

    method: Method = Field("xdc", description="sdc | mdc | cdc | xdc (paper §3)")
    k: Int = Field(256, ge=2, le=100_000, description="k-means clusters (paper Table 2: 64..1024)")
    iterations: Int = Field(5, ge=1, le=100, description="clustering iterations (paper: 5-6 to converge)")
    pca_dim: Int = Field(0, ge=0, le=4096, description="PCA-whiten to this many dims before k-means; 0 = off")
    niter: Int = Field(20, ge=1, le=1000, description="k-means (Lloyd) iterations")


class Schedule(_Strict):
    """An SGD schedule in the terms of the paper's Table 9.

    The learning rate rises linearly from 0 to ``lr`` over ``warmup_epochs`` (per step, Goyal et al.),
    then, with ``decay: step`` (the paper), is multiplied by ``gamma`` every ``step_epochs`` epochs
    counted from the end of warmup; with ``decay: cosine`` it follows a half cosine, per step, from
    ``lr`` down to ``lr * gamma`` at the last step (``step_epochs`` unused). Short runs want the
    cosine: a step decay by 0.01 leaves only the epochs before the first step to do the work.
    """

    epoch_size: Int = Field(1_000_000, ge=1, description="es: examples seen per epoch")
    batch_size: Int = Field(32, ge=1, le=4096, description="bs")
    lr: Float = Field(0.01, gt=0, le=10, description="base lr")
    warmup_epochs: Int = Field(10, ge=0, le=1000, description="we")
    step_epochs: Int = Field(10, ge=1, le=1000, description="se")
    total_epochs: Int = Field(30, ge=1, le=1000, description="te")
    weight_decay: Float = Field(1e-4, ge=0, le=1, description="wd")
    gamma: Float = Field(0.01, gt=0, le=1, description="lr decay factor")
    momentum: Float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    decay: Literal["step", "cosine"] = Field("step", description="lr decay after warmup: step (paper) | cosine")

    @model_validator(mode="after")
    def _check_warmup(self) -> Schedule:
        if self.warmup_epochs >= self.total_epochs and self.total_epochs > 1:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be < total_epochs ({self.total_epochs})"
            )
        return self


class TrainConfig(Schedule):
    """Training an encoder on pseudo-labels. Defaults: paper Table 10, "All DCs, Kinetics"."""

    early_stop: bool | Literal["auto"] = Field(
        "auto",
        description="stop when the held-out pseudo-label loss rises `patience` epochs in a row and keep the best "
        "epoch; auto = only when the held-out slice has enough videos for that loss to be trustworthy "
        "(xdc_core/train.py, EARLY_STOP_MIN_HELD_OUT: 100)",
    )
    patience: Int = Field(3, ge=1, le=100, description="consecutive rising epochs that stop training")
    held_out_margin: Float = Field(
        0.0, ge=0, le=10,
        description="standard errors (of the held-out loss's mean over videos) by which an epoch's held-out "
        "pseudo-label loss must beat chance (ln k) for early stopping to keep it; 0 keeps any epoch below ln k. "
        "An encoder that memorises targets it cannot predict makes confident, mostly wrong predictions whose mean "
        "loss lands a little below ln k by luck about half the time. Per epoch, 2 costs XDC most of what it learns on "
        "the sample data: there the first iteration's epochs beat chance by only 1-2 standard errors, and they are "
        "what the later iterations bootstrap from (docs/benchmarks.md); the whole run is judged by learned_margin",
    )
    learned_margin: Float | None = Field(
        2.0, ge=0, le=10,
        description="standard errors by which an encoder's held-out pseudo-label loss must beat chance (ln k) in at "
        "least one iteration for the run to return it; otherwise the run returns that modality's random init "
        "(iteration 0) and says it could not learn. 2: a one-sided test at about 2%, passed from the second "
        "iteration on where XDC learns (the sample data) and never by encoders that only memorise. Judged only "
        "where early stopping is on (a held-out slice large enough to trust); null: always the last iteration's",
    )
    val_fraction: Float = Field(
        0.1, ge=0, lt=1,
        description="held-out slice of the unlabelled videos; with early stopping on, the same in every iteration "
        "and never trained on, and raised to 100 videos where that leaves three quarters to train on (400+ videos), "
        "so that early stopping also protects small datasets",
    )
    workers: Int = Field(2, ge=0, le=64, description="DataLoader worker processes")
    split: str | None = Field("train", description="manifest split used for pretraining (None: every video)")
    lr_scaling: Literal["linear", "none"] = Field(
        "linear",
        description="batch_size is per process (per GPU, as the paper's bs); on N processes the global batch is "
        "N x batch_size and linear makes the peak lr N x lr (Goyal et al. 2017), none keeps lr",
    )
    sync_bn: bool = Field(
        False, description="SyncBatchNorm across GPUs; false = per-GPU BatchNorm statistics, as the paper's Caffe2 setup"
    )
    checkpoint_minutes: Float = Field(
        10.0, ge=0, le=24 * 60,
        description="write a resumable checkpoint at least this often (and after every epoch); 0 = after every step",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile the training step (fused BatchNorm/ReLU and elementwise work: +45% clips/s on an "
        "H200, docs/benchmarks.md); auto = on CUDA only (on a CPU the compile time outweighs the gain at "
        "these sizes); a step that fails to compile falls back to eager with one warning",
    )
    audio_masks: Int = Field(
        0, ge=0, le=8,
        description="SpecAugment (Park et al. 2019) on the audio encoder's training spectrograms: this many frequency "
        "masks (each up to 20% of the mel bands) and as many time masks (up to 20% of the frames), drawn per clip; "
        "0 = off, as in the paper",
    )


class EvalConfig(_Strict):
    """Downstream evaluation on a labelled train/test split. Defaults: paper Tables 11-12 (UCF101)."""

    train_split: str = Field("train", description="split the classifier is trained on")
    test_split: str = Field("test", description="split the top-1 accuracy is measured on")
    probe: Schedule = Schedule(
        epoch_size=106_000, batch_size=32, lr=0.01, warmup_epochs=2, step_epochs=2, total_epochs=8, weight_decay=0.005
    )
    probe_lrs: list[Float] = Field(
        [0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.02, 0.04],
        min_length=1,
        description="base lrs cross-validated for fc-only (Table 12); chosen on a slice of the train split",
    )
    finetune: bool = Field(False, description="also fully finetune each encoder (expensive)")
    finetune_schedule: Schedule = Schedule(
        epoch_size=106_000, batch_size=32, lr=0.004, warmup_epochs=2, step_epochs=2, total_epochs=8, weight_decay=0.005
    )
    finetune_lrs: list[Float] = Field([0.001, 0.002, 0.004, 0.006, 0.008, 0.01], min_length=1)
    val_fraction: Float = Field(0.2, gt=0, lt=1, description="slice of the train split used to choose the lr")
    workers: Int = Field(2, ge=0, le=64)


class Config(_Strict):
    """The whole settings tree."""

    data: DataConfig = DataConfig()
    decode: DecodeConfig = DecodeConfig()
    model: ModelConfig = ModelConfig()
    embed: EmbedConfig = EmbedConfig()
    cluster: ClusterConfig = ClusterConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvalConfig = EvalConfig()
    seed: Int = Field(0, ge=0, le=2**31 - 1, description="seed of every random choice in a run")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")


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


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source} must hold a mapping of settings, not {type(loaded).__name__}")
    return loaded


def _with_overrides(values: dict[str, Any], overrides: dict[str, Any] | None, source: str) -> Config:
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


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load settings from a YAML file (optional), then apply dotted overrides like ``{"data.fps": 15}``."""
    if path is None:
        return _with_overrides({}, overrides, "defaults")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return _with_overrides(_parse_yaml(path.read_text(), str(path)), overrides, str(path))


def parse_config(text: str, overrides: dict[str, Any] | None = None, source: str = "settings") -> Config:
    """:func:`load_config` for settings given as YAML (or JSON) text, e.g. a pipeline parameter."""
    return _with_overrides(_parse_yaml(text, source), overrides, source)


def setting_value(cfg: Config, dotted: str) -> Any:
    """The value of a dotted setting, e.g. ``setting_value(cfg, "cluster.k")``."""
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


PRESETS = Path(__file__).resolve().parent / "presets"  # package data: paper.yaml, cpu-demo.yaml


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of the preset ``name`` (``paper``, ``cpu-demo``), or :class:`ConfigError` listing them."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{name!r} is neither a file nor a preset ({', '.join(preset_names())})")
    return path


def is_preset(name: str) -> bool:
    return name in preset_names()
