"""The reliability contract of issue 20, as tests that inject faults into real ``xdc`` processes.

* ``kill -9`` at seeded random moments of decode, embed, k-means, train and evaluate: the rerun of
  that step gives files byte-identical to an uninterrupted run's, and leaves no temp file and no
  process (decode workers, DataLoader workers) behind.
* A full disk (a file-size limit, RLIMIT_FSIZE) at seeded sizes: exit 2 naming the file, no
  truncated file under a final name, and a rerun with room completes identically.
* S3 down, slow and hanging (a TCP proxy on loopback in front of the real S3 server): bounded
  retries, exit 2 within a bounded time, and a rerun through a healthy proxy completes.
* Hostile inputs: refused or quarantined (more in tests/test_hostile.py).

Each step runs as the ``xdc`` command (:func:`xdc_cli.main.main`) in a process forked from a
forkserver that imported torch once, so a kill costs no interpreter start and 20 kill points fit
in the time budget. The counts (faults injected, survived, bytes lost) are written to
bench/results/faults.json and quoted in docs/operating.md. ``pytest -m faults`` runs this module.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import yaml

from conftest import TINY_SETTINGS

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "faults.json"
SEED = 20
GONE_WITHIN_S = 10.0  # a killed step's worker processes must be gone by then (DataLoader workers poll every 5 s)

# The tiny run of tests/conftest.py, one iteration, one probe lr; decode in two worker processes.
SETTINGS = {**TINY_SETTINGS, "cluster": {"k": 3, "iterations": 1}, "decode": {"workers": 2},
            "evaluate": {**TINY_SETTINGS["evaluate"], "probe_lrs": [0.1]}}

# step -> (its outputs under the run folder, kill points)
STEPS = {
    "decode": (["decoded"], 4),
    "embed_video": (["iter_01/features_video.npz"], 2),
    "embed_audio": (["iter_01/features_audio.npz"], 2),
    "kmeans": (["iter_01/clusters.npz", "iter_01/kmeans.json"], 3),
    "train_video": (["iter_01/video_encoder.pt", "iter_01/train_video.json", "iter_01/train_video"], 3),
    "train_audio": (["iter_01/audio_encoder.pt", "iter_01/train_audio.json", "iter_01/train_audio"], 3),
    "evaluate": (["metrics.json"], 4),
}
ORDER = ["decode", "init", "embed_video", "embed_audio", "kmeans", "train_video", "train_audio", "evaluate"]

# What a rerun may change in a file without changing a result: timings and how it resumed.
VOLATILE = {"summary.json": {"elapsed_s", "videos_per_s", "resumed", "decoded_now"},
            "train_video.json": {"resumed_from"}, "train_audio.json": {"resumed_from"}}

TALLY: Counter[str] = Counter()  # "<kind>.injected", "<kind>.survived", "bytes_lost", ...


def step_argv(step: str, run: Path, config: Path, manifest: Path) -> list[str]:
    """The ``xdc`` command of ``step`` on the run folder ``run`` (the commands of dvc.yaml's stages)."""
    d, i0, i1 = run / "decoded", run / "iter_00", run / "iter_01"
    c = ["--config", str(config)]
    if step == "decode":
        return ["decode", "--manifest", str(manifest), "--out", str(d), "--quiet", *c]
    if step == "init":
        return ["step", "init", "--out", str(i0), *c]
    if step == "kmeans":
        return ["step", "kmeans", "--video-features", str(i1 / "features_video.npz"), "--audio-features",
                str(i1 / "features_audio.npz"), "--iteration", "1", "--out", str(i1 / "clusters.npz"),
                "--stats", str(i1 / "kmeans.json"), *c]
    if step == "evaluate":
        return ["step", "evaluate", "--data", str(d), "--video-encoder", str(i1 / "video_encoder.pt"),
                "--audio-encoder", str(i1 / "audio_encoder.pt"), "--out", str(run / "metrics.json"), *c]
    kind, m = step.split("_")
    if kind == "embed":
        return ["step", "embed", "--data", str(d), "--modality", m, "--encoder", str(i0 / f"{m}_encoder.pt"),
                "--out", str(i1 / f"features_{m}.npz"), *c]
    return ["step", "train", "--data", str(d), "--modality", m, "--iteration", "1", "--clusters",
            str(i1 / "clusters.npz"), "--encoder", str(i0 / f"{m}_encoder.pt"), "--out", str(i1 / f"{m}_encoder.pt"),
            "--stats", str(i1 / f"train_{m}.json"), "--checkpoints", str(i1 / f"train_{m}"), *c]


# -- processes -----------------------------------------------------------------------------------


def _child(argv: list[str], env: dict[str, str], fsize: int | None, out: Connection) -> None:
    """A forked ``xdc`` process: ``xdc ARGV`` with ``env`` added, its output into the pipe ``out``
    (a pipe, not a file: the file-size limit would cut a file)."""
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    os.environ.update(env)
    # A forkserver child inherits its start method; a real `xdc` has the platform's (fork on Linux), which
    # its DataLoader workers use: with forkserver they would be the server's children, not this process's.
    multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
    if fsize is not None:  # Python ignores SIGXFSZ: a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    import torch

    from xdc_cli.main import main

    torch.set_num_threads(1)  # as the forkserver's OMP_NUM_THREADS: the same numbers in every process
    try:
        code = main(argv)
    finally:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        print(f"\n{CPU_MARK}{sum(u.ru_utime + u.ru_stime for u in usage):.3f}", flush=True)
    sys.exit(code)


CPU_MARK = "xdc-faults-cpu-seconds: "
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(["torch", "xdc_cli.main", "xdc_core.steps", "xdc_core.decode", "test_faults"])


def start_forkserver() -> None:
    """Start the forkserver with one thread per process (OMP_NUM_THREADS, read when torch and faiss
    load): 2 cores run the suite without oversubscription, and every process computes alike."""
    from multiprocessing import forkserver

    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


def _proc_stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                table[int(entry.name)] = stat[stat.rindex(")") + 2:].split()
    return table


def descendants(pid: int) -> set[int]:
    table = _proc_stats()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, fields in table.items() if int(fields[1]) in frontier} - found
        found |= frontier
    return found


