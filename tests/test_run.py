"""`xdc run` end to end with tiny shapes, resume, and the settings it refuses before any work."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import TINY_SETTINGS
from xdc_cli.main import main
from xdc_core.config import build_config
from xdc_core.models import build_trunk
from xdc_core.errors import RunError
from xdc_core.layout import RunLayout
from xdc_core.run import run

XDC = [sys.executable, "-m", "xdc_cli.main"]


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_SETTINGS))
    return path


@pytest.mark.integration
def test_xdc_run_end_to_end_on_a_manifest(tiny_sample, tiny_yaml, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([*XDC, "run", "--data", str(tiny_sample), "--config", str(tiny_yaml), "--out", str(out),
                           "--method", "xdc", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert (m["method"], m["k"], m["iterations"]) == ("xdc", 3, 2)
    for modality in ("video", "audio"):  # the paired difference is the difference of the two top-1s
        delta = m["probe"][modality]["top1"] - m["baseline_random"][modality]["top1"]
        assert m["probe_vs_random"][modality]["delta"] == pytest.approx(delta, abs=1e-4)
        assert m["probe"][modality]["test_videos"] == 4
    it2 = RunLayout(out).iteration_stats(2)  # the layout the DVC stages write too
    assert set(it2["clusters"]) == {"video", "audio", "cross_modal"} and it2["clusters"]["video"]["nmi_previous"] is not None
    audio = it2["clusters"]["audio"]  # 12 pretraining videos in k=3 clusters, none empty
    assert 1 <= audio["sizes_min"] <= audio["sizes_median"] <= audio["sizes_max"] <= 10
    assert it2["train"]["video"]["stop_reason"]
    assert {p.name for p in (out / "plots").iterdir()} >= {"clusters_video.json", "loss_audio.json", "probe.json",
                                                          "curves.png"}
    assert all("<section id='audio'" in RunLayout(out).gallery(it).read_text() for it in (1, 2))
    # one log line per iteration, then the result table
    assert proc.stdout.count("iter ") >= 2 and "linear probe" in proc.stdout and "random init" in proc.stdout
    # the encoders are plain state dicts of the (slim) torchvision architectures
    build_trunk("video", 4).load_state_dict(torch.load(out / "video_encoder.pt"))
    build_trunk("audio", 4).load_state_dict(torch.load(out / "audio_encoder.pt"))

    # Rerun on the same folder: every iteration is loaded, not recomputed, and the results agree.
    again = subprocess.run([*XDC, "run", "--data", str(tiny_sample), "--config", str(tiny_yaml), "--out", str(out),
                            "--quiet"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already done") == 2
    assert json.loads((out / "metrics.json").read_text())["probe"] == m["probe"]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["sdc", "mdc", "cdc"])
def test_other_methods_run(tiny_decoded, tmp_path, method):
    settings = {**TINY_SETTINGS, "cluster": {"k": 3, "iterations": 1, "method": method}}
    m = run(tiny_decoded, tmp_path / method, build_config(settings), evaluate=False, progress=False, log=lambda _: None)
    expected = {"sdc": {"video", "audio"}, "mdc": {"video", "audio"}, "cdc": {"joint"}}[method]
    assert set(m["iteration_stats"][0]["clusters"]) == expected | {"cross_modal"} and "probe" not in m
    gallery = (tmp_path / method / "iter_01" / "gallery.html").read_text()  # a section per clustering
    assert {name for name in ("video", "audio", "joint") if f"<section id='{name}'" in gallery} == expected
    cross = m["iteration_stats"][0]["clusters"]["cross_modal"]
    assert 0 <= cross["nmi_chance"] < 1 and cross["nmi"] != cross["nmi_chance"]


def test_bad_settings_fail_before_any_work(tiny_sample, tiny_decoded, tiny_yaml, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["run", "--data", str(tiny_sample), "--config", str(tiny_yaml), "--out", str(out), "--k", "500"]) == 2
    err = capsys.readouterr().err
    assert "k=500 (cluster.k) is larger than the number of pretraining videos (12" in err
    assert not (out / "decoded").exists()  # nothing was decoded
    assert main(["run", "--config", str(tiny_yaml), "--out", str(out), "--iterations", "0"]) == 2
    assert "cluster.iterations" in capsys.readouterr().err
    assert main(["run", "--config", str(tiny_yaml), "--out", str(out), "--set", "cluster.method=dc"]) == 2
    assert "cluster.method" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse rejects an unknown --method with its usage message
        main(["run", "--out", str(out), "--method", "dc"])


def test_unlabelled_data_cannot_be_evaluated(tiny_sample, tmp_path):
    unlabelled = tmp_path / "m.csv"
    rows = tiny_sample.read_text().splitlines()[1:]
    unlabelled.write_text("path\n" + "\n".join(str(tiny_sample.parent / r.split(",")[0]) for r in rows) + "\n")
    cfg = build_config({**TINY_SETTINGS, "cluster": {"k": 3, "iterations": 1}})
    with pytest.raises(RunError, match="evaluation needs labelled videos in the train split 'train'.*--no-eval"):
        run(unlabelled, tmp_path / "o", cfg, progress=False, log=lambda _: None)
    m = run(unlabelled, tmp_path / "o", cfg, evaluate=False, progress=False, log=lambda _: None)
    assert m["videos"] == 16 and "probe" not in m  # no split column: every video is pretrained on


@pytest.mark.integration
def test_same_inputs_settings_and_seed_give_identical_runs(tiny_sample, tmp_path):
    """Two runs from the manifest (each decoding it, with pre-decoded clips and DataLoader workers):
    the same decoded bytes, encoders and metrics (bit-reproducible on one machine, CPU)."""
    settings = {**TINY_SETTINGS, "data": {**TINY_SETTINGS["data"], "clip_cache": 2},
                "train": {**TINY_SETTINGS["train"], "workers": 2}, "cluster": {"k": 3, "iterations": 1}}
    cfg = build_config(settings)
    runs = [run(tiny_sample, tmp_path / name, cfg, progress=False, log=lambda _: None) for name in ("a", "b")]
    for m in runs:
        m.pop("seconds")
    assert runs[0] == runs[1]
    a, b = tmp_path / "a", tmp_path / "b"
    for f in sorted((a / "decoded").rglob("*")):
        if f.is_file() and f.name not in ("progress.jsonl", "summary.json"):  # those two hold timings
            assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f
    for m in ("video", "audio"):
        sa = torch.load(a / f"{m}_encoder.pt", weights_only=True)
        sb = torch.load(b / f"{m}_encoder.pt", weights_only=True)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
