"""The regression gates: their arithmetic, then `xdc regress --local` end to end through kfp.local
on a miniature UCF101-format dataset. The evaluation gate is shown to test the code it gates: a
change planted in the library (a copy of xdc_core first on PYTHONPATH, which the kfp.local tasks,
plain subprocesses of `xdc regress`, import as well) fails it, and the unchanged code passes it at
a seed outside the baseline; a missing baseline is the neutral verdict; bad input exits 2. The
pretraining gate: its verdicts before any run (docs/regression.md says why no more)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from test_cli import xdc

from xdc_core.config import build_config
from xdc_core.errors import InputError
from xdc_core.regression import (
    BUDGET, Baseline, Outcome, allowed_drop, budget_of, check_budget, compare, load_baseline, markdown,
    measure_baseline,
)

XDC_CORE = Path(__file__).resolve().parents[1] / "xdc_core"

# -- the arithmetic ----------------------------------------------------------------------------------


def test_allowed_drop_is_wider_than_the_seed_spread_the_standard_error_and_two_test_videos():
    assert allowed_drop([0.70, 0.72, 0.74], 4000) == pytest.approx(0.06)  # 3 x std 0.02
    assert allowed_drop([0.70, 0.72, 0.74], 40) == pytest.approx(0.142)  # 2 x sqrt(0.72 x 0.28 / 40)
    assert allowed_drop([1.0, 1.0], 40) == pytest.approx(0.05)  # no spread, no error: two videos of 40
    # measured on the miniature UCF101 below: seeds 0 and 1 alone would allow 0.054, seed 2 then dropped 0.0875
    assert allowed_drop([0.800, 0.825], 40) > 0.0875
    values = [0.61, 0.70, 0.66]
    assert allowed_drop(values, 1000) > max(values) - min(values)


ABOUT = {"gate": "evaluation", "manifest": "m.csv", "settings": "s.yaml", "where": "kfp.local", "code": "abc",
         "date": "2026-12-05"}


def test_measured_baseline_loads_and_gates(tmp_path):
    runs = {0: {"video_probe_top1": 0.70, "audio_probe_top1": 0.9}, 1: {"video_probe_top1": 0.74,
            "audio_probe_top1": 0.9}, 2: {"video_probe_top1": 0.72, "audio_probe_top1": 0.9}}
    path = tmp_path / "b.json"
    path.write_text(measure_baseline(runs, 1000, ABOUT).model_dump_json())
    baseline = load_baseline(path, "evaluation")
    assert baseline.metrics["video_probe_top1"].value == pytest.approx(0.72)
    ok = compare(baseline, {"video_probe_top1": 0.67, "audio_probe_top1": 0.885})
    assert [v.passed for v in ok] == [True, True]  # drops of 0.05 and 0.015, within 0.06 and 0.019
    bad = compare(baseline, {"video_probe_top1": 0.60, "audio_probe_top1": 0.95})
    assert [v.passed for v in bad] == [False, True]
    assert "| video_probe_top1 | 0.7200 | 0.6000 | -0.1200 | **FAIL** (drop > 0.060) |" in markdown(bad)
    assert [v.metric for v in compare(baseline, {"video_probe_top1": 0.72}, only=["video_probe_top1"])] == \
        ["video_probe_top1"]
    with pytest.raises(InputError, match=r"did not produce the baseline's metrics \['audio_probe_top1'\]"):
        compare(baseline, {"video_probe_top1": 0.72})
    assert load_baseline(tmp_path / "nope.json", "evaluation") is None  # no baseline yet: neutral, not an error
    with pytest.raises(InputError, match="the evaluation gate's, not the pretraining gate's"):
        load_baseline(path, "pretraining")


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.pop("format"), "format: Field required"),
    (lambda b: b["metrics"]["video_probe_top1"].update(allowed_drop=0.01), "wider than the range"),
    (lambda b: b["metrics"]["video_probe_top1"].pop("value"), r"metrics.video_probe_top1.value: Field required"),
    (lambda b: b["metrics"]["video_probe_top1"].update(value=1.5), "less than or equal to 1"),
    (lambda b: b.update(gate="pretraining"), "records its budget"),
    (lambda b: b.update(extra=1), "extra: Extra inputs are not permitted"),
])
def test_malformed_baselines_are_refused_naming_the_field(tmp_path, edit, message):
    b = measure_baseline({0: {"video_probe_top1": 0.7}, 1: {"video_probe_top1": 0.75}}, 40, ABOUT,
                         ["video_probe_top1"]).model_dump()
    edit(b)
    (tmp_path / "b.json").write_text(json.dumps(b))
    with pytest.raises(InputError, match=message):
        load_baseline(tmp_path / "b.json", "evaluation")
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(InputError, match="not JSON"):
        load_baseline(tmp_path / "b.json", "evaluation")


def test_a_pretraining_baseline_holds_only_for_its_budget(tmp_path):
    cfg = build_config({"cluster": {"k": 8, "iterations": 1}})
    budget = budget_of(cfg.model_dump())
    assert set(budget) == set(BUDGET) and budget["cluster.k"] == 8
    with pytest.raises(ValidationError, match="records its budget"):
        Baseline.model_validate({**measure_baseline({0: {"video_probe_top1": 0.7}, 1: {"video_probe_top1": 0.75}},
                                                    40, ABOUT, ["video_probe_top1"]).model_dump(),
                                 "gate": "pretraining"})
    baseline = measure_baseline({0: {"video_probe_top1": 0.7}, 1: {"video_probe_top1": 0.75}}, 40,
                                {**ABOUT, "gate": "pretraining", "budget": budget}, ["video_probe_top1"])
    check_budget(baseline, budget, "b.json")
    with pytest.raises(InputError, match=r"another budget: cluster.k 8 \(now 16\)"):
        check_budget(baseline, {**budget, "cluster.k": 16}, "b.json")
    assert Outcome.NO_BASELINE not in (Outcome.PASSED, Outcome.REGRESSION, 2)  # 2: unusable input


def planted(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A copy of xdc_core with ``old`` replaced by ``new`` in ``file`` (which must hold it once):
    the folder to put first on PYTHONPATH (and run outside the repository, whose xdc_core a
    `python -m` started there finds first)."""
    root = tmp_path / "planted"
    shutil.copytree(XDC_CORE, root / "xdc_core", ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "xdc_core" / file
    text = path.read_text()
    assert text.count(old) == 1, f"{file} no longer holds the line to plant a change in: update this test"
    path.write_text(text.replace(old, new))
    return root


# -- end to end ---------------------------------------------------------------------------------------

CLASSES = ("ApplyEyeMakeup", "BandMarching", "HandStandPushups", "YoYo")
GATE_SETTINGS = {
    "data": {"short_side": 32, "crop_size": 32, "clip_frames": 4, "eval_clips": 2, "mel_frames": 20, "n_mels": 16,
             "clip_cache": 2},
    "model": {"video_width": 4, "audio_width": 4},
    "embed": {"batch_size": 32, "workers": 0},
    "train": {"epoch_size": 480, "batch_size": 16, "lr": 0.05, "warmup_epochs": 1, "total_epochs": 6,
              "decay": "cosine", "val_fraction": 0.0, "workers": 0},
    "evaluate": {"probe": {"epoch_size": 480, "batch_size": 16, "warmup_epochs": 1, "step_epochs": 2,
                           "total_epochs": 4}, "probe_lrs": [0.01, 0.1], "workers": 0},
}


def ucf101_tree(sample_manifest: Path, root: Path) -> Path:
    """The sample videos renamed and foldered as UCF101's (``Class/v_Class_gGG_cCC.avi``, test
    videos in groups 1-7 as in split 1), with classInd.txt and the split-1 lists; returns the lists' folder."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    train, test, clip = [], [], {}
    with open(sample_manifest, newline="") as f:
        for row in csv.DictReader(f):
            c = int(row["label"].removeprefix("c"))
            name = CLASSES[c]
            n = clip[name] = clip.get(name, 0) + 1
            group = (n % 7) + 1 if row["split"] == "test" else 8 + n % 17
            rel = f"{name}/v_{name}_g{group:02d}_c{n:02d}.avi"
            (root / "UCF-101" / name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample_manifest.parent / row["path"], root / "UCF-101" / rel)  # mp4 data; FFmpeg probes
            (test.append(rel) if row["split"] == "test" else train.append(f"{rel} {c + 1}"))
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\r\n" for i, c in enumerate(CLASSES, 1)))
    (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return lists


def miniature_ucf101(root: Path, spec: Any) -> Path:
    """Sample videos of ``spec`` (4 classes) as a UCF101 tree under ``root``; returns its split-1
    manifest, written by `xdc dataset ucf101` as a user's would be."""
    from xdc_core.sample_data import make_sample_dataset

    lists = ucf101_tree(make_sample_dataset(root / "sample", spec), root)
    manifest = root / "ucf101_split1.csv"
    r = xdc("dataset", "ucf101", "--root", str(root / "UCF-101"), "--splits", str(lists), "--split", "1",
            "--out", str(manifest))
    assert r.returncode == 0, r.stderr
    return manifest


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> dict[str, Path]:
    """A miniature UCF101 split 1, its manifest, an encoder pair trained on it (class labels as
    targets: a clearly better encoder) and the random-init pair."""
    from xdc_core.dataset import ClipDataset
    from xdc_core.decode import decode_dataset
    from xdc_core.sample_data import SampleSpec
    from xdc_core.steps import init_encoder, save_encoder, train_on_targets

    root = tmp_path_factory.mktemp("gate")
    manifest = miniature_ucf101(root, SampleSpec(videos=160, classes=4, seconds=2.5, width=64, height=48))
    settings = root / "settings.yaml"
    settings.write_text(yaml.safe_dump(GATE_SETTINGS))
    cfg = build_config(GATE_SETTINGS)
    decoded = root / "decoded"
    decode_dataset(manifest, decoded, cfg, progress=False)
    labels = np.asarray(ClipDataset(decoded, cfg.data, "eval", "train", ("video",), clips=1).labels)
    paths = {"settings": settings, "manifest": manifest, "root": root}
    for m in ("video", "audio"):
        train_on_targets(decoded, m, cfg, 1, [labels], None, root / f"trained_{m}.pt", None, progress=False)
        save_encoder(init_encoder(m, cfg), root / f"random_{m}.pt")
        paths |= {f"trained_{m}": root / f"trained_{m}.pt", f"random_{m}": root / f"random_{m}.pt"}
    return paths


def regress(gate: dict[str, Path], which: str, *extra: str, baseline: Path | None = None, cwd: Path | None = None):
    """The evaluation gate on the encoder pair ``which`` (trained or random), run in ``cwd``."""
    args = ["regress", "--local", "--manifest", str(gate["manifest"]), "--config", str(gate["settings"]),
            "--video-encoder", str(gate[f"{which}_video"]), "--audio-encoder", str(gate[f"{which}_audio"]),
            "--baseline", str(baseline or gate["root"] / "baseline.json"), "--out", str(gate["root"] / "work"), *extra]
    if cwd is None:
        return xdc(*args)
    exe = shutil.which("xdc") or str(Path(sys.executable).parent / "xdc")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)


