"""Training on pseudo-labels: sampler, schedule, heads, early stop, checkpoint and resume."""

import warnings

import numpy as np
import pytest
import torch

from conftest import TINY_SETTINGS
from xdc_core.config import Schedule, build_config
from xdc_core.dataset import ClipDataset
from xdc_core.models import build_trunk
from xdc_core.train import (
    EARLY_STOP_MIN_HELD_OUT,
    MASK_SHARE,
    EarlyStopping,
    Observer,
    UniformLabelSampler,
    chance_loss,
    early_stopping,
    lr_at,
    mask_spectrograms,
    pretraining_holdout,
    rising_streak,
    split_holdout,
    train_encoder,
)


def test_sampler_draws_pseudo_classes_evenly():
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2)  # very unbalanced clusters
    idx = UniformLabelSampler(labels, 300, seed=0).indices()
    counts = np.bincount(labels[idx], minlength=3)
    assert len(idx) == 300 and counts.min() >= 99 and counts.max() <= 101
    assert set(idx[labels[idx] == 2]) == {98, 99}  # the 2-video cluster is oversampled, with replacement
    assert np.array_equal(idx, UniformLabelSampler(labels, 300, seed=0).indices())
    assert not np.array_equal(idx, UniformLabelSampler(labels, 300, seed=1).indices())


def test_lr_schedule_warmup_then_step_decay():
    s = Schedule(lr=0.1, warmup_epochs=2, step_epochs=3, total_epochs=10, gamma=0.1)
    assert lr_at(s, 0, 0, 10) == pytest.approx(0.1 / 20)  # linear from ~0
    assert lr_at(s, 1, 9, 10) == pytest.approx(0.1)  # reaches the base lr at the end of warmup
    assert [round(lr_at(s, e, 0, 10), 6) for e in range(2, 10)] == [0.1] * 3 + [0.01] * 3 + [0.001] * 2


def test_rising_streak_counts_consecutive_rises_up_to_the_last_epoch():
    assert rising_streak([3.0, 2.0, 1.0]) == 0
    assert rising_streak([1.0, 2.0, 3.0, 4.0]) == 3
    assert rising_streak([5.0, 1.0, 2.0, 1.5, 1.7]) == 1
    assert rising_streak([]) == 0