def cpu_seconds(pids: set[int]) -> float:
    """CPU time used so far by ``pids`` (user + system, with their reaped children)."""
    table, tick = _proc_stats(), os.sysconf("SC_CLK_TCK")
    return sum(sum(int(x) for x in table[p][11:15]) for p in pids if p in table) / tick


def still_running(pids: set[int], within: float = GONE_WITHIN_S) -> set[int]:
    """Those of ``pids`` still running (zombies count as gone) after waiting up to ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        table = _proc_stats()
        alive = {p for p in pids if p in table and table[p][0] != "Z"}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@dataclass
class Outcome:
    code: int | None  # None: killed
    seconds: float
    log: str
    orphans: set[int] = field(default_factory=set)  # processes of a killed run still there after GONE_WITHIN_S


def xdc(argv: list[str], kill_at: float | None = None, env: dict[str, str] | None = None,
        fsize: int | None = None, timeout: float = 300, kill_when: Callable[[int], bool] | None = None) -> Outcome:
    """Run ``xdc ARGV`` in a forked process; ``kill_at``: SIGKILL it that many seconds after its start,
    or (with ``kill_when``) as soon as ``kill_when(pid)`` holds, if that comes first."""
    start_forkserver()
    reader, writer = multiprocessing.Pipe(duplex=False)
    env = {"XDC_CACHE_DIR": os.environ.get("XDC_CACHE_DIR", ""), **(env or {})}
    proc = FORKSERVER.Process(target=_child, args=(argv, env, fsize, writer))
    chunks: list[bytes] = []
    started = time.monotonic()
    proc.start()
    writer.close()
    pump = threading.Thread(target=_drain, args=(reader, chunks), daemon=True)
    pump.start()
    if kill_when is not None:
        while proc.exitcode is None and not kill_when(proc.pid) and time.monotonic() - started < (kill_at or timeout):
            proc.join(0.05)
    else:
        proc.join(kill_at if kill_at is not None else timeout)
    orphans: set[int] = set()
    cpu = 0.0
    if proc.exitcode is None:
        tree = descendants(proc.pid) | {proc.pid}
        cpu = cpu_seconds(tree)
        proc.kill()
        proc.join()
        if kill_at is None:
            raise AssertionError(f"xdc {' '.join(argv)} did not end within {timeout} s")
        orphans = still_running(tree - {proc.pid})
    pump.join(GONE_WITHIN_S)
    log = b"".join(chunks).decode(errors="replace")
    if CPU_MARK in log:
        log, _, used = log.rpartition(CPU_MARK)
        cpu = float(used)
    TALLY["cpu_ms"] += round(cpu * 1000)
    code = None if proc.exitcode == -signal.SIGKILL and kill_at is not None else proc.exitcode
    return Outcome(code, time.monotonic() - started, log, orphans)


def _drain(reader: Connection, chunks: list[bytes]) -> None:
    with contextlib.suppress(OSError):
        while data := os.read(reader.fileno(), 65536):
            chunks.append(data)
    reader.close()


# -- comparing runs --------------------------------------------------------------------------------


def _same(ref: Path, got: Path) -> bool:
    if not got.is_file():
        return False
    if ref.name == "progress.jsonl":  # the journal: the last record of each video, in any order
        from xdc_core.decode import read_journal

        return read_journal(ref) == read_journal(got)
    if ref.name in VOLATILE:
        a, b = (json.loads(p.read_text()) for p in (ref, got))
        return all(a.get(k) == b.get(k) for k in (a.keys() | b.keys()) - VOLATILE[ref.name])
    return ref.read_bytes() == got.read_bytes()


def leftovers(run: Path) -> list[str]:
    """Temp files of killed writes anywhere under ``run`` (ours: atomic writes, decode's videos)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if p.name.endswith(".xdc-partial") or ".tmp." in p.name)


def compare(ref: Path, run: Path, outputs: list[str]) -> tuple[list[str], int]:
    """``(problems, bytes lost)``: each file of ``outputs`` in ``ref`` that ``run`` lacks or holds
    otherwise (its size counts as lost), and each file ``run`` has there that ``ref`` has not."""
    problems, lost = [], 0
    for out in outputs:
        files = [ref / out] if (ref / out).is_file() else sorted(p for p in (ref / out).rglob("*") if p.is_file())
        for f in files:
            rel = f.relative_to(ref)
            if not _same(f, run / rel):
                problems.append(f"{rel}: {'differs' if (run / rel).exists() else 'missing'}")
                lost += f.stat().st_size
        if (run / out).is_dir():
            extra = {p.relative_to(run) for p in (run / out).rglob("*") if p.is_file()} - \
                {f.relative_to(ref) for f in files}
            problems += [f"{rel}: not in the uninterrupted run" for rel in sorted(extra)]
    return problems, lost


def results(step: str) -> list[str]:
    """The outputs of ``step`` that are results; a training checkpoint folder is resume state instead,
    held to :func:`intact` (it verifies) rather than to the uninterrupted run's bytes."""
    return [out for out in STEPS[step][0] if not Path(out).name.startswith("train_") or "." in out]


def checkpoints_sound(run: Path, step: str) -> bool:
    return all(intact(Path(), run / out / "last.pt") for out in STEPS[step][0] if out not in results(step))


def fresh_copy(ref: Path, dst: Path, step: str) -> Path:
    """A copy of the finished run ``ref`` without ``step``'s outputs: the state before the step."""
    shutil.copytree(ref, dst)
    for out in STEPS[step][0]:
        target = dst / out
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dst


@dataclass
class Reference:
    run: Path
    config: Path
    manifest: Path
    seconds: dict[str, float]

    def argv(self, step: str, run: Path) -> list[str]:
        return step_argv(step, run, self.config, self.manifest)


@pytest.fixture(scope="module")
def reference(tiny_sample, tmp_path_factory) -> Reference:
    """An uninterrupted run of every step, each timed (the kill moments are drawn within these times)."""
    tmp = tmp_path_factory.mktemp("faults")
    config = tmp / "settings.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    ref = Reference(tmp / "reference", config, tiny_sample, {})
    assert xdc(["config", "--config", str(config)]).code == 0  # the forkserver up (torch loaded): not timed below
    for step in ORDER:
        outcome = xdc(ref.argv(step, ref.run))
        assert outcome.code == 0, f"{step}: {outcome.log[-3000:]}"
        ref.seconds[step] = outcome.seconds
    assert not leftovers(ref.run)
    return ref


@pytest.fixture(scope="module", autouse=True)
def tally() -> Iterator[Counter[str]]:
    """The counts of this module's faults, written to bench/results/faults.json when all of it ran."""
    TALLY.clear()
    yield TALLY
    kinds = sorted({k.split(".")[0] for k in TALLY if "." in k})
    report = {
        "what": "faults injected by tests/test_faults.py, how many the system survived (the contract held), "
                "and the bytes of results lost (files of an uninterrupted run missing or different after the rerun)",
        "seed": SEED,
        "faults": {k: {"injected": TALLY[f"{k}.injected"], "survived": TALLY[f"{k}.survived"]} for k in kinds},
        "injected": sum(TALLY[f"{k}.injected"] for k in kinds),
        "survived": sum(TALLY[f"{k}.survived"] for k in kinds),
        "bytes_lost": TALLY["bytes_lost"],
        "cpu_seconds": round(TALLY["cpu_ms"] / 1000),  # all the xdc processes together; 2 cores: about half in wall time
    }
    if report["injected"] >= 20:  # the whole module ran (not a -k selection of it)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


# -- kill -9 ---------------------------------------------------------------------------------------


def _kill_points() -> list[tuple[str, int, float]]:
    """(step, point, fraction of the step's uninterrupted time at which to kill), seeded."""
    rng = random.Random(SEED)
    return [(step, i, round(rng.uniform(0.05, 0.9), 3)) for step, (_, n) in STEPS.items() for i in range(n)]


@pytest.mark.parametrize("step", list(STEPS))
def test_kill_9_then_rerun_gives_the_same_files(reference, step, tmp_path):
    for _, i, fraction in [p for p in _kill_points() if p[0] == step]:
        run = fresh_copy(reference.run, tmp_path / f"run{i}", step)
        argv = reference.argv(step, run)
        for attempt in range(3):  # a step that ended before its kill moment (a faster run): earlier, on a fresh copy
            killed = xdc(argv, kill_at=fraction / 2 ** attempt * reference.seconds[step])
            if killed.code is None:
                break
            shutil.rmtree(run)
            fresh_copy(reference.run, run, step)
        TALLY["kill.injected"] += killed.code is None
        assert not killed.orphans, f"{step} killed at {fraction:.0%}: processes left running: {killed.orphans}"
        rerun = xdc(argv)
        assert rerun.code == 0, f"{step} rerun after a kill at {fraction:.0%}: {rerun.log[-3000:]}"
        problems, lost = compare(reference.run, run, results(step))
        TALLY["bytes_lost"] += lost
        assert not problems, f"{step} killed at {fraction:.0%}, then rerun: {problems}"
        assert checkpoints_sound(run, step)
        assert not leftovers(run), f"{step} killed at {fraction:.0%}, then rerun: {leftovers(run)}"
        TALLY["kill.survived"] += killed.code is None


def test_kill_9_and_sigterm_of_xdc_decode_leave_no_process(tiny_sample, tmp_path):
    """The real command in its own interpreter: its spawn workers and multiprocessing's resource
    tracker end with it, whether it is killed (-9) or asked to stop (SIGTERM, exit 130, resumable)."""
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    for sig in (signal.SIGKILL, signal.SIGTERM):
        out = tmp_path / f"decoded-{sig.name}"
        proc = subprocess.Popen([sys.executable, "-m", "xdc_cli.main", "decode", "--manifest", str(tiny_sample),
                                 "--out", str(out), "--config", str(config), "--quiet"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while len(tree := descendants(proc.pid)) < 3 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the two workers and the resource tracker
            assert len(tree) >= 3, f"no workers seen before the decode ended: {proc.communicate()}"
            time.sleep(0.5)
            tree = descendants(proc.pid)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        TALLY["kill.injected"] += 1
        assert not still_running(tree, within=5), f"{sig.name}: workers or the resource tracker outlived xdc decode"
        if sig == signal.SIGTERM:
            assert proc.returncode == 130 and "interrupted; rerun the same command to resume" in err, err
        rerun = xdc(["decode", "--manifest", str(tiny_sample), "--out", str(out), "--config", str(config), "--quiet"])
        assert rerun.code == 0, rerun.log[-3000:]
        assert not leftovers(out)
        TALLY["kill.survived"] += 1



def test_kill_9_of_a_step_with_dataloader_workers_leaves_none(reference, tmp_path):
    """Training with 2 DataLoader workers, killed once they run: they end with it; the rerun with
    the same workers gives the files of the reference run, trained without workers."""
    run = fresh_copy(reference.run, tmp_path / "run", "train_video")
    argv = [*reference.argv("train_video", run), "--set", "train.workers=2"]
    killed = xdc(argv, kill_at=120, kill_when=lambda pid: len(descendants(pid)) >= 2)
    assert killed.code is None, f"trained to the end before its workers were seen: {killed.log[-3000:]}"
    TALLY["kill.injected"] += 1
    assert not killed.orphans, f"DataLoader workers left running: {killed.orphans}"
    rerun = xdc(argv)
    assert rerun.code == 0, rerun.log[-3000:]
    problems, lost = compare(reference.run, run, results("train_video"))
    TALLY["bytes_lost"] += lost
    assert checkpoints_sound(run, "train_video")
    assert not problems and not leftovers(run), (problems, leftovers(run))
    TALLY["kill.survived"] += 1

# -- a full disk -----------------------------------------------------------------------------------

FULL_DISK = {"decode": 2, "embed_audio": 1, "kmeans": 1, "train_video": 2, "evaluate": 1}  # step -> limits drawn


def intact(ref: Path, got: Path) -> bool:
    """Whether ``got``, left by a failed step, is sound: the finished run's file ``ref``; for the
    decode journal, only records that one has; for a training checkpoint, one its digest file
    lists (what a resume checks); or a temp file (never a final name; the rerun removes it)."""
    if got.name.endswith(".xdc-partial") or ".tmp." in got.name:
        return True
    if got.name == "progress.jsonl":
        from xdc_core.decode import read_journal

        full = read_journal(ref)
        return all(full.get(k) == rec for k, rec in read_journal(got).items())
    if got.name in ("last.pt", "last.pt.sha256"):
        import hashlib

        checkpoint, digests = got.parent / "last.pt", got.parent / "last.pt.sha256"
        if not checkpoint.is_file():  # killed before the first checkpoint was complete: training starts over
            return True
        return digests.is_file() and hashlib.sha256(checkpoint.read_bytes()).hexdigest() in digests.read_text()
    return ref.is_file() and _same(ref, got)


@pytest.mark.parametrize("step", list(FULL_DISK))
def test_a_full_disk_exits_2_and_leaves_no_truncated_file(reference, step, tmp_path):
    """A file-size limit at a seeded size below the step's largest file: exit 2 naming the file;
    every file under the run folder is the uninterrupted run's or absent; the rerun completes."""
    rng = random.Random(f"{SEED}-{step}")
    outputs = STEPS[step][0]
    largest = max(f.stat().st_size for out in outputs for f in
                  ([reference.run / out] if (reference.run / out).is_file() else (reference.run / out).rglob("*"))
                  if f.is_file())
    for i in range(FULL_DISK[step]):
        limit = rng.randint(1, largest - 1)
        run = fresh_copy(reference.run, tmp_path / f"run{i}", step)
        argv = reference.argv(step, run)
        full = xdc(argv, fsize=limit)
        TALLY["disk_full.injected"] += 1
        assert full.code == 2, f"{step} with a {limit}-byte file limit: {full.log[-3000:]}"
        assert "file too large" in full.log and "Traceback" not in full.log, full.log[-3000:]
        bad = [str(p.relative_to(run)) for p in run.rglob("*")
               if p.is_file() and not intact(reference.run / p.relative_to(run), p)]
        assert not bad, f"{step} with a {limit}-byte file limit left files unlike the finished run's: {bad}"
        rerun = xdc(argv)
        assert rerun.code == 0, rerun.log[-3000:]
        problems, lost = compare(reference.run, run, results(step))
        TALLY["bytes_lost"] += lost
        assert not problems and not leftovers(run) and checkpoints_sound(run, step), (problems, leftovers(run))
        TALLY["disk_full.survived"] += 1


# -- S3 down, slow, hanging ------------------------------------------------------------------------


class FaultyProxy:
    """A TCP proxy on 127.0.0.1 in front of a server that can forward, delay, refuse (stop
    listening) or stall (hold every byte, answer nothing, keep the connections open)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.mode, self.delay, self.stall_after = "forward", 0.0, None  # stall_after: bytes served, then stall
        self.served, self.stalled_at = 0, None
        self.listener: socket.socket | None = None
        self.port = 0
        self.closed = threading.Event()
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.mode = "forward"
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse: nothing listens on the port any more (connections are refused)."""
        self.mode = "down"
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def stall(self) -> None:
        self.mode, self.stalled_at = "stall", time.monotonic()

    def close(self) -> None:
        self.closed.set()
        if self.mode != "down":
            self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.mode == "stall":
                threading.Thread(target=self._hold, args=(client,), daemon=True).start()
                continue
            server = socket.create_connection(self.upstream)
            for a, b, answer in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(a, b, answer), daemon=True).start()

    def _hold(self, client: socket.socket) -> None:
        with client:
            while not self.closed.is_set() and client.recv(65536):
                pass

    def _pump(self, src: socket.socket, dst: socket.socket, answer: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if answer:
                    self.served += len(data)
                    if self.stall_after is not None and self.served > self.stall_after and self.mode != "stall":
                        self.stall()
                    time.sleep(self.delay)
                while self.mode == "stall" and not self.closed.is_set():
                    time.sleep(0.05)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def s3_manifest(tiny_sample, bucket, s3_env) -> str:
    """4 of the sample's videos and their manifest in the bucket."""
    from xdc_core import store

    videos = sorted((tiny_sample.parent / "videos").glob("*.mp4"))[:4]
    for v in videos:
        store.upload_file(v, f"s3://{bucket}/raw/videos/{v.name}")
    rows = "".join(f"videos/{v.name},c{i % 2},train\n" for i, v in enumerate(videos))
    store.write_bytes(f"s3://{bucket}/raw/manifest.csv", f"path,label,split\n{rows}".encode())
    return f"s3://{bucket}/raw/manifest.csv"


@pytest.fixture
def proxy(s3_env) -> Iterator[FaultyProxy]:
    p = FaultyProxy(s3_env.endpoint)
    yield p
    p.close()


def _through(proxy: FaultyProxy, s3_env) -> dict[str, str]:
    """The S3 settings of a client of ``proxy``: 3 attempts, 1 s timeouts, quick backoff."""
    return {**s3_env.env(), "XDC_S3_ENDPOINT": proxy.endpoint, "XDC_S3_RETRIES": "3", "XDC_S3_RETRY_BASE": "0.05",
            "XDC_S3_CONNECT_TIMEOUT": "1", "XDC_S3_READ_TIMEOUT": "1"}


def _bound(env: dict[str, str]) -> float:
    from xdc_core.store import S3Settings

    s = S3Settings("x", "x", "x", retries=int(env["XDC_S3_RETRIES"]), retry_base=float(env["XDC_S3_RETRY_BASE"]),
                   read_timeout=float(env["XDC_S3_READ_TIMEOUT"]))
    return 2 * s.longest_wait + 5  # a stalled download: its stream times out, then the retried request does


@pytest.mark.parametrize("fault", ["down", "hang at the start", "hang in the middle", "slow"])
def test_s3_down_slow_or_hanging_fails_clearly_in_bounded_time_and_resumes(s3_manifest, proxy, s3_env, fault,
                                                                           tmp_path):
    from xdc_core import store

    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "decode": {"workers": 1}}))
    out = tmp_path / "decoded"  # a local folder: the rerun resumes from what the failed run finished
    argv = ["decode", "--manifest", s3_manifest, "--out", str(out), "--config", str(config), "--quiet"]
    env = _through(proxy, s3_env)
    if fault == "down":
        proxy.down()
    elif fault == "hang at the start":
        proxy.stall()
    elif fault == "hang in the middle":  # once the manifest and about one and a half videos came through
        video = store.read_bytes(s3_manifest).decode().splitlines()[1].split(",")[0]
        proxy.stall_after = int(1.5 * store.stat(f"{s3_manifest.rsplit('/', 1)[0]}/{video}")[0])
    else:
        proxy.delay = 0.02
    failed = xdc(argv, env=env)
    TALLY["s3.injected"] += 1
    if fault == "slow":
        assert failed.code == 0, failed.log[-3000:]
    else:
        stalled_for = time.monotonic() - (proxy.stalled_at or time.monotonic() - failed.seconds)
        assert failed.code == 2, failed.log[-3000:]
        assert "Traceback" not in failed.log and f"{proxy.endpoint} failed 3 times" in failed.log, failed.log[-3000:]
        assert stalled_for < _bound(env) + 20, f"{fault}: {stalled_for:.1f} s to give up"
        assert not (out / "index.csv").exists(), "a failed decode wrote a dataset"
        if proxy.mode == "down":
            proxy.up()
        proxy.mode, proxy.stall_after = "forward", None
        rerun = xdc(argv, env={**env, "XDC_S3_ENDPOINT": proxy.endpoint})
        assert rerun.code == 0, rerun.log[-3000:]
    index = (out / "index.csv").read_text().splitlines()
    quarantine = (out / "quarantine.csv").read_text().splitlines()
    assert (len(index), len(quarantine)) == (5, 1), (index, quarantine)  # every video decoded, none quarantined
    TALLY["s3.survived"] += 1