# A broken resize in decode: every frame squeezed through 2x2 pixels before it is scaled to its
# size, so shape and motion (what tells the classes apart) are gone.
BROKEN_RESIZE = ("media/file.py",
                 'return self._scaler.reformat(frame, width=width, height=height, format=pix_fmt, '
                 'interpolation="BILINEAR")',
                 'return self._scaler.reformat(frame.reformat(width=2, height=2), width=width, height=height, '
                 'format=pix_fmt, interpolation="BILINEAR")')


@pytest.mark.integration
def test_evaluation_gate_passes_the_code_and_encoders_it_was_measured_with_and_catches_a_change(
        gate, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    # no baseline yet: the neutral verdict, before anything runs
    r = regress(gate, "trained", "--report", str(tmp_path / "none.json"), baseline=tmp_path / "missing.json")
    assert r.returncode == Outcome.NO_BASELINE == 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"no baseline yet ({tmp_path / 'missing.json'}): run the regression-baseline workflow" in r.stdout
    assert "## Regression gate (evaluation): no baseline yet" in summary.read_text()
    assert not (tmp_path / "none.json").exists() and not (gate["root"] / "work").exists()

    r = regress(gate, "trained", "--write-baseline", "--seeds", "0", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    baseline = json.loads((gate["root"] / "baseline.json").read_text())
    assert baseline["gate"] == "evaluation" and set(baseline["metrics"]) == {"video_probe_top1", "audio_probe_top1"}
    assert all(m["seeds"] == [0, 1] and m["allowed_drop"] > max(m["values"]) - min(m["values"])
               for m in baseline["metrics"].values())

    # the unchanged code at a seed the baseline was not measured with (a run, not a cache hit)
    r = regress(gate, "trained", "--set", "seed=2", "--report", str(tmp_path / "pass.json"))
    assert r.returncode == Outcome.PASSED, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((tmp_path / "pass.json").read_text())["outcome"] == "passed"
    assert "## Regression gate (evaluation): passed" in summary.read_text()

    r = regress(gate, "random", "--set", "seed=2", "--report", str(tmp_path / "fail.json"))  # the random init
    assert r.returncode == Outcome.REGRESSION, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "fail.json").read_text())
    verdicts = {m["metric"]: m for m in report["metrics"]}
    assert report["outcome"] == "regression" and not verdicts["video_probe_top1"]["passed"], verdicts
    assert "**FAIL**" in r.stdout and "## Regression gate (evaluation): FAILED" in summary.read_text()

    # The same encoders, the library's decode broken: the video metric falls. Run outside the
    # repository: the kfp.local tasks are `python -m` subprocesses in the caller's folder, whose
    # own xdc_core would come before PYTHONPATH's.
    monkeypatch.setenv("PYTHONPATH", str(planted(tmp_path, *BROKEN_RESIZE)))
    r = regress(gate, "trained", "--set", "seed=2", "--report", str(tmp_path / "planted.json"), cwd=tmp_path)
    assert r.returncode == Outcome.REGRESSION, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "planted.json").read_text())
    verdicts = {m["metric"]: m for m in report["metrics"]}
    assert not verdicts["video_probe_top1"]["passed"], verdicts
    assert report["code"] != json.loads((tmp_path / "pass.json").read_text())["code"]  # another code digest


