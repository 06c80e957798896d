"""Is the run learning? The two signs that XDC cannot bootstrap on the data, said in words.

XDC learns from what the two modalities share: each encoder is trained to predict the clusters of
the other's features. On data where random-init features see little of the class, the loop can
run every iteration at chance and evaluate below random init; two measurements say so early:

* after training, the video and the audio clusters still agree no more than chance (their NMI
  within the spread of the NMI after shuffling): the targets carry nothing the other modality can
  predict;
* an encoder's held-out pseudo-label loss has not beaten chance (ln k) in any iteration: it
  memorises its targets. Where early stopping was on, "beaten" is its own judgement (an epoch kept,
  by ``train.held_out_margin`` standard errors below ln k).

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
from typing import Any

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


def agreement_z(cross_modal: Mapping[str, float]) -> float | None:
    """How far the video-audio NMI is above its chance level, in shuffle standard deviations
    (None where the statistics predate the spread being recorded)."""
    std = cross_modal.get("nmi_chance_std")
    if std is None:
        return None
    return (cross_modal["nmi"] - cross_modal["nmi_chance"]) / max(float(std), 1e-6)


def findings(iterations: Sequence[Mapping[str, Any]], k: int) -> list[str]:
    """The reasons to believe the run is not learning, as of the last of ``iterations`` (each as
    :meth:`RunLayout.iteration_stats` gives it: ``clusters`` with ``cross_modal``, and ``train`` per
    modality with its held-out ``val_loss`` per epoch; a KFP run's history has the clusters only),
    each with what to try. ``k``: clusters per clustering (chance loss is ln k).

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
    for modality in last.get("train", {}):
        runs = [i["train"][modality] for i in iterations if i.get("train", {}).get(modality, {}).get("val_loss")]
        held_out = [min(r["val_loss"]) for r in runs]
        if len(runs) == len(iterations) and not any(beat_chance(r, chance) for r in runs):
            # Below ln k yet not beaten: early stopping's margin (train.held_out_margin) judged it noise.
            noise = "; early stopping judged it within noise of chance and kept no epoch" if min(held_out) < chance else ""
            found.append(
                f"iteration {it}: in none of the {it} iterations did the {modality} encoder's held-out "
                f"pseudo-label loss beat chance (best {min(held_out):.2f}, chance ln k = {chance:.2f}{noise}): it "
                f"memorises its targets and learns nothing that carries to other videos; {WHAT_TO_TRY}")
    return found


def beat_chance(train: Mapping[str, Any], chance: float) -> bool:
    """Whether one training run's held-out pseudo-label loss beat chance: where early stopping was on,
    whether it kept an epoch (its test includes the margin); otherwise any epoch below ln k."""
    if str(train.get("early_stop", "")).startswith("early stop on"):
        return int(train.get("best_epoch", 0)) > 0
    return min(train["val_loss"]) < chance