# -- the lock on an object-store OUT ---------------------------------------------------------------


def test_a_second_run_on_an_object_store_out_is_refused_and_a_stale_lock_replaced(bucket, tmp_path):
    """The lock object names its holder; a second run exits 2 naming the object and how to clear
    it; a lock left by a killed run of this host is replaced; the lock goes when the run ends."""
    from xdc_core import run_lock, store
    from xdc_core.layout import RunLayout

    out = f"s3://{bucket}/run"
    lock = f"{out}/{run_lock.LOCK_OBJECT}"
    held = {"host": "another-host", "pid": 4242, "started": "2026-12-05T10:00:00+00:00", "token": "t"}
    store.write_bytes(lock, json.dumps(held).encode())
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    env = {"XDC_WORK_DIR": str(tmp_path / "work"), **{k: os.environ[k] for k in os.environ if k.startswith("XDC_S3_")}}
    busy = xdc(["run", "--out", out, "--config", str(config), "--no-eval", "--quiet"], env=env)
    TALLY["hostile.injected"] += 1
    assert busy.code == 2, busy.log[-3000:]
    assert f"host another-host, pid 4242, started 2026-12-05T10:00:00+00:00) holds the lock object {lock}" in busy.log
    assert f"delete {lock}" in busy.log and "Traceback" not in busy.log
    assert json.loads(store.read_bytes(lock)) == held  # not taken over
    TALLY["hostile.survived"] += 1

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {**held, "host": socket.gethostname(), "pid": int(dead.stdout)}  # a pid that ran here and is gone
    store.write_bytes(lock, json.dumps(stale).encode())
    notes: list[str] = []
    layout = RunLayout(tmp_path / "local")
    layout.root.mkdir()
    with run_lock.run_lock(layout, out, notes.append):
        mine = json.loads(store.read_bytes(lock))
        assert (mine["host"], mine["pid"]) == (socket.gethostname(), os.getpid())
        assert "no longer runs on this host" in notes[0]
    assert not store.exists(lock)