@pytest.mark.integration
def test_gate_refuses_unusable_input(gate, tmp_path):
    base = measure_baseline({0: {"video_probe_top1": 0.7, "video_probe_top5": 0.9},
                             1: {"video_probe_top1": 0.75, "video_probe_top5": 0.9}}, 40, ABOUT,
                            ["video_probe_top1", "video_probe_top5"])
    (tmp_path / "b.json").write_text(base.model_dump_json())
    r = regress(gate, "trained", baseline=tmp_path / "b.json")  # a metric the pipeline does not produce
    assert r.returncode == 2 and "did not produce the baseline's metrics ['video_probe_top5']" in r.stderr
    r = xdc("regress", "--local", "--manifest", str(gate["manifest"]), "--video-encoder", str(tmp_path / "no.pt"),
            "--baseline", str(tmp_path / "b.json"))
    assert r.returncode == 2 and f"--video-encoder {tmp_path / 'no.pt'}: no such checkpoint" in r.stderr
    r = xdc("regress", "--host", "http://127.0.0.1:9", "--manifest", "s3://b/m.csv", "--video-encoder",
            str(gate["trained_video"]), "--audio-encoder", str(gate["trained_audio"]), "--baseline",
            str(tmp_path / "b.json"))
    assert r.returncode == 2 and "cannot reach the Kubeflow Pipelines API at http://127.0.0.1:9" in r.stderr
    r = xdc("regress", "--gate", "pretraining", "--local", "--manifest", str(gate["manifest"]), "--baseline",
            str(tmp_path / "b.json"))
    assert r.returncode == 2 and "is the evaluation gate's, not the pretraining gate's" in r.stderr


