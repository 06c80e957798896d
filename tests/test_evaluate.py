"""Evaluation: the linear probe and finetuning, with clip-averaged test predictions."""

import numpy as np
import pytest
import torch

from conftest import TINY_SETTINGS
from xdc_core.config import Schedule, build_config
from xdc_core.dataset import ClipDataset
from xdc_core.embed import clip_features
from xdc_core.evaluate import finetune, linear_probe
from xdc_core.models import build_trunk

SCHED = Schedule(epoch_size=400, batch_size=32, lr=0.1, warmup_epochs=1, step_epochs=2, total_epochs=3,
                 weight_decay=0.0)


def blobs(n_videos, clips, seed, separable=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n_videos)
    centres = rng.normal(size=(3, 16)) * (4 if separable else 0)
    feats = centres[labels][:, None, :] + rng.normal(size=(n_videos, clips, 16))
    return feats.astype(np.float32), labels


def test_probe_learns_separable_features_and_not_noise():
    x, y = blobs(90, 3, 0)
    good = linear_probe(x[:60], y[:60], x[60:], y[60:], SCHED, [0.01, 0.1], 0.2, seed=0)
    assert good["top1"] > 0.9 and good["lr"] in (0.01, 0.1) and set(good["val_top1_by_lr"]) == {"0.01", "0.1"}
    xn, yn = blobs(90, 3, 0, separable=False)
    noise = linear_probe(xn[:60], yn[:60], xn[60:], yn[60:], SCHED, [0.1], 0.2, seed=0)
    assert noise["top1"] < 0.6 and noise["val_top1_by_lr"] == {}  # one lr: nothing to choose


def test_clip_features_and_finetune_run_on_a_tiny_trunk(tiny_decoded):
    cfg = build_config(TINY_SETTINGS)
    d = cfg.data
    trunk = build_trunk("audio", 4)
    train_eval = ClipDataset(tiny_decoded, d, "eval", "train", ("audio",))
    test_eval = ClipDataset(tiny_decoded, d, "eval", "test", ("audio",))
    feats, _, labels = clip_features(trunk, test_eval, "audio", 8, 0, torch.device("cpu"), progress=False)
    assert feats.shape == (len(test_eval), 2, 32) and list(labels) == test_eval.labels
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    train_set = ClipDataset(tiny_decoded, d, "train", "train", ("audio",))
    sched = Schedule(epoch_size=16, batch_size=8, lr=0.01, warmup_epochs=0, step_epochs=1, total_epochs=1)
    result = finetune(trunk, "audio", train_set, train_eval, test_eval, np.asarray(train_set.labels),
                      np.asarray(test_eval.labels), sched, [0.01], 0.25, 0, torch.device("cpu"), 0, progress=False)
    # top-1 is the share of the test videos it got right, video by video
    assert result["top1"] == pytest.approx(np.mean(result["correct"]), abs=1e-4) and result["lr"] == 0.01
    assert len(result["correct"]) == len(test_eval)
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())  # the original is untouched