# -- hostile inputs (more in tests/test_hostile.py: pickled checkpoints, path traversal, reruns) ----


def test_malformed_containers_are_quarantined_each_with_its_reason(tiny_sample, tmp_path):
    """Broken and disguised files among good ones: each quarantined with a specific reason, the good
    one decoded, exit 0."""
    good = sorted((tiny_sample.parent / "videos").glob("*.mp4"))[0]
    data = good.read_bytes()
    hostile = {
        "random.mp4": os.urandom(20_000),
        "empty.mp4": b"",
        "text.mp4": b"path,label,split\n" * 100,
        "header_only.mp4": data[:1024],
        "truncated.mp4": data[: len(data) * 6 // 10],  # its header declares more than it holds
        "zeros.mp4": bytes(len(data)),
    }
    rows = [f"{good},c0,train"]
    for name, content in hostile.items():
        (tmp_path / name).write_bytes(content)
        rows.append(f"{tmp_path / name},c1,train")
    (tmp_path / "dir.mp4").mkdir()  # a folder where a file should be
    rows.append(f"{tmp_path / 'dir.mp4'},c1,train")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "decode": {"workers": 1}}))
    out = tmp_path / "decoded"
    done = xdc(["decode", "--manifest", str(manifest), "--out", str(out), "--config", str(config), "--quiet"])
    TALLY["hostile.injected"] += len(hostile) + 1
    assert done.code == 0 and "Traceback" not in done.log, done.log[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["accepted"], summary["quarantined"]) == (1, len(hostile) + 1), summary
    reasons = (out / "quarantine.csv").read_text()
    assert "truncated" in reasons or "too short" in reasons, reasons
    assert not leftovers(out)
    TALLY["hostile.survived"] += summary["quarantined"]