# -- the pretraining gate -------------------------------------------------------------------------------

# A fixed, small budget: one clustering iteration, a few short epochs per encoder.
PRETRAIN_SETTINGS = {**GATE_SETTINGS, "cluster": {"method": "xdc", "k": 8, "iterations": 1},
                     "train": {**GATE_SETTINGS["train"], "total_epochs": 4}}

# The budget of the end-to-end test: the CPU demo preset, shortened to two iterations of six
# 800-clip epochs per encoder, on a miniature UCF101 drawn from the sample generator with its
# nuisances at 0.3 (easier data, so that a short pretraining learns from its clusters). Measured
# with `xdc run` (the steps the pipeline's tasks call) on these 400 videos (100 test videos), seeds
# 0 and 1, video / audio top-1: the library's k-means 0.82 / 0.90 and 0.87 / 0.92; a k-means that
# ignores its features 0.58 / 0.74 and 0.75 / 0.82.
CPU_DEMO = yaml.safe_load((XDC_CORE / "presets" / "cpu-demo.yaml").read_text())
PRETRAIN_GATE_SETTINGS = {
    **CPU_DEMO,
    "cluster": {"method": "xdc", "k": 8, "iterations": 2},
    "train": {**CPU_DEMO["train"], "total_epochs": 6, "epoch_size": 800},
    "evaluate": {**CPU_DEMO["evaluate"], "probe_lrs": [0.004, 0.01, 0.04]},
}

