"""Hostile and broken inputs are refused or quarantined, never executed, never half-used
(issue 20): checkpoints that carry code, damaged checkpoints, reruns with other settings,
concurrent runs, bad manifest rows, and the errors a user can fix (exit 2, one message)."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_SETTINGS
from xdc_core.errors import RunError
from xdc_core.train import Checkpoints

ROOT = Path(__file__).resolve().parents[1]
XDC = [sys.executable, "-m", "xdc_cli.main"]


class RunsCode:
    """A pickle that runs a shell command when it is loaded (what a writer of the bucket could plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return os.system, (f"touch {self.marker}",)


def plant(folder: Path, marker: Path, digest: bool) -> Path:
    """``folder/last.pt`` as a code-running pickle; ``digest``: with a matching last.pt.sha256 too
    (an attacker who can write one file can write both)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps({"fingerprint": "x", "payload": RunsCode(marker)}, protocol=2)  # torch.save's
    (folder / "last.pt").write_bytes(data)
    if digest:
        (folder / "last.pt.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  last.pt\n")
    return folder / "last.pt"


def xdc(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*XDC, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_SETTINGS, "cluster": {"k": 3, "iterations": 1}}))
    return path


# -- 1. a checkpoint is data, never code ---------------------------------------------------------


@pytest.mark.parametrize("digest", [False, True])
def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path, digest):
    marker = tmp_path / "pwned"
    last = plant(tmp_path / "ckpt", marker, digest)
    with pytest.raises(RunError, match=f"{last} is not a training checkpoint xdc wrote.*delete it"):
        Checkpoints(tmp_path / "ckpt", "x", print).load(torch.device("cpu"))
    assert not marker.exists()


def test_xdc_run_refuses_a_planted_checkpoint_and_runs_nothing(tiny_decoded, tiny_yaml, tmp_path):
    """The issue's repro: a pickle whose __reduce__ calls os.system as OUT/iter_01/train_video/last.pt
    (with a matching digest beside it): exit 2 naming the file and what to do; nothing runs."""
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    last = plant(out / "iter_01" / "train_video", marker, digest=True)
    proc = xdc("run", "--data", str(tiny_decoded), "--config", str(tiny_yaml), "--out", str(out), "--no-eval",
               "--quiet")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{last} is not a training checkpoint xdc wrote" in proc.stderr and "delete it" in proc.stderr
    assert "Traceback" not in proc.stderr and "unsupported GLOBAL posix.system" in proc.stderr
    assert not marker.exists()
    assert not (out / "iter_01" / "video_encoder.pt").exists()


class _State:
    """What Checkpoints.save takes: a training state's ``state_dict()``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def state_dict(self) -> dict:
        return _state(self.n)


def _state(n: int) -> dict:
    return { "epoch": n, "step": 0, "totals": [0.0, 0.0], "model": {"w": torch.full((3,), n)},
            "optimizer": {"state": {}, "param_groups": []}, "result": {}, "best": {"val": float("inf")}}


def test_a_damaged_checkpoint_fails_its_digest(tmp_path):
    ckpts = Checkpoints(tmp_path, "f", print)
    ckpts.save(_State(1))
    assert (tmp_path / "last.pt.sha256").is_file()
    assert Checkpoints(tmp_path, "f", print).load(torch.device("cpu"))["epoch"] == 1
    data = bytearray((tmp_path / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the middle of the tensors
    (tmp_path / "last.pt").write_bytes(bytes(data))
    with pytest.raises(RunError, match="its SHA-256 is not the one .*last.pt.sha256 lists.*delete it"):
        Checkpoints(tmp_path, "f", print).load(torch.device("cpu"))


def test_killed_between_digest_and_checkpoint_still_resumes(tmp_path, monkeypatch):
    """The digest is written first and lists the file still in place too: a kill between the two
    writes leaves the previous checkpoint, which still verifies and loads."""
    ckpts = Checkpoints(tmp_path, "f", print)
    ckpts.save(_State(1))
    from xdc_core import store

    real = store.write_bytes

    def killed_at_the_checkpoint(uri, data):
        if str(uri).endswith("last.pt"):
            raise KeyboardInterrupt
        real(uri, data)

    monkeypatch.setattr(store, "write_bytes", killed_at_the_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        ckpts.save(_State(2))
    monkeypatch.undo()
    state = Checkpoints(tmp_path, "f", print).load(torch.device("cpu"))
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.full((3,), 1))
    ckpts = Checkpoints(tmp_path, "f", print)  # and the next save after a resume lists only the two it knows
    ckpts.load(torch.device("cpu"))
    ckpts.save(_State(3))
    assert len((tmp_path / "last.pt.sha256").read_text().splitlines()) == 2
    assert Checkpoints(tmp_path, "f", print).load(torch.device("cpu"))["epoch"] == 3


def test_checkpoints_in_the_object_store_carry_their_digest(bucket):
    from xdc_core import store

    where = f"s3://{bucket}/ckpt"
    Checkpoints(where, "f", print).save(_State(4))
    assert store.exists(f"{where}/last.pt.sha256")
    assert Checkpoints(where, "f", print).load(torch.device("cpu"))["epoch"] == 4
    store.write_bytes(f"{where}/last.pt", pickle.dumps({"fingerprint": "f"}))
    with pytest.raises(RunError, match=f"{where}/last.pt is not a training checkpoint xdc wrote"):
        Checkpoints(where, "f", print).load(torch.device("cpu"))


# -- 2. a rerun never mixes settings; two runs never share an OUT --------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_decoded, tmp_path_factory) -> tuple[Path, Path]:
    """A finished one-iteration run (no evaluation) and its settings file."""
    tmp = tmp_path_factory.mktemp("finished")
    settings = tmp / "tiny.yaml"
    settings.write_text(yaml.safe_dump({**TINY_SETTINGS, "cluster": {"k": 3, "iterations": 1}}))
    out = tmp / "run"
    proc = xdc("run", "--data", str(tiny_decoded), "--config", str(settings), "--out", str(out), "--no-eval",
               "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, settings


def test_a_rerun_with_other_settings_is_refused_naming_them(finished_run, tiny_decoded, tmp_path):
    out, settings = finished_run
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".xdc-run.lock"}
    recorded = yaml.safe_load((out / "settings.yaml").read_text())
    assert recorded["cluster"]["k"] == 3 and recorded["seed"] == 0
    proc = xdc("run", "--data", str(tiny_decoded), "--config", str(settings), "--out", str(out), "--no-eval",
               "--quiet", "--set", "cluster.k=2", "--set", "seed=5", "--method", "sdc")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "cluster.k: 3 -> 2" in proc.stderr and "seed: 0 -> 5" in proc.stderr
    assert "cluster.method: xdc -> sdc" in proc.stderr and "another --out" in proc.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".xdc-run.lock"} == before
    # the recorded settings rerun as they are; workers change nothing that is computed
    proc = xdc("run", "--data", str(tiny_decoded), "--config", str(out / "settings.yaml"), "--out", str(out),
               "--no-eval", "--quiet", "--set", "train.workers=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iter 1/1: already done" in proc.stdout


def test_a_second_run_on_a_busy_out_is_refused(tiny_decoded, tmp_path, tiny_yaml):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".xdc-run.lock", "w") as held:  # another process working in OUT
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        proc = xdc("run", "--data", str(tiny_decoded), "--config", str(tiny_yaml), "--out", str(out), "--no-eval",
                   "--quiet")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"another xdc run (pid 4242) is working in {out}" in proc.stderr and "another --out" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [".xdc-run.lock"]  # nothing done


# -- 3. and 9. decoding: one bad row costs that row; all bad is an error --------------------------


def test_a_traversal_row_under_s3_is_quarantined_and_the_rest_decoded(tiny_sample, bucket, tmp_path):
    from xdc_core import store

    videos = sorted((tiny_sample.parent / "videos").glob("*.mp4"))[:2]
    for v in videos:
        store.upload_file(v, f"s3://{bucket}/raw/videos/{v.name}")
    store.write_bytes(f"s3://{bucket}/secret.txt", b"not yours")
    rows = [f"videos/{v.name},c0,train" for v in videos] + ["../secret.txt,c1,train"]
    store.write_bytes(f"s3://{bucket}/raw/manifest.csv", ("path,label,split\n" + "\n".join(rows) + "\n").encode())
    settings = tmp_path / "tiny.yaml"
    settings.write_text(yaml.safe_dump(TINY_SETTINGS))
    out = f"s3://{bucket}/decoded"
    proc = xdc("decode", "--manifest", f"s3://{bucket}/raw/manifest.csv", "--out", out, "--config", str(settings),
               "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"(reasons in {out}/quarantine.csv)" in proc.stdout  # s3://, not s3:/
    quarantine = store.read_bytes(f"{out}/quarantine.csv").decode().splitlines()
    assert len(quarantine) == 2 and quarantine[1].startswith("../secret.txt,") and "'..'" in quarantine[1]
    index = store.read_bytes(f"{out}/index.csv").decode().splitlines()
    assert len(index) == 3  # the header and both good videos


def test_a_decode_where_every_file_is_bad_says_so_and_exits_2(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    (tmp_path / "b.mp4").write_bytes(b"")
    (tmp_path / "m.csv").write_text("path,label,split\na.mp4,x,train\nb.mp4,y,train\n")
    out = tmp_path / "decoded"
    proc = xdc("decode", "--manifest", str(tmp_path / "m.csv"), "--out", str(out), "--quiet", "--workers", "1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "all 2 videos were quarantined" in proc.stderr and f"{out}/quarantine.csv" in proc.stderr
    assert len((out / "quarantine.csv").read_text().splitlines()) == 3  # the reasons are there to read


# -- 4. the final encoders go through the one atomic writer --------------------------------------


def _file_size_limit(limit: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_leaves_no_truncated_final_encoder(finished_run, tiny_decoded, tmp_path):
    """A file-size limit stands in for a full disk: the final encoder copy fails, exit 2 naming the
    file, and neither a truncated encoder under its final name nor a temp file is left."""
    import shutil

    done, settings = finished_run
    out = tmp_path / "run"
    shutil.copytree(done, out)
    size = (out / "iter_01" / "video_encoder.pt").stat().st_size
    for m in ("video", "audio"):
        (out / f"{m}_encoder.pt").unlink()
    proc = subprocess.run([*XDC, "run", "--data", str(tiny_decoded), "--config", str(settings), "--out", str(out),
                           "--no-eval", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          preexec_fn=_file_size_limit(size // 2))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "file too large" in proc.stderr and f"{out}/video_encoder.pt" in proc.stderr
    assert not (out / "video_encoder.pt").exists()
    assert not [p for p in out.rglob("*") if "xdc-partial" in p.name]
    proc = xdc("run", "--data", str(tiny_decoded), "--config", str(settings), "--out", str(out), "--no-eval",
               "--quiet")  # room again: the rerun finishes
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "video_encoder.pt").read_bytes() == (done / "video_encoder.pt").read_bytes()


# -- 6. and 9. what the user can fix: exit 2, one message, no traceback ---------------------------


@pytest.mark.parametrize(("out", "extra", "message"), [
    ("{tmp}/afile", [], "{tmp}/afile exists and is a file, not a folder"),
    ("{tmp}/afile/run", [], "{tmp}/afile/run: a part of this path is a file"),
    ("/sys/xdc-not-writable", [], "/sys/xdc-not-writable: choose a folder you can write"),
    ("{tmp}/o", ["--device", "cuda"], "torch sees no CUDA GPU"),
    ("{tmp}/o", ["--set", "device=tpu"], "device 'tpu' is not one of auto, cpu, cuda"),
    ("{tmp}/o", ["--metrics-port", "99999"], "--metrics-port 99999 is not a TCP port"),
    ("{tmp}/o", ["--metrics-port", "BUSY"], "cannot serve metrics on 127.0.0.1:BUSY"),
    ("{tmp}/o", ["--nproc-per-node", "-3"], "--nproc-per-node: -3 is not at least 1"),
    ("{tmp}/o", ["--set", "cluster.iterations=yes"], "cluster.iterations: expected a number, got the boolean true"),
])
def test_what_the_user_can_fix_exits_2_with_one_message(tmp_path, out, extra, message):
    import socket

    if extra == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "afile").write_text("a file")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        extra = [port if a == "BUSY" else a for a in extra]
        proc = xdc("run", "--out", out.format(tmp=tmp_path), "--config", "cpu-demo", "--no-eval", "--quiet", *extra)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert message.format(tmp=tmp_path).replace("BUSY", port) in proc.stderr, proc.stderr
    assert not (tmp_path / "o" / "sample").exists()  # refused before any work
