"""The regression gates' arithmetic: a baseline measured over seeds, and a run compared with it.

Two gates, one verdict logic (docs/regression.md):

- the **evaluation gate** evaluates fixed reference encoders with the code under test (catches
  regressions in decoding, models and evaluation);
- the **pretraining gate** pretrains with the code under test at a small fixed budget, then
  evaluates the result the same way (catches regressions in clustering and training).

A baseline file (JSON, committed, ``regression/<gate>.json``, :class:`Baseline`) holds, per
gated metric (``video_probe_top1``, ...), its value (the mean over the seeds it was measured
with), the per-seed values, their spread and the drop allowed before the gate fails, set by
:func:`allowed_drop`: wider than the run-to-run noise, so the gate does not flicker. A
pretraining baseline also records the budget it was measured at: a run at another budget is not
compared with it.

A verdict is one of :class:`Outcome`: pass, regression, or no baseline yet (neutral: nothing to
compare with, which is neither a pass nor a failure).
"""

from __future__ import annotations

import enum
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError

FORMAT = "xdc-regression-baseline/2"
GATED = ("video_probe_top1", "audio_probe_top1")  # what a baseline gates unless told otherwise
GATES = ("evaluation", "pretraining")
# Where a missing baseline is made: the workflow that measures one on main and opens a pull request.
BASELINE_JOB = "the regression-baseline workflow (.github/workflows/regression-baseline.yml, Actions → " \
               "regression-baseline → Run workflow, gate {gate}) or `xdc regress --gate {gate} --write-baseline`"
# The settings that make a pretraining gate's budget: a baseline is valid only for the same values.
BUDGET = ("cluster.method", "cluster.iterations", "cluster.k", "train.total_epochs", "train.epoch_size",
          "train.batch_size", "train.lr", "model.video_width", "model.audio_width")


class Outcome(enum.IntEnum):
    """A gate's verdict, as the exit status of ``xdc regress`` (2 is unusable input, as everywhere)."""

    PASSED = 0
    REGRESSION = 1
    NO_BASELINE = 3  # neutral: neither pass nor fail (CI shows the gate skipped, docs/regression.md)


def allowed_drop(values: Sequence[float], test_videos: int) -> float:
    """The drop a metric may show before it counts as a regression: the widest of three standard
    deviations of its per-seed values; two standard errors of a top-1 at their mean over
    ``test_videos`` (``2 * sqrt(p (1 - p) / n)``); and two test videos' worth of top-1
    (``2 / test_videos``). Rounded up to 0.001.

    Why the standard-error floor: a baseline is measured over few seeds (2 or 3), whose spread can
    be far below the real seed-to-seed noise (measured on 40 test videos: seeds 0 and 1 gave
    0.800 and 0.825, seed 2 gave 0.725, a drop of 0.0875 against 3 standard deviations of 0.053).
    A seed re-draws which borderline test videos come out right, which the binomial standard
    error of a top-1 on that many videos bounds; on UCF101's 3783 test videos it is about 0.012."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    p = min(max(statistics.mean(values), 0.0), 1.0) if values else 0.0
    standard_error = math.sqrt(p * (1 - p) / test_videos)
    drop = max(3 * spread, 2 * standard_error, 2 / test_videos)
    return math.ceil(round(drop * 1000, 6)) / 1000  # round: 3 * 0.02 is 0.0600...01


class MetricBaseline(BaseModel):
    """One gated metric of a baseline: measured over ``seeds``, with the drop it may show."""

    model_config = ConfigDict(extra="forbid")

    value: float = Field(ge=0, le=1, description="mean of the per-seed values")
    seeds: list[int] = Field(min_length=2)
    values: list[float] = Field(min_length=2)
    spread: float = Field(ge=0, description="standard deviation of the per-seed values")
    allowed_drop: float = Field(gt=0)

    @model_validator(mode="after")
    def _wider_than_its_noise(self) -> MetricBaseline:
        if len(self.values) != len(self.seeds):
            raise ValueError(f"{len(self.values)} values for {len(self.seeds)} seeds")
        noise = max(self.values) - min(self.values)
        if self.allowed_drop <= noise:
            raise ValueError(f"the allowed drop must be wider than the range of the per-seed values "
                             f"({self.allowed_drop} vs {noise:.4f}): a gate within its own noise flickers")
        return self


class Baseline(BaseModel):
    """A baseline file, as ``xdc regress --write-baseline`` writes it."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["xdc-regression-baseline/2"]
    gate: Literal["evaluation", "pretraining"]
    manifest: str = Field(description="the labelled manifest evaluated on (and, for pretraining, pretrained on)")
    encoders: dict[str, str] = Field(default_factory=dict, description="evaluation gate: the reference encoders")
    budget: dict[str, Any] = Field(default_factory=dict, description="pretraining gate: the settings of BUDGET")
    settings: str = Field(description="where the settings came from")
    where: str = Field(description="kfp.local or the KFP host it was measured on")
    code: str = Field(description="the commit (or code digest) it was measured with")
    date: str
    test_videos: int = Field(gt=0)
    metrics: dict[str, MetricBaseline] = Field(min_length=1)

    @model_validator(mode="after")
    def _budget_for_pretraining(self) -> Baseline:
        if self.gate == "pretraining" and set(self.budget) != set(BUDGET):
            raise ValueError(f"a pretraining baseline records its budget: {', '.join(BUDGET)}")
        return self