# k-means that ignores its features: it clusters noise of their shape, so the pseudo-labels say
# nothing about the videos (what a broken feature path or a swapped argument would do).
BLIND_KMEANS = ("steps.py", "        x, cfg.cluster.k, seed=cfg.seed * 1000 + iteration,",
                "        np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype), cfg.cluster.k, "
                "seed=cfg.seed * 1000 + iteration,")


@pytest.fixture(scope="module")
def pretrain_gate(tmp_path_factory) -> dict[str, Path]:
    """A miniature UCF101 split 1 of 400 easier videos, its manifest and the gate's settings."""
    from xdc_core.sample_data import SampleSpec

    root = tmp_path_factory.mktemp("pretrain-gate")
    manifest = miniature_ucf101(root, SampleSpec(videos=400, classes=4, seconds=2.5, width=64, height=48,
                                                 nuisance=0.3))
    settings = root / "pretraining.yaml"
    settings.write_text(yaml.safe_dump(PRETRAIN_GATE_SETTINGS))
    return {"root": root, "manifest": manifest, "settings": settings}


@pytest.mark.integration
def test_pretraining_gate_passes_the_code_it_was_measured_with_and_catches_a_blind_kmeans(
        pretrain_gate, tmp_path, monkeypatch):
    """The baseline over seeds 0 and 1; at seed 2 the unchanged code passes, and the same run with
    the library's k-means made blind fails: the clustering change shows in the top-1 it leaves."""
    root = pretrain_gate["root"]
    baseline = root / "pretraining.json"
    exe = shutil.which("xdc") or str(Path(sys.executable).parent / "xdc")

    def gate(*extra: str, cwd: Path | None = None):
        return subprocess.run([exe, "regress", "--gate", "pretraining", "--local", "--manifest",
                               str(pretrain_gate["manifest"]), "--config", str(pretrain_gate["settings"]),
                               "--baseline", str(baseline), "--out", str(root / "work"), *extra],
                              capture_output=True, text=True, cwd=cwd, timeout=3000, check=False)

    r = gate("--write-baseline", "--seeds", "0", "1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    measured = json.loads(baseline.read_text())
    assert measured["gate"] == "pretraining" and measured["budget"]["cluster.iterations"] == 2
    r = gate("--set", "seed=2", "--report", str(tmp_path / "pass.json"))
    assert r.returncode == Outcome.PASSED, r.stdout[-3000:] + r.stderr[-3000:]
    # the same run, the library's k-means blind; started outside the repository (see the evaluation gate)
    monkeypatch.setenv("PYTHONPATH", str(planted(tmp_path, *BLIND_KMEANS)))
    r = gate("--set", "seed=2", "--report", str(tmp_path / "planted.json"), cwd=tmp_path)
    assert r.returncode == Outcome.REGRESSION, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "planted.json").read_text())
    assert report["outcome"] == "regression" and not all(m["passed"] for m in report["metrics"]), report


