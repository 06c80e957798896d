"""The regression gate's arithmetic: a baseline measured over seeds, and a run compared with it.

A baseline file (JSON, committed, e.g. ``regression/ucf101_split1.json``) holds, per metric of
the ``ucf101-eval`` pipeline (``video_probe_top1``, ...), its value (the mean over the seeds it
was measured with), the seeds and per-seed values, their spread, and the drop allowed before the
gate fails. The allowed drop is set when the baseline is measured, by :func:`allowed_drop`:
wider than the run-to-run noise, so the gate does not flicker.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

FORMAT = "xdc-regression-baseline/1"
GATED = ("video_probe_top1", "audio_probe_top1")  # what a baseline gates unless told otherwise


def allowed_drop(values: Sequence[float], test_videos: int) -> float:
    """The drop a metric may show before it counts as a regression: three standard deviations of
    its per-seed values, and at least two test videos' worth of top-1 (``2 / test_videos``: the
    metric moves in steps of one video, and a seed-independent encoder can show no spread at all).
    Rounded up to 0.001."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return math.ceil(round(max(3 * spread, 2 / test_videos) * 1000, 6)) / 1000  # round: 3 * 0.02 is 0.0600...01


def measure_baseline(runs: Mapping[int, Mapping[str, float]], test_videos: int, about: Mapping[str, Any],
                     metrics: Sequence[str] = GATED) -> dict[str, Any]:
    """The baseline of ``metrics`` from the runs ``{seed: metrics of the ucf101-eval pipeline}``."""
    if len(runs) < 2:
        raise InputError("a baseline needs runs with at least 2 seeds, to measure the run-to-run noise")
    out: dict[str, Any] = {"format": FORMAT, **about, "test_videos": test_videos, "metrics": {}}
    for name in metrics:
        missing = [seed for seed, m in runs.items() if name not in m]
        if missing:
            raise InputError(f"the runs of seeds {missing} did not produce metric {name!r}")
        values = [float(runs[seed][name]) for seed in sorted(runs)]
        out["metrics"][name] = {
            "value": round(statistics.mean(values), 4), "seeds": sorted(runs), "values": values,
            "spread": round(statistics.stdev(values), 4), "allowed_drop": allowed_drop(values, test_videos)}
    return out


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline file, checked: each gated metric has a value and an allowed drop wider than the
    spread of the values it was measured with. Raises :class:`InputError` naming what is wrong."""
    try:
        baseline = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"baseline {path} does not exist; measure one with `xdc regress --write-baseline`") from None
    except (OSError, ValueError) as err:
        raise InputError(f"baseline {path} is not readable JSON: {err}") from None
    if not isinstance(baseline, dict) or baseline.get("format") != FORMAT or not baseline.get("metrics"):
        raise InputError(f"baseline {path} is not a {FORMAT} file with metrics (written by `xdc regress "
                         "--write-baseline`)")
    for name, m in baseline["metrics"].items():
        try:
            value, drop, values = float(m["value"]), float(m["allowed_drop"]), [float(v) for v in m["values"]]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"baseline {path}: metric {name!r} lacks a number for {err}") from None
        noise = max(values) - min(values) if values else 0.0
        if not values or drop <= noise or not 0 <= value <= 1:
            raise InputError(f"baseline {path}: metric {name!r} must have its per-seed values and an allowed drop "
                             f"wider than their range ({drop} vs {noise:.4f}): a gate within its own noise flickers")
    return baseline


@dataclass(frozen=True)
class Verdict:
    """One metric of a run against its baseline."""

    metric: str
    baseline: float
    now: float
    delta: float
    allowed_drop: float
    passed: bool


def compare(baseline: Mapping[str, Any], metrics: Mapping[str, float]) -> list[Verdict]:
    """Each baseline metric against the run's ``metrics``: it fails when it dropped by more than its
    allowed drop. A baseline metric the run did not produce is an :class:`InputError`, not a pass."""
    missing = sorted(set(baseline["metrics"]) - set(metrics))
    if missing:
        raise InputError(f"the run did not produce the baseline's metrics {missing} (it produced {sorted(metrics)})")
    verdicts = []
    for name, b in baseline["metrics"].items():
        now, value = float(metrics[name]), float(b["value"])
        delta = round(now - value, 4)
        verdicts.append(Verdict(name, value, now, delta, float(b["allowed_drop"]), delta >= -float(b["allowed_drop"])))
    return verdicts


def markdown(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown table: metric, baseline, now, delta, verdict."""
    lines = ["| metric | baseline | now | delta | verdict |", "|---|---|---|---|---|"]
    for v in verdicts:
        verdict = "pass" if v.passed else f"**FAIL** (drop > {v.allowed_drop:.3f})"
        lines.append(f"| {v.metric} | {v.baseline:.4f} | {v.now:.4f} | {v.delta:+.4f} | {verdict} |")
    return "\n".join(lines)


def report(verdicts: Sequence[Verdict], about: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON report of a gate run."""
    return {**about, "passed": all(v.passed for v in verdicts), "metrics": [asdict(v) for v in verdicts]}