def test_holdout_is_seeded_and_disjoint():
    tr, va = split_holdout(20, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15 and not set(tr) & set(va)
    assert np.array_equal(va, split_holdout(20, 0.25, seed=3)[1])
    assert len(split_holdout(20, 0.0, seed=3)[1]) == 0
    assert len(split_holdout(20, 0.1, seed=3, at_least=6)[1]) == 6


def test_pretraining_holdout_is_one_set_per_run_where_early_stopping_uses_it():
    """With early stopping on, the held-out videos depend on the run's seed only (the same in every
    iteration), and hold at least EARLY_STOP_MIN_HELD_OUT videos where that leaves three quarters to
    train on; with it off, each training run draws its own."""
    cfg = build_config(TINY_SETTINGS).train.model_copy(update={"val_fraction": 0.1, "early_stop": "auto"})
    it1, it2 = pretraining_holdout(900, cfg, 1, run_seed=0)[1], pretraining_holdout(900, cfg, 2, run_seed=0)[1]
    assert np.array_equal(it1, it2) and len(it1) == EARLY_STOP_MIN_HELD_OUT  # 90 would switch early stop off
    assert early_stopping(cfg, len(it1))[0]
    assert len(pretraining_holdout(2000, cfg, 1, run_seed=0)[1]) == 200
    small = [pretraining_holdout(300, cfg, s, run_seed=0)[1] for s in (1, 2)]
    assert len(small[0]) == 30 and not np.array_equal(*small)  # 100 would leave fewer than three quarters
    off = cfg.model_copy(update={"early_stop": False})
    assert len(pretraining_holdout(900, off, 1, run_seed=0)[1]) == 90
    assert not np.array_equal(pretraining_holdout(900, off, 1, run_seed=0)[1],
                              pretraining_holdout(900, off, 2, run_seed=0)[1])


@pytest.fixture
def setup(tiny_decoded):
    cfg = build_config(TINY_SETTINGS)
    train = ClipDataset(tiny_decoded, cfg.data, "train", "train", ("audio",))
    val = ClipDataset(tiny_decoded, cfg.data, "eval", "train", ("audio",), clips=1)
    targets = [np.arange(len(train)) % 3]
    return cfg, train, val, targets


def test_heads_are_fresh_every_call(setup):
    cfg, train, val, targets = setup
    trunk = build_trunk("audio", 4)
    big = cfg.train.model_copy(update={"lr": 1.0, "total_epochs": 2, "warmup_epochs": 0, "early_stop": False})
    _, heads1 = train_encoder(trunk, "audio", train, val, targets, big, 0, torch.device("cpu"), progress=False)
    assert heads1.fcs[0].bias.abs().max() > 0.01  # the first heads moved a lot
    tiny = big.model_copy(update={"lr": 1e-9, "total_epochs": 1})
    _, heads2 = train_encoder(trunk, "audio", train, val, targets, tiny, 1, torch.device("cpu"), progress=False)
    # The second iteration's head starts from a fresh init (std 0.01, zero bias), not from heads1.
    assert heads2.fcs[0].bias.abs().max() < 1e-6
    assert heads2.fcs[0].weight.std().item() == pytest.approx(0.01, rel=0.3)


def test_mdc_style_two_heads(setup):
    cfg, train, val, targets = setup
    two = [targets[0], (targets[0] + 1) % 2]
    result, heads = train_encoder(build_trunk("audio", 4), "audio", train, val, two, cfg.train, 0,
                                  torch.device("cpu"), progress=False)
    assert [fc.out_features for fc in heads.fcs] == [3, 2] and result.epochs == 2


def test_resume_reproduces_uninterrupted_run(setup, tmp_path):
    cfg, train, val, targets = setup
    schedule = cfg.train.model_copy(update={"total_epochs": 3, "early_stop": False})

    def fresh():
        torch.manual_seed(0)
        return build_trunk("audio", 4)

    whole = fresh()
    r_whole, _ = train_encoder(whole, "audio", train, val, targets, schedule, 5, torch.device("cpu"),
                               ckpt_dir=tmp_path / "a", progress=False)

    class Killed(Exception):
        pass

    class KillAfterFirst(Observer):
        def epoch(self, result, _gpu_peak_bytes):
            if result.epochs == 1:
                raise Killed

    parts = fresh()
    with pytest.raises(Killed):
        train_encoder(parts, "audio", train, val, targets, schedule, 5, torch.device("cpu"),
                      ckpt_dir=tmp_path / "b", progress=False, observer=KillAfterFirst())
    resumed = fresh()  # a new process would start from scratch weights, then load the checkpoint
    r_resumed, _ = train_encoder(resumed, "audio", train, val, targets, schedule, 5, torch.device("cpu"),
                                 ckpt_dir=tmp_path / "b", progress=False)
    assert r_resumed.resumed_from == 1 and r_resumed.epochs == 3
    assert r_resumed.train_loss == r_whole.train_loss and r_resumed.val_loss == r_whole.val_loss
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_cosine_decay_goes_from_lr_to_lr_times_gamma_after_warmup():
    s = Schedule(lr=0.1, warmup_epochs=1, total_epochs=5, gamma=0.01, decay="cosine")
    assert lr_at(s, 0, 9, 10) == pytest.approx(0.1)  # end of warmup
    assert lr_at(s, 1, 0, 10) == pytest.approx(0.1)  # decay starts at the base lr
    assert lr_at(s, 3, 0, 10) == pytest.approx(0.1 * (0.01 + 0.99 * 0.5), rel=0.05)  # half way: the mean
    assert lr_at(s, 4, 9, 10) == pytest.approx(0.001)  # last step: lr * gamma
    lrs = [lr_at(s, e, i, 10) for e in range(1, 5) for i in range(10)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # never rises


def test_early_stop_auto_needs_enough_held_out_videos():
    cfg = build_config(TINY_SETTINGS).train
    assert cfg.early_stop == "auto"
    on, why = early_stopping(cfg, EARLY_STOP_MIN_HELD_OUT)
    assert on and "early stop on" in why
    off, why = early_stopping(cfg, EARLY_STOP_MIN_HELD_OUT - 1)
    assert not off and "too few" in why
    assert early_stopping(cfg.model_copy(update={"early_stop": True}), 5)[0]
    assert not early_stopping(cfg.model_copy(update={"early_stop": False}), 10_000)[0]


def test_targets_that_cannot_generalise_leave_the_trunk_as_it_started(setup):
    """Targets the held-out videos cannot share (their pseudo-class never occurs in training) can only
    be memorised: no epoch's held-out loss beats ln k, so with early stopping the trunk keeps its
    starting weights instead of the memorising ones."""
    cfg, train, val, _ = setup
    schedule = cfg.train.model_copy(update={"early_stop": True, "lr": 0.05, "total_epochs": 3, "patience": 5})
    train_pos, held_out = pretraining_holdout(len(train), schedule, 0)
    targets = [np.where(np.isin(np.arange(len(train)), held_out), 2, np.arange(len(train)) % 2)]
    trunk = build_trunk("audio", 4)
    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    result, _ = train_encoder(trunk, "audio", train, val, targets, schedule, 0, torch.device("cpu"), progress=False)
    assert result.epochs == 3 and result.best_epoch == 0, result
    assert min(result.val_loss) > chance_loss([3]) and "kept the starting weights" in result.stop_reason
    assert all(torch.equal(start[k], v) for k, v in trunk.state_dict().items())
    # Without early stopping the same run keeps what it learnt (the weights moved).
    free = build_trunk("audio", 4)
    free.load_state_dict(start)
    train_encoder(free, "audio", train, val, targets, schedule.model_copy(update={"early_stop": False}), 0,
                  torch.device("cpu"), progress=False)
    assert not all(torch.equal(start[k], v) for k, v in free.state_dict().items())


def test_an_epoch_is_kept_only_if_it_beats_chance_by_the_margin():
    """held_out_margin: an epoch whose held-out loss is below ln k by less than that many standard
    errors of its mean is noise, and the trunk keeps its starting weights."""
    cfg = build_config(TINY_SETTINGS).train.model_copy(update={"early_stop": True, "held_out_margin": 2.0})
    chance = chance_loss([16])
    trunk = torch.nn.Linear(2, 2)
    stopper = EarlyStopping(cfg, 200, [16], trunk)
    stopper.update(trunk, 1, chance - 0.15, 0.1, [chance - 0.15])  # 1.5 standard errors: not kept
    assert stopper.best_epoch(1) == 0
    assert "beat chance (ln k = 2.77) by 2 standard errors" in stopper.finish(trunk, "completed 1 epochs")
    stopper.update(trunk, 2, chance - 0.25, 0.1, [chance - 0.15, chance - 0.25])  # 2.5: kept
    stopper.update(trunk, 3, chance - 0.3, 0.2, [chance - 0.15, chance - 0.25, chance - 0.3])  # lower, 1.5: not
    assert stopper.best_epoch(3) == 2
    # Without a margin any epoch below ln k counts, as before.
    plain = EarlyStopping(cfg.model_copy(update={"held_out_margin": 0.0}), 200, [16], trunk)
    plain.update(trunk, 1, chance - 0.01, 0.1, [chance - 0.01])
    assert plain.best_epoch(1) == 1


def test_the_margin_is_measured_on_the_held_out_videos(setup):
    """Through training: the margin reaches the early stopping, which keeps the starting weights
    where no epoch beats ln k by 10 standard errors, and says so."""
    cfg, train, val, targets = setup
    schedule = cfg.train.model_copy(update={"early_stop": True, "lr": 0.05, "total_epochs": 2, "patience": 5,
                                            "held_out_margin": 10.0})
    trunk = build_trunk("audio", 4)
    start = {k: v.clone() for k, v in trunk.state_dict().items()}
    result, _ = train_encoder(trunk, "audio", train, val, targets, schedule, 0, torch.device("cpu"), progress=False)
    assert result.best_epoch == 0 and "by 10 standard errors" in result.stop_reason, result
    assert len(result.val_loss_se) == len(result.val_loss) and all(0 < se < 1 for se in result.val_loss_se), result
    assert all(torch.equal(start[k], v) for k, v in trunk.state_dict().items())


class Lines(Observer):
    def __init__(self):
        self.lines = []

    def log(self, line):
        self.lines.append(line)


def test_compiled_training_matches_eager_and_reports_its_compile_time(setup):
    """train.compile on the CPU (auto compiles on CUDA only): torch.compile's inductor, the same
    loss and weights as eager within float tolerance after an epoch (its fused kernels round
    differently, and SGD compounds that over epochs), and the compile time in the log."""
    cfg, train, val, targets = setup
    schedule = cfg.train.model_copy(update={"total_epochs": 1, "early_stop": False})
    assert schedule.compile == "auto"
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        trunk, lines = build_trunk("audio", 4), Lines()
        r, _ = train_encoder(trunk, "audio", train, val, targets, schedule.model_copy(update={"compile": compiled}),
                             3, torch.device("cpu"), progress=False, observer=lines)
        results[compiled] = (r, trunk, lines.lines)
    (eager, eager_trunk, eager_log), (comp, comp_trunk, comp_log) = results[False], results[True]
    assert not any("compiled the training step" in line for line in eager_log)
    assert len([line for line in comp_log if line.startswith("compiled the training step in ")]) == 1, comp_log
    np.testing.assert_allclose(comp.train_loss, eager.train_loss, rtol=1e-4)
    for (k, a), b in zip(eager_trunk.state_dict().items(), comp_trunk.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), k


def test_a_step_that_fails_to_compile_trains_eagerly_with_one_warning(setup, monkeypatch):
    cfg, train, val, targets = setup
    schedule = cfg.train.model_copy(update={"total_epochs": 2, "early_stop": False})

    def broken_compile(model, **_kwargs):
        def fails(*_args):
            raise RuntimeError("backend compiler failed: no C++ compiler\nmore lines")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        trunk = build_trunk("audio", 4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r, _ = train_encoder(trunk, "audio", train, val, targets,
                                 schedule.model_copy(update={"compile": compiled}), 3, torch.device("cpu"),
                                 progress=False)
        runs.append((r, trunk, [w for w in caught if "torch.compile failed" in str(w.message)]))
    assert runs[0][2] == []
    fallbacks = runs[1][2]
    assert len(fallbacks) == 1 and "RuntimeError: backend compiler failed: no C++ compiler)" in str(fallbacks[0].message)
    assert runs[1][0].train_loss == runs[0][0].train_loss  # eager after the fallback: the same run
    for a, b in zip(runs[0][1].state_dict().values(), runs[1][1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_spectrogram_masks_zero_whole_bands_and_frames_up_to_a_fifth_of_each_axis():
    """train.audio_masks: SpecAugment's masks, drawn per clip, each within MASK_SHARE of its axis."""
    torch.manual_seed(0)
    x = torch.randn(64, 1, 40, 100)
    y = mask_spectrograms(x.clone(), 1)
    assert y.shape == x.shape
    zero_bands = (y == 0).all(dim=-1)[:, 0]  # [B, Q]: bands masked over every frame
    zero_frames = (y == 0).all(dim=-2)[:, 0]  # [B, P]
    assert zero_bands.sum(1).max() <= MASK_SHARE * 40 and zero_frames.sum(1).max() <= MASK_SHARE * 100
    assert zero_bands.any(1).float().mean() > 0.5 and zero_frames.any(1).float().mean() > 0.5
    assert len({tuple(r.nonzero().flatten().tolist()) for r in zero_frames}) > 10  # per clip, not per batch
    kept = (y != 0)
    assert torch.equal(y[kept], x[kept])  # elsewhere untouched
    assert torch.equal(mask_spectrograms(x.clone(), 0), x)