def measure_baseline(runs: Mapping[int, Mapping[str, float]], test_videos: int, about: Mapping[str, Any],
                     metrics: Sequence[str] = GATED) -> Baseline:
    """The baseline of ``metrics`` from the runs ``{seed: flat metrics of the evaluation}``;
    ``about``: the other fields of :class:`Baseline` (gate, manifest, ...)."""
    if len(runs) < 2:
        raise InputError("a baseline needs runs with at least 2 seeds, to measure the run-to-run noise")
    measured = {}
    for name in metrics:
        missing = [seed for seed, m in runs.items() if name not in m]
        if missing:
            raise InputError(f"the runs of seeds {missing} did not produce metric {name!r}")
        values = [float(runs[seed][name]) for seed in sorted(runs)]
        measured[name] = {"value": round(statistics.mean(values), 4), "seeds": sorted(runs), "values": values,
                          "spread": round(statistics.stdev(values), 4),
                          "allowed_drop": allowed_drop(values, test_videos)}
    try:
        return Baseline.model_validate({"format": FORMAT, **about, "test_videos": test_videos, "metrics": measured})
    except ValidationError as err:
        raise InputError(f"the measured baseline is not usable: {_errors(err)}") from None


def _errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in err.errors())


def load_baseline(path: str | Path, gate: str) -> Baseline | None:
    """The baseline of ``gate`` at ``path``, validated; None when there is none yet (the neutral
    verdict). Raises :class:`InputError` naming what is wrong with a file that is there."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise InputError(f"baseline {path} cannot be read: {err}") from None
    try:
        baseline = Baseline.model_validate(json.loads(text))
    except ValueError as err:  # JSONDecodeError and ValidationError
        detail = _errors(err) if isinstance(err, ValidationError) else f"not JSON: {err}"
        raise InputError(f"baseline {path} is not a {FORMAT} file `xdc regress --write-baseline` wrote: {detail}; "
                         f"measure it again with {BASELINE_JOB.format(gate=gate)}") from None
    if baseline.gate != gate:
        raise InputError(f"baseline {path} is the {baseline.gate} gate's, not the {gate} gate's: pass its own file")
    return baseline


def no_baseline_message(path: str | Path, gate: str) -> str:
    """What the neutral verdict says."""
    return f"no baseline yet ({path}): run {BASELINE_JOB.format(gate=gate)}"


def budget_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`BUDGET` values of nested ``settings`` (a Config's ``model_dump()``)."""
    out = {}
    for dotted in BUDGET:
        value: Any = settings
        for part in dotted.split("."):
            value = value[part]
        out[dotted] = value
    return out


def check_budget(baseline: Baseline, budget: Mapping[str, Any], path: str | Path) -> None:
    """A pretraining run is compared only with a baseline of the same budget: else :class:`InputError`."""
    differ = {k: (baseline.budget.get(k), budget.get(k)) for k in BUDGET if baseline.budget.get(k) != budget.get(k)}
    if differ:
        listed = ", ".join(f"{k} {b!r} (now {n!r})" for k, (b, n) in differ.items())
        raise InputError(f"baseline {path} was measured at another budget: {listed}. Run the gate with the "
                         f"baseline's settings, or measure a new baseline for these")


@dataclass(frozen=True)
class Verdict:
    """One metric of a run against its baseline."""

    metric: str
    baseline: float
    now: float
    delta: float
    allowed_drop: float
    passed: bool


def compare(baseline: Baseline, metrics: Mapping[str, float], only: Sequence[str] | None = None) -> list[Verdict]:
    """Each baseline metric (those in ``only``, if given) against the run's ``metrics``: it fails
    when it dropped by more than its allowed drop. A baseline metric the run did not produce is an
    :class:`InputError`, not a pass."""
    gated = {k: m for k, m in baseline.metrics.items() if only is None or k in only}
    if not gated:
        raise InputError(f"the baseline gates none of {list(only or [])} (it has {sorted(baseline.metrics)})")
    missing = sorted(set(gated) - set(metrics))
    if missing:
        raise InputError(f"the run did not produce the baseline's metrics {missing} (it produced {sorted(metrics)})")
    verdicts = []
    for name, b in gated.items():
        now = float(metrics[name])
        delta = round(now - b.value, 4)
        verdicts.append(Verdict(name, b.value, now, delta, b.allowed_drop, delta >= -b.allowed_drop))
    return verdicts


def outcome(verdicts: Sequence[Verdict]) -> Outcome:
    return Outcome.PASSED if all(v.passed for v in verdicts) else Outcome.REGRESSION


def markdown(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown table: metric, baseline, now, delta, verdict."""
    lines = ["| metric | baseline | now | delta | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        verdict = "pass" if v.passed else f"**FAIL** (drop > {v.allowed_drop:.3f})"
        lines.append(f"| {v.metric} | {v.baseline:.4f} | {v.now:.4f} | {v.delta:+.4f} | {verdict} |")
    return "\n".join(lines)


def report(verdicts: Sequence[Verdict], about: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report of a gate run."""
    return {**about, "outcome": outcome(verdicts).name.lower(), "passed": outcome(verdicts) is Outcome.PASSED,
            "metrics": [asdict(v) for v in verdicts]}
