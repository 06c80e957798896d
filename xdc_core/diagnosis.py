"""Is the run learning? The two signs that XDC cannot bootstrap on the data, said in words.

XDC learns from what the two modalities share: each encoder is trained to predict the clusters of
the other's features. Two measurements of an iteration show when that cannot work (issue: on data
where random-init features see little of the class, the loop ran three iterations at chance and
evaluated below random init, and nothing told the user):

* from the second iteration on, the video and the audio clusters still agree no more than chance
  (their NMI within the spread of the NMI after shuffling): the targets carry nothing the other
  modality can predict. (Not in the first iteration: random-init clusters follow the nuisances, and
  on the embedded sample data, where XDC learns, their agreement is within 2 deviations of chance;
  it is far above from the second iteration on when training taught the encoders something.)
* an encoder's held-out pseudo-label loss never beat chance (ln k): it memorised its targets.

Each finding is a sentence with what to try; the runner logs them and records them in
metrics.json, the KFP metrics and Prometheus (an alert fires on them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# Agreement counts as above chance when the NMI is this many standard deviations of the shuffled
# NMIs above their mean: with 10 shuffles, 3 keeps the false alarm rate on truly independent
# clusterings well under 1% while the calibrated sample data sits tens of deviations above.
AGREEMENT_Z = 3.0

WHAT_TO_TRY = (
    "what to try: check that the audio belongs to the video (in sync, not a music bed); more videos; "
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


def findings(iteration: int, cross_modal: Mapping[str, float] | None,
             train: Mapping[str, Mapping[str, Any]], classes: Sequence[int]) -> list[str]:
    """The reasons to believe iteration ``iteration`` taught nothing, each with what to try.

    ``cross_modal``: kmeans.json's video-audio agreement (nmi, nmi_chance, nmi_chance_std);
    ``train``: per modality, the training result (its ``val_loss`` per epoch, maybe empty);
    ``classes``: the number of clusters of each target head (chance loss is the mean of ln k)."""
    found = []
    z = agreement_z(cross_modal) if cross_modal and iteration >= 2 else None
    if z is not None and z < AGREEMENT_Z:
        found.append(
            f"iteration {iteration}: the video and audio clusters agree no more than chance "
            f"(NMI {cross_modal['nmi']:.3f}, chance {cross_modal['nmi_chance']:.3f}, "  # type: ignore[index]
            f"{z:+.1f} standard deviations) after {iteration - 1} iteration(s) of training: the targets "
            f"carry nothing the other modality can predict, so XDC is not bootstrapping; {WHAT_TO_TRY}")
    chance = sum(math.log(k) for k in classes) / len(classes) if classes else None
    for modality, result in train.items():
        held_out = result.get("val_loss") or []
        if chance is not None and held_out and min(held_out) >= chance:
            found.append(
                f"iteration {iteration}: the {modality} encoder's held-out pseudo-label loss never beat "
                f"chance (best {min(held_out):.2f}, chance ln k = {chance:.2f}): it memorised its targets "
                f"and learnt nothing that carries to other videos; {WHAT_TO_TRY}")
    return found
