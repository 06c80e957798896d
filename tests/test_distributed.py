"""Data-parallel training: how an epoch splits over ranks, two real gloo ranks under torchrun,
and a killed run that resumes from its object-store checkpoint."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_SETTINGS
from xdc_core import store
from xdc_core.config import build_config
from xdc_core.dataset import ClipDataset
from xdc_core.models import build_trunk
from xdc_core.train import Observer, effective_lr, epoch_samples, split_holdout, train_encoder

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_an_epoch_is_split_over_the_ranks_without_overlap(world):
    cfg = build_config(TINY_SETTINGS).train.model_copy(update={"epoch_size": 50, "batch_size": 4})
    labels = np.arange(40) % 5
    train_pos, _ = split_holdout(40, 0.1, 0)
    videos, seeds = epoch_samples(labels, train_pos, cfg, seed=7, epoch=2, world_size=world)
    steps = -(-50 // (4 * world))
    assert videos.shape == seeds.shape == (steps, world, 4)
    assert len(np.unique(seeds)) == seeds.size  # every slot of the epoch is read by exactly one rank
    assert set(videos.ravel()) <= set(train_pos)  # never a held-out video
    again, same_seeds = epoch_samples(labels, train_pos, cfg, seed=7, epoch=2, world_size=world)
    assert np.array_equal(videos, again) and np.array_equal(seeds, same_seeds)  # reproducible from (seed, epoch)
    other, _ = epoch_samples(labels, train_pos, cfg, seed=7, epoch=3, world_size=world)
    assert not np.array_equal(videos, other)


def test_lr_follows_the_global_batch_by_the_stated_rule():
    cfg = build_config(TINY_SETTINGS).train
    assert effective_lr(cfg, 4) == pytest.approx(4 * cfg.lr)
    assert effective_lr(cfg.model_copy(update={"lr_scaling": "none"}), 4) == cfg.lr


@pytest.fixture
def audio_setup(tiny_decoded):
    cfg = build_config(TINY_SETTINGS)
    train = ClipDataset(tiny_decoded, cfg.data, "train", "train", ("audio",))
    val = ClipDataset(tiny_decoded, cfg.data, "eval", "train", ("audio",), clips=1)
    schedule = cfg.train.model_copy(update={"epoch_size": 48, "batch_size": 4, "total_epochs": 2,
                                            "early_stop": False, "checkpoint_minutes": 0})
    return train, val, [np.array(val.labels)], schedule


def test_a_run_stopped_mid_epoch_resumes_at_that_step(audio_setup, tmp_path):
    train, val, targets, schedule = audio_setup

    def fresh():
        torch.manual_seed(0)
        return build_trunk("audio", 4)

    whole = fresh()
    r_whole, _ = train_encoder(whole, "audio", train, val, targets, schedule, 5, torch.device("cpu"), progress=False)

    class Killed(Exception):
        pass

    class StopInEpoch2(Observer):
        def step(self, step):
            if (step.epoch, step.step) == (2, 5):
                raise Killed

    class Lines(Observer):
        def log(self, line):
            lines.append(line)

    with pytest.raises(Killed):
        train_encoder(fresh(), "audio", train, val, targets, schedule, 5, torch.device("cpu"), ckpt_dir=tmp_path,
                      progress=False, observer=StopInEpoch2())
    lines = []
    resumed = fresh()
    r_resumed, _ = train_encoder(resumed, "audio", train, val, targets, schedule, 5, torch.device("cpu"),
                                 ckpt_dir=tmp_path, progress=False, observer=Lines())
    assert any("epoch 2, step 5" in line for line in lines), lines
    assert r_resumed.train_loss == r_whole.train_loss and r_resumed.val_loss == r_whole.val_loss
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_two_gloo_ranks_train_in_lockstep_on_a_partition_of_each_epoch(tiny_decoded, tmp_path):
    proc = subprocess.run([*TORCHRUN, "--nproc-per-node", "2", str(ROOT / "tests" / "ddp_train.py"),
                           str(tiny_decoded), str(tmp_path)],
                          cwd=ROOT / "tests", capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    # the same weights on both ranks after every one of the 3 x 8 steps
    assert len(ranks[0]["sums"]) == 3 * 8 and ranks[0]["sums"] == ranks[1]["sums"]
    # each epoch's 128 items are split 64/64, none read by both ranks
    seeds = [set(r["seeds"]) for r in ranks]
    assert len(ranks[0]["seeds"]) == len(ranks[1]["seeds"]) == 3 * 64 and not seeds[0] & seeds[1]
    loss = ranks[0]["train_loss"]
    assert loss == ranks[1]["train_loss"] and loss[-1] < loss[0], loss


def _train_cmd(decoded: Path, clusters: Path, out: str, checkpoints: str | None) -> list[str]:
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "-m", "xdc_cli.main", "step", "train", "--data", str(decoded),
           "--modality", "audio", "--iteration", "1", "--clusters", str(clusters), "--out", out,
           "--stats", out + ".json", "--config", "cpu-demo"]
    for key, value in {**{f"data.{k}": v for k, v in TINY_SETTINGS["data"].items()}, "model.audio_width": 4,
                       "train.epoch_size": 256, "train.batch_size": 4, "train.total_epochs": 3, "train.lr": 0.02,
                       "train.workers": 0, "train.early_stop": "false", "train.checkpoint_minutes": 0,
                       "cluster.k": 2, "cluster.method": "xdc"}.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd + (["--checkpoints", checkpoints] if checkpoints else [])


def test_a_killed_two_rank_run_resumes_from_the_object_store(tiny_decoded, tmp_path, bucket):
    labels = np.array(ClipDataset(tiny_decoded, build_config(TINY_SETTINGS).data, "eval", "train").labels)
    clusters = tmp_path / "clusters.npz"
    np.savez(clusters, video=labels, audio=labels)  # XDC: the audio encoder learns the video clusters
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    whole = str(tmp_path / "whole.pt")
    done = subprocess.run(_train_cmd(tiny_decoded, clusters, whole, None), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # torchrun's engine started from the step itself (what a Kubeflow task with gpus=2 does) trains
    # exactly as torchrun does
    launched = str(tmp_path / "launched.pt")
    cmd = _train_cmd(tiny_decoded, clusters, launched, None)
    cmd = [sys.executable, "-m", "xdc_cli.main", *cmd[cmd.index("step"):], "--nproc-per-node", "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for (k, a), b in zip(torch.load(whole, weights_only=True).items(), torch.load(launched).values(), strict=True):
        assert torch.equal(a, b), k

    ckpt = f"s3://{bucket}/run/train-audio-1"
    out = f"s3://{bucket}/run/audio_encoder.pt"
    first = subprocess.Popen(_train_cmd(tiny_decoded, clusters, out, ckpt), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not store.exists(ckpt + "/last.pt"):  # written after the first step (checkpoint_minutes=0)
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # preempted: every rank dies at once, nothing is flushed
    first.wait()
    assert not store.exists(out)
    state = torch.load(io.BytesIO(store.read_bytes(ckpt + "/last.pt")), weights_only=False)
    assert state["step"] > 0, f"killed at an epoch's end (epoch {state['epoch']}), not mid-epoch"

    second = subprocess.run(_train_cmd(tiny_decoded, clusters, out, ckpt), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resumed audio training from checkpoint {ckpt}/last.pt" in second.stdout + second.stderr
    resumed = torch.load(io.BytesIO(store.read_bytes(out)), weights_only=True)
    for (k, a), b in zip(torch.load(whole, weights_only=True).items(), resumed.values(), strict=True):
        assert torch.equal(a, b), k


def test_two_ranks_embed_every_video_once_in_video_order(tiny_decoded, tmp_path):
    def embed(out: Path, *extra: str) -> dict:
        cmd = [sys.executable, "-m", "xdc_cli.main", "step", "embed", "--data", str(tiny_decoded), "--modality",
               "audio", "--out", str(out), "--config", "cpu-demo", *extra]
        for key, value in {**{f"data.{k}": v for k, v in TINY_SETTINGS["data"].items()}, "model.audio_width": 4,
                           "embed.batch_size": 3, "embed.workers": 0}.items():
            cmd += ["--set", f"{key}={value}"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        with np.load(out) as z:
            return {k: z[k] for k in z.files}

    one = embed(tmp_path / "one.npz")
    two = embed(tmp_path / "two.npz", "--nproc-per-node", "2")
    assert np.array_equal(one["index"], two["index"]) and np.array_equal(one["labels"], two["labels"])
    assert np.allclose(one["features"], two["features"], atol=1e-5)


def test_loader_workers_do_not_change_what_is_learned(audio_setup):
    # each item's augmentation is seeded by its slot in the epoch, not by the worker that reads it
    train, val, targets, schedule = audio_setup
    trunks = []
    for workers in (0, 2):
        torch.manual_seed(0)
        trunk = build_trunk("audio", 4)
        train_encoder(trunk, "audio", train, val, targets, schedule.model_copy(update={"workers": workers}), 5,
                      torch.device("cpu"), progress=False)
        trunks.append(trunk)
    for (k, a), b in zip(trunks[0].state_dict().items(), trunks[1].state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_damaged_checkpoint_is_named_and_kept(audio_setup, tmp_path):
    from xdc_core.errors import RunError

    train, val, targets, schedule = audio_setup
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(RunError, match="last.pt is not a training checkpoint xdc wrote.*delete it"):
        train_encoder(build_trunk("audio", 4), "audio", train, val, targets, schedule, 5, torch.device("cpu"),
                      ckpt_dir=tmp_path, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == b"garbage"  # nothing overwritten
