"""What a run prints: the decode summary, one line per iteration, the accuracy table.

The same lines come out of ``xdc run``, ``xdc step`` and ``xdc pipeline run-local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .diagnosis import held_out
from .layout import CROSS_MODAL


def format_summary(summary: dict[str, Any], out: Path | str) -> str:
    """The decode summary: accepted, quarantined by reason, speed."""
    lines = [
        f"decoded dataset: {out}",
        f"  accepted     {summary['accepted']:>6}   ({summary['accepted_duration_s']:.1f} s of video)",
        f"  quarantined  {summary['quarantined']:>6}   (reasons in {str(out).rstrip('/')}/quarantine.csv)",
    ]
    lines += [f"    {code:<22} {n}" for code, n in summary["reasons"].items()]
    speed = f", {summary['videos_per_s']:.2f} videos/s" if summary.get("videos_per_s") else ""
    lines.append(
        f"  decoded now {summary['decoded_now']}, resumed {summary['resumed']}, "
        f"{summary['elapsed_s']:.1f} s with {summary['workers']} workers{speed}"
    )
    return "\n".join(lines)


def format_clusters(name: str, c: dict[str, Any]) -> str:
    """One clustering's statistics: sizes min/median/max, NMI with the previous iteration, purity,
    and the GPUs when faiss ran on them."""
    if name == CROSS_MODAL:
        return f"video-audio nmi {c['nmi']:.3f} (chance {c['nmi_chance']:.3f})"
    prev = f" nmi-prev {c['nmi_previous']:.2f}" if c.get("nmi_previous") is not None else ""
    lab = f" purity {c['purity']:.2f}" if c.get("purity") is not None else ""
    dev = f" on {c['device']}" if c.get("device", "cpu") != "cpu" else ""  # faiss on GPUs: worth a word
    return f"{name} clusters k={c['k']} {c['sizes_min']}/{c['sizes_median']:g}/{c['sizes_max']}{prev}{lab}{dev}"


def format_train(modality: str, r: dict[str, Any]) -> str:
    """One encoder's training: first and last epoch's loss, best held-out loss, the processes when
    data parallel, why it stopped."""
    loss = f"loss {r['train_loss'][0]:.2f}→{r['train_loss'][-1]:.2f}" if r["train_loss"] else "no epochs"
    val = f" held-out {held_out(r)}" if r["val_loss"] else ""
    ranks = f" on {r['processes']} processes" if r.get("processes", 1) > 1 else ""
    return f"{modality} {loss}{val}{ranks} ({r['stop_reason']})"


def format_results(metrics: dict[str, Any]) -> str:
    """A small table of top-1 accuracies, then the paired difference from random init."""
    method = str(metrics["method"]).upper()
    rows = [(f"{method} linear probe", metrics["probe"])]
    if "finetune" in metrics:
        rows.append((f"{method} finetune", metrics["finetune"]))
    rows.append(("random init linear probe", metrics["baseline_random"]))
    if "baseline_random_finetune" in metrics:
        rows.append(("random init finetune", metrics["baseline_random_finetune"]))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'top-1 on the test split':<{width}}   video   audio"]
    lines += [f"{name:<{width}}   {r['video']['top1']:.3f}   {r['audio']['top1']:.3f}" for name, r in rows]
    if "probe_vs_random" in metrics:
        lines.append(f"linear probe, {method} minus random init (paired, 95% bootstrap interval over the test videos):")
        for m, d in metrics["probe_vs_random"].items():
            lines.append(f"  {m}: {d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
    return "\n".join(lines)


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Evaluation results as flat named numbers, the names the KFP UI and the regression gate use:
    ``video_probe_top1``, ``audio_baseline_random_top1``, ``video_probe_vs_random_delta``,
    ``video_probe_vs_random_ci95_low``/``_high``."""
    flat: dict[str, float] = {}
    for kind, per_modality in results.items():
        for modality, r in per_modality.items():
            if "top1" in r:
                flat[f"{modality}_{kind}_top1"] = float(r["top1"])
            else:  # a paired difference and its 95% interval
                flat[f"{modality}_{kind}_delta"] = float(r["delta"])
                flat[f"{modality}_{kind}_ci95_low"] = float(r["ci95"][0])
                flat[f"{modality}_{kind}_ci95_high"] = float(r["ci95"][1])
    return flat
