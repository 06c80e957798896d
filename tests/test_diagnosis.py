"""The run says when it is not learning: the two findings of xdc_core/diagnosis.py."""

import math

import numpy as np
import pytest

from xdc_core.config import load_config
from xdc_core.diagnosis import AGREEMENT_Z, agreement_z, beat_chance, final_iteration, findings, returns_trained
from xdc_core.kmeans import cross_modal_nmi


def iteration(it, cross, val_loss=None, k=16):
    val_loss = val_loss or {"video": [2.5], "audio": [2.5]}
    return {"iteration": it, "k": k, "clusters": {"cross_modal": cross},
            "train": {m: {"val_loss": v} for m, v in val_loss.items()}}


def test_clusters_that_agree_at_chance_after_training_are_a_finding_and_shared_ones_are_not():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 16, 600)
    independent = cross_modal_nmi(video, rng.integers(0, 16, 600), seed=0)
    assert agreement_z(independent) < AGREEMENT_Z
    [finding] = findings([iteration(1, independent), iteration(2, independent)], 16)
    assert "iteration 2" in finding and "agree no more than chance" in finding and "what to try" in finding
    assert findings([iteration(1, independent)], 16) == []  # random-init clusters: low agreement is expected

    # Audio clusters that follow the video's for a third of the videos: far above chance.
    shared = np.where(rng.random(600) < 0.33, video, rng.integers(0, 16, 600))
    agreeing = cross_modal_nmi(video, shared, seed=0)
    assert agreement_z(agreeing) > 10 * AGREEMENT_Z
    assert findings([iteration(1, independent), iteration(2, agreeing)], 16) == []


def test_false_alarms_on_independent_clusterings_are_rare():
    """The threshold's claim: independent clusterings exceed it rarely (seeded, 200 draws; 2 measured)."""
    rng = np.random.default_rng(1)
    alarms = sum(agreement_z(cross_modal_nmi(rng.integers(0, 16, 450), rng.integers(0, 16, 450), seed=s))
                 >= AGREEMENT_Z for s in range(200))
    assert alarms <= 6, alarms


def test_held_out_loss_that_never_beats_chance_is_a_finding():
    chance = math.log(16)
    agree = {"nmi": 0.3, "nmi_chance": 0.03, "nmi_chance_std": 0.002}
    audio_never = [iteration(i, agree, {"audio": [3.6, 3.48], "video": [2.9, 2.4]}) for i in (1, 2)]
    [finding] = findings(audio_never, 16)
    assert "audio encoder" in finding and f"{chance:.2f}" in finding
    # The embedded sample data: audio at chance in iteration 1 only. Not a finding.
    late = [iteration(1, agree, {"audio": [2.8], "video": [2.7]}), iteration(2, agree, {"audio": [2.66], "video": [2.6]})]
    assert findings(late, 16) == []
    assert findings([iteration(i, agree, {"video": []}) for i in (1, 2)], 16) == []  # no held-out videos: nothing to say


def test_with_early_stopping_on_beating_chance_is_keeping_an_epoch():
    """Where early stopping was on, its judgement counts (with train.held_out_margin, a loss a little
    below ln k may be noise): an encoder that kept its starting weights in every iteration is a finding."""
    agree = {"nmi": 0.3, "nmi_chance": 0.03, "nmi_chance_std": 0.002}

    def kept(epoch):
        return {"val_loss": [2.75, 2.70], "early_stop": "early stop on: 225 held-out videos", "best_epoch": epoch}

    never = [{**iteration(i, agree), "train": {"audio": kept(0), "video": kept(2)}} for i in (1, 2)]
    [finding] = findings(never, 16)
    assert "audio encoder" in finding and "best 2.70" in finding and "returns the random-init audio encoder" in finding
    once = [{**iteration(i, agree), "train": {"audio": kept(i - 1), "video": kept(2)}} for i in (1, 2)]
    assert findings(once, 16) == []


def judged_run(val_loss, val_loss_se, best_epoch):
    return {"val_loss": val_loss, "val_loss_se": val_loss_se, "best_epoch": best_epoch,
            "early_stop": "early stop on: 100 held-out videos"}


