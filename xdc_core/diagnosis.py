"""Is the run learning? The two signs that XDC cannot bootstrap on the data, said in words.

XDC learns from what the two modalities share: each encoder is trained to predict the clusters of
the other's features. On data where random-init features see little of the class, the loop can
run every iteration at chance and evaluate below random init; two measurements say so early:

* after training, the video and the audio clusters still agree no more than chance (their NMI
  within the spread of the NMI after shuffling): the targets carry nothing the other modality can
  predict;
* an encoder's held-out pseudo-label loss has not beaten chance (ln k) by ``train.learned_margin``
  standard errors in any iteration: it memorises its targets. Where early stopping was on, the
  epoch it kept is the one judged.

The second sign also decides what the run returns (:func:`returns_trained`): where early stopping
was on (a held-out slice large enough to trust) and no iteration beat chance so, the run's final
encoder of that modality is its random init, not the last iteration's. The test is on the whole
run, not per epoch: where XDC learns, its first iteration's epochs beat chance by only 1 to 2
standard errors, and they are what the later iterations bootstrap from (docs/benchmarks.md).

Both are judged from the second iteration on. Random-init clusters follow the nuisances: on the
embedded sample data, where XDC learns, their video-audio agreement is within 2 deviations of
chance in the first iteration and tens of deviations above from the second on, and the audio
encoder's first one or two iterations may not beat chance (a warning at iteration 2 that stops
once the encoder bootstraps).

Each finding is a sentence with what to try; the runner logs them and records them in
metrics.json, the KFP metrics and Prometheus (an alert fires on them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

# Agreement counts as above chance when the NMI is this many standard deviations of the shuffled
# NMIs above their mean: with 10 shuffles, 3 raised 2 false alarms in 200 pairs of independent
# clusterings (tests/test_diagnosis.py), while trained encoders on the sample data sit tens of
# deviations above.
AGREEMENT_Z = 3.0

WHAT_TO_TRY = (
    "what to try: more clustering iterations (cluster.iterations: the paper needs 5 to 6, and the agreement "
    "can grow slowly for several); check that the audio belongs to the video (in sync, not a music bed); more videos; "
    "longer clips (data.clip_frames, data.audio_seconds); measure the data first with "
    "`python bench/learning_bench.py --data MANIFEST --calibrate-only` (docs/benchmarks.md)"
)

# What of one training run the findings and the run's decision read: chained from iteration to
# iteration by the KFP train tasks (the final-encoder task judges by them), kept by the benchmark.
JUDGED_STATISTICS = ("train_loss", "val_loss", "val_loss_se", "best_epoch", "early_stop", "stop_reason")

# Said where a run returns an encoder's random init (xdc run's log, the KFP final-encoder task).
RANDOM_INIT_WHY = (
    "in none of the iterations did its held-out pseudo-label loss beat chance by train.learned_margin standard "
    "errors, so what it learned is not shown to carry to other videos and the run returns what it started from")


def agreement_z(cross_modal: Mapping[str, float]) -> float | None:
    """How far the video-audio NMI is above its chance level, in shuffle standard deviations
    (None where the statistics predate the spread being recorded)."""
    std = cross_modal.get("nmi_chance_std")
    if std is None:
        return None
    return (cross_modal["nmi"] - cross_modal["nmi_chance"]) / max(float(std), 1e-6)


def findings(iterations: Sequence[Mapping[str, Any]], k: int, margin: float | None = 0.0) -> list[str]:
    """The reasons to believe the run is not learning, as of the last of ``iterations`` (each as
    :meth:`RunLayout.iteration_stats` gives it: ``clusters`` with ``cross_modal``, and ``train`` per
    modality with its held-out ``val_loss`` per epoch; a KFP run's history has the clusters only),
    each with what to try. ``k``: clusters per clustering (chance loss is ln k); ``margin``:
    ``train.learned_margin``.

    Both signs are judged from the second iteration on: random-init clusters follow the nuisances
    and one encoder often learns nothing in the first iteration even where XDC works (the audio
    encoder on the embedded sample data)."""
    if len(iterations) < 2:
        return []
    last = iterations[-1]
    it = int(last["iteration"])
    found = []
    cross = last.get("clusters", {}).get("cross_modal")
    z = agreement_z(cross) if cross else None
    if z is not None and z < AGREEMENT_Z:
        found.append(
            f"iteration {it}: the video and audio clusters agree no more than chance (NMI {cross['nmi']:.3f}, "
            f"chance {cross['nmi_chance']:.3f}, {z:+.1f} standard deviations) after {it - 1} iteration(s) of "
            f"training: the targets carry nothing the other modality can predict, so XDC is not bootstrapping; "
            f"{WHAT_TO_TRY}")
    chance = math.log(k)
    margin = margin or 0.0
    for modality in last.get("train", {}):
        runs = [i["train"][modality] for i in iterations if i.get("train", {}).get(modality, {}).get("val_loss")]
        if len(runs) < len(iterations) or any(beat_chance(r, chance, margin) for r in runs):
            continue
        best = min(runs, key=lambda r: min(r["val_loss"]))
        by = f" by {margin:g} standard errors" if margin else ""
        returns = (f"; a run that ends so returns the random-init {modality} encoder (train.learned_margin)"
                   if all(judged(r) for r in runs) else "")
        found.append(
            f"iteration {it}: in none of the {it} iterations did the {modality} encoder's held-out pseudo-label loss "
            f"beat chance{by} (best {held_out(best)}, chance ln k = {chance:.2f}): it memorises its targets and "
            f"learns nothing that carries to other videos{returns}; {WHAT_TO_TRY}")
    return found


def judged(train: Mapping[str, Any]) -> bool:
    """Whether one training run had early stopping on: a held-out slice large enough to judge by."""
    return str(train.get("early_stop", "")).startswith("early stop on")


def beat_chance(train: Mapping[str, Any], chance: float, margin: float = 0.0) -> bool:
    """Whether one training run's held-out pseudo-label loss beat chance by ``margin`` standard
    errors: where early stopping was on, the epoch it kept (none kept: no); otherwise any epoch."""
    losses = train["val_loss"]
    errors = train.get("val_loss_se") or [0.0] * len(losses)  # statistics that predate the errors
    if judged(train):
        kept = int(train.get("best_epoch", 0))  # 0: the starting weights
        epochs: Sequence[int] = [kept - 1] if kept > 0 else []
    else:
        epochs = range(len(losses))
    return any(losses[e] + margin * errors[e] < chance for e in epochs)


def returns_trained(runs: Sequence[Mapping[str, Any]], k: int, margin: float | None) -> bool:
    """Whether a run returns its last iteration's encoder of one modality, given that encoder's
    training runs of every iteration: unless early stopping judged them (:func:`judged`) and none
    beat chance (ln ``k``) by ``margin`` standard errors. ``margin`` None: always."""
    if margin is None or not runs or not all(judged(r) and r.get("val_loss") for r in runs):
        return True
    return any(beat_chance(r, math.log(k), margin) for r in runs)


def final_iteration(runs: Sequence[Mapping[str, Any]], cfg: Config) -> int:
    """The iteration whose encoder of one modality a run returns, given that encoder's training
    runs of every iteration: the last (``cluster.iterations``), or 0, its random init, where
    :func:`returns_trained` says it learned nothing."""
    return cfg.cluster.iterations if returns_trained(runs, cfg.cluster.k, cfg.train.learned_margin) else 0


def held_out(train: Mapping[str, Any]) -> str:
    """A run's best held-out loss, with its standard error where recorded: "2.70 ± 0.03"."""
    best = min(range(len(train["val_loss"])), key=train["val_loss"].__getitem__)
    se = train.get("val_loss_se") or []
    return f"{train['val_loss'][best]:.2f}" + (f" ± {se[best]:.2f}" if len(se) > best else "")