def test_huge_declared_sizes_are_refused_naming_the_file(reference, tmp_path):
    """Arrays whose headers declare far more than their files hold (10^12 samples, 10^12 features):
    the step exits 2 naming the file, without allocating what the header claims or a traceback."""
    import io
    import zipfile

    import numpy as np

    def huge_header(dtype: str, shape: tuple[int, ...]) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
        return buf.getvalue()

    run = fresh_copy(reference.run, tmp_path / "run", "embed_audio")
    for audio in sorted((run / "decoded" / "audio").glob("*.npy")):  # every video: whichever is read first
        with open(audio, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            samples = f.read()
        audio.write_bytes(huge_header("<i2", (10**12,)) + samples)
    embed = xdc(reference.argv("embed_audio", run))
    assert not (run / "iter_01" / "features_audio.npz").exists()
    shutil.copy(reference.run / "iter_01" / "features_audio.npz", run / "iter_01")
    features = run / "iter_01" / "features_video.npz"
    with np.load(features) as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(features, "w") as zf:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, a)
            zf.writestr(f"{name}.npy", huge_header("<f4", (10**6, 10**6)) + a.tobytes() if name == "features"
                        else buf.getvalue())
    (run / "iter_01" / "clusters.npz").unlink()
    kmeans = xdc(reference.argv("kmeans", run))
    TALLY["hostile.injected"] += 2
    for outcome, path in ((embed, run / "decoded" / "audio"), (kmeans, features)):
        assert outcome.code == 2, outcome.log[-3000:]
        assert str(path) in outcome.log and "is not" in outcome.log and "Traceback" not in outcome.log, outcome.log[-3000:]
        TALLY["hostile.survived"] += 1
    assert not (run / "iter_01" / "clusters.npz").exists()