def test_a_run_returns_an_encoder_only_if_one_iteration_beat_chance_by_the_margin():
    """The embedded sample data's shape: the first iteration's kept epoch beats ln 16 = 2.77 by about
    1 standard error, the second by more than 2. Judged on the whole run, the encoder is returned;
    an encoder whose kept epochs all stay within 2 errors of chance is not."""
    noise = judged_run([2.80, 2.74, 2.78], [0.03, 0.03, 0.03], 2)  # 2.74 + 2 x 0.03 > 2.77
    learned = judged_run([2.75, 2.60, 2.65], [0.03, 0.04, 0.04], 2)  # 2.60 + 2 x 0.04 < 2.77
    assert not beat_chance(noise, math.log(16), 2.0) and beat_chance(noise, math.log(16), 0.0)
    assert beat_chance(learned, math.log(16), 2.0)
    assert returns_trained([noise, learned], 16, 2.0) and returns_trained([learned, noise], 16, 2.0)
    assert not returns_trained([noise, noise], 16, 2.0)
    assert returns_trained([noise, noise], 16, None)  # the check switched off
    # Early stopping judges the epoch it kept: a low loss it did not keep does not count, nor do
    # the starting weights (epoch 0).
    assert not beat_chance(judged_run([2.50, 2.80], [0.03, 0.03], 2), math.log(16), 2.0)
    assert not returns_trained([judged_run([2.70, 2.80], [0.01, 0.01], 0)], 16, 2.0)
    # No early stopping (a held-out slice too small to trust): no judgement, the trained encoder.
    small = {"val_loss": [3.1, 3.2], "val_loss_se": [0.2, 0.2], "early_stop": "early stop off: 4 held-out videos < 100"}
    assert returns_trained([small, small], 16, 2.0)
    assert returns_trained([], 16, 2.0)
    # What the run returns, by iteration: the last one's encoder, or 0, the random init.
    cfg = load_config(None, {"cluster.k": 16, "cluster.iterations": 2})
    assert final_iteration([noise, learned], cfg) == 2 and final_iteration([noise, noise], cfg) == 0


@pytest.mark.integration
def test_a_run_on_data_whose_modalities_share_nothing_says_it_is_not_learning(tmp_path):
    """Through the run loop: videos whose picture and sound carry no class (signals at 0) share
    nothing across modalities, so after training the clusters agree at chance. The log warns in
    words, and metrics.json records it. With early stopping on (forced: 8 held-out videos, too few
    to judge fairly, hence a margin of 10 standard errors that no encoder here reaches), the run
    returns the random init as its final encoders, says why, and evaluates them."""
    import json

    from conftest import TINY_SETTINGS

    from xdc_core.config import build_config
    from xdc_core.run import run
    from xdc_core.sample_data import SampleSpec, make_sample_dataset

    manifest = make_sample_dataset(tmp_path / "data", SampleSpec(videos=40, classes=4, seconds=2.5,
                                                                 video_signal=0.0, audio_signal=0.0))
    lines: list[str] = []
    settings = TINY_SETTINGS | {"cluster": {"k": 4, "iterations": 2},
                                "train": TINY_SETTINGS["train"] | {"early_stop": True, "learned_margin": 10.0}}
    results = run(manifest, tmp_path / "run", build_config(settings), progress=False, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning: iteration 2")]
    assert any("agree no more than chance" in w for w in warnings), lines
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["learning_findings"] == len(warnings) and "what to try" in metrics["findings"]
    for m in ("video", "audio"):
        assert any(line.startswith(f"warning: the final {m} encoder is the random init") for line in lines), lines
        assert (tmp_path / "run" / f"{m}_encoder.pt").read_bytes() == \
            (tmp_path / "run" / "iter_00" / f"{m}_encoder.pt").read_bytes()
        # what is evaluated is what the run returns: the random init, scored exactly as the baseline
        assert results["probe"][m]["correct"] == results["baseline_random"][m]["correct"]