def test_pretraining_gate_is_neutral_without_a_baseline_and_refuses_another_budget(tmp_path):
    """Both decided before any run (the test above runs the gate)."""
    manifest = "s3://datasets/ucf101/ucf101_split1.csv"  # never read: nothing runs
    settings = tmp_path / "pretraining.yaml"
    settings.write_text(yaml.safe_dump(PRETRAIN_SETTINGS))
    path = tmp_path / "pretraining.json"

    def pretraining_gate(*extra: str):
        return xdc("regress", "--gate", "pretraining", "--local", "--manifest", manifest, "--config", str(settings),
                   "--baseline", str(path), "--out", str(tmp_path / "work"), *extra)

    r = pretraining_gate()
    assert r.returncode == Outcome.NO_BASELINE, r.stdout + r.stderr[-2000:]
    assert "no baseline yet" in r.stdout and "gate pretraining" in r.stdout
    budget = budget_of(build_config(PRETRAIN_SETTINGS).model_dump())
    path.write_text(measure_baseline({0: {"video_probe_top1": 0.5, "audio_probe_top1": 0.4},
                                      1: {"video_probe_top1": 0.55, "audio_probe_top1": 0.45}}, 40,
                                     {**ABOUT, "gate": "pretraining", "budget": budget}).model_dump_json())
    r = pretraining_gate("--set", "train.total_epochs=2")
    assert r.returncode == 2 and "another budget: train.total_epochs 4 (now 2)" in r.stderr, r.stderr
    r = pretraining_gate("--video-encoder", "v.pt")
    assert r.returncode == 2 and "pretrains its own encoders" in r.stderr, r.stderr
    assert not (tmp_path / "work").exists()  # nothing ran


def test_kfp_sign_in_reads_the_token_file_and_names_a_missing_one(tmp_path, monkeypatch):
    """`--host` signs in with the service-account token file of KF_PIPELINES_SA_TOKEN_PATH (kfp's
    own credentials class), and says so when the file is not there."""
    from xdc_kfp.runner import PipelineError, _connect

    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "nope"))
    with pytest.raises(PipelineError, match=r"KF_PIPELINES_SA_TOKEN_PATH=.*nope: no such file"):
        _connect("http://127.0.0.1:9", "xdc")
    (tmp_path / "token").write_text("t0ken")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
    with pytest.raises(PipelineError, match="cannot reach the Kubeflow Pipelines API at http://127.0.0.1:9"):
        _connect("http://127.0.0.1:9", "xdc")


def test_kfp_sign_in_sends_the_token_and_the_namespace(tmp_path, monkeypatch):
    """Against a stand-in KFP API on loopback that records what it is asked: the experiments list
    (the connection check) carries `Authorization: Bearer <the file's token>` and the Profile namespace."""
    import http.server
    import threading

    from xdc_kfp.runner import _connect

    seen = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append((self.path, self.headers.get("Authorization")))
            body = b'{"experiments": [], "total_size": 0}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "token").write_text("t0ken")
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
        monkeypatch.setenv("KFP_NAMESPACE", "xdc")
        _connect(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    experiments = [(path, auth) for path, auth in seen if "/experiments" in path]
    assert experiments, seen
    path, auth = experiments[-1]
    assert auth == "Bearer t0ken" and "namespace=xdc" in path, (path, auth)
