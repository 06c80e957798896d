"""The regression gate: its arithmetic, then `xdc regress --local` end to end on a miniature
UCF101-format dataset through kfp.local: an encoder trained on that data passes against a
baseline measured from it, the random-init encoder fails the same gate, and bad input exits 2."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import xdc

from xdc_core.config import build_config
from xdc_core.errors import InputError
from xdc_core.regression import allowed_drop, compare, load_baseline, markdown, measure_baseline

# -- the arithmetic ----------------------------------------------------------------------------------


def test_allowed_drop_is_wider_than_the_seed_spread_and_two_test_videos():
    assert allowed_drop([0.70, 0.72, 0.74], 40) == pytest.approx(0.06)  # 3 x std 0.02
    assert allowed_drop([0.80, 0.80, 0.80], 40) == pytest.approx(0.05)  # no spread: two videos of 40
    values = [0.61, 0.70, 0.66]
    assert allowed_drop(values, 1000) > max(values) - min(values)


def test_measured_baseline_loads_and_gates(tmp_path):
    runs = {0: {"video_probe_top1": 0.70, "audio_probe_top1": 0.9}, 1: {"video_probe_top1": 0.74,
            "audio_probe_top1": 0.9}, 2: {"video_probe_top1": 0.72, "audio_probe_top1": 0.9}}
    path = tmp_path / "b.json"
    path.write_text(json.dumps(measure_baseline(runs, 50, {"manifest": "m.csv"})))
    baseline = load_baseline(path)
    assert baseline["metrics"]["video_probe_top1"]["value"] == pytest.approx(0.72)
    ok = compare(baseline, {"video_probe_top1": 0.67, "audio_probe_top1": 0.87})
    assert [v.passed for v in ok] == [True, True]  # drops of 0.05 and 0.03, within 0.06 and 0.04
    bad = compare(baseline, {"video_probe_top1": 0.60, "audio_probe_top1": 0.95})
    assert [v.passed for v in bad] == [False, True]
    assert "| video_probe_top1 | 0.7200 | 0.6000 | -0.1200 | **FAIL** (drop > 0.060) |" in markdown(bad)
    with pytest.raises(InputError, match=r"did not produce the baseline's metrics \['audio_probe_top1'\]"):
        compare(baseline, {"video_probe_top1": 0.72})


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.pop("format"), "not a xdc-regression-baseline/1 file"),
    (lambda b: b["metrics"]["video_probe_top1"].update(allowed_drop=0.01), "wider than their range"),
    (lambda b: b["metrics"]["video_probe_top1"].pop("value"), "lacks a number for 'value'"),
])
def test_malformed_baselines_are_refused(tmp_path, edit, message):
    b = measure_baseline({0: {"video_probe_top1": 0.7}, 1: {"video_probe_top1": 0.75}}, 40, {}, ["video_probe_top1"])
    edit(b)
    (tmp_path / "b.json").write_text(json.dumps(b))
    with pytest.raises(InputError, match=message):
        load_baseline(tmp_path / "b.json")
    with pytest.raises(InputError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")


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


@pytest.fixture(scope="module")
def gate(tmp_path_factory) -> dict[str, Path]:
    """A miniature UCF101 split 1, its manifest, an encoder pair trained on it (class labels as
    targets: a clearly better encoder) and the random-init pair."""
    from xdc_core.dataset import ClipDataset
    from xdc_core.decode import decode_dataset
    from xdc_core.sample_data import SampleSpec, make_sample_dataset
    from xdc_core.steps import init_encoder, save_encoder, train_on_targets

    root = tmp_path_factory.mktemp("gate")
    sample = make_sample_dataset(root / "sample", SampleSpec(videos=160, classes=4, seconds=2.5, width=64, height=48))
    lists = ucf101_tree(sample, root)
    manifest = root / "ucf101_split1.csv"
    r = xdc("dataset", "ucf101", "--root", str(root / "UCF-101"), "--splits", str(lists), "--split", "1",
            "--out", str(manifest))
    assert r.returncode == 0, r.stderr
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


def regress(gate: dict[str, Path], which: str, *extra: str, baseline: Path | None = None):
    return xdc("regress", "--local", "--manifest", str(gate["manifest"]), "--config", str(gate["settings"]),
               "--video-encoder", str(gate[f"{which}_video"]), "--audio-encoder", str(gate[f"{which}_audio"]),
               "--baseline", str(baseline or gate["root"] / "baseline.json"), "--out", str(gate["root"] / "work"),
               *extra)


@pytest.mark.integration
def test_gate_passes_the_trained_encoder_and_catches_the_random_one(gate, tmp_path, monkeypatch):
    r = regress(gate, "trained", "--write-baseline", "--seeds", "0", "1", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    baseline = json.loads((gate["root"] / "baseline.json").read_text())
    assert set(baseline["metrics"]) == {"video_probe_top1", "audio_probe_top1"}
    assert all(m["seeds"] == [0, 1, 2] and m["allowed_drop"] > max(m["values"]) - min(m["values"])
               for m in baseline["metrics"].values())

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    r = regress(gate, "trained", "--report", str(tmp_path / "pass.json"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((tmp_path / "pass.json").read_text())["passed"] is True
    assert "## Regression gate: passed" in summary.read_text()

    r = regress(gate, "random", "--report", str(tmp_path / "fail.json"))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "fail.json").read_text())
    assert report["passed"] is False and not any(m["passed"] for m in report["metrics"])
    assert "**FAIL**" in r.stdout and "## Regression gate: FAILED" in summary.read_text()


@pytest.mark.integration
def test_gate_refuses_unusable_input(gate, tmp_path):
    base = measure_baseline({0: {"video_probe_top1": 0.7, "video_probe_top5": 0.9},
                             1: {"video_probe_top1": 0.75, "video_probe_top5": 0.9}}, 40, {},
                            ["video_probe_top1", "video_probe_top5"])
    (tmp_path / "b.json").write_text(json.dumps(base))
    r = regress(gate, "trained", baseline=tmp_path / "b.json")  # a metric the pipeline does not produce
    assert r.returncode == 2 and "did not produce the baseline's metrics ['video_probe_top5']" in r.stderr
    r = xdc("regress", "--local", "--manifest", str(gate["manifest"]), "--video-encoder", str(tmp_path / "no.pt"),
            "--baseline", str(tmp_path / "b.json"))
    assert r.returncode == 2 and f"--video-encoder {tmp_path / 'no.pt'}: no such checkpoint" in r.stderr
    r = xdc("regress", "--host", "http://127.0.0.1:9", "--manifest", "s3://b/m.csv", "--video-encoder",
            str(gate["trained_video"]), "--audio-encoder", str(gate["trained_audio"]), "--baseline",
            str(tmp_path / "b.json"))
    assert r.returncode == 2 and "cannot reach the Kubeflow Pipelines API at http://127.0.0.1:9" in r.stderr
