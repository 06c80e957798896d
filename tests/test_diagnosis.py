"""The run says when it is not learning: the two findings of xdc_core/diagnosis.py."""

import math

import numpy as np

from xdc_core.diagnosis import AGREEMENT_Z, agreement_z, findings
from xdc_core.kmeans import cross_modal_nmi


def test_independent_clusterings_are_found_at_chance_and_shared_ones_are_not():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 16, 600)
    independent = cross_modal_nmi(video, rng.integers(0, 16, 600), seed=0)
    assert agreement_z(independent) < AGREEMENT_Z
    [finding] = findings(2, independent, {}, [16])
    assert "iteration 2" in finding and "agree no more than chance" in finding and "what to try" in finding
    assert findings(1, independent, {}, [16]) == []  # random-init clusters: low agreement is expected

    # Audio clusters that follow the video's for a third of the videos: far above chance.
    shared = np.where(rng.random(600) < 0.33, video, rng.integers(0, 16, 600))
    agreeing = cross_modal_nmi(video, shared, seed=0)
    assert agreement_z(agreeing) > 10 * AGREEMENT_Z
    assert findings(2, agreeing, {}, [16]) == []


def test_false_alarms_on_independent_clusterings_are_rare():
    """The threshold's claim: independent clusterings exceed it rarely (seeded, 200 draws)."""
    rng = np.random.default_rng(1)
    alarms = sum(agreement_z(cross_modal_nmi(rng.integers(0, 16, 450), rng.integers(0, 16, 450), seed=s))
                 >= AGREEMENT_Z for s in range(200))
    assert alarms <= 6, alarms  # a z of 3 from 10 shuffles: a few percent at most


def test_held_out_loss_that_never_beats_chance_is_a_finding():
    chance = math.log(16)
    memorised = {"audio": {"val_loss": [3.6, 3.5, 3.48]}, "video": {"val_loss": [2.9, 2.5, 2.4]}}
    [finding] = findings(1, None, memorised, [16])
    assert "audio encoder" in finding and f"{chance:.2f}" in finding
    assert findings(1, None, {"video": {"val_loss": []}}, [16]) == []  # no held-out videos: nothing to say
