"""The `xdc` console script, through a real subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path


def xdc(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("xdc") or str(Path(sys.executable).parent / "xdc")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_help_lists_every_command():
    out = xdc("--help")
    assert out.returncode == 0
    for command in ("sample-data", "decode", "probe", "config"):
        assert command in out.stdout


def test_sample_data_then_decode(tmp_path):
    r = xdc("sample-data", "--out", str(tmp_path / "s"), "--videos", "4", "--classes", "2")
    assert r.returncode == 0, r.stderr
    r = xdc("decode", "--manifest", str(tmp_path / "s" / "manifest.csv"), "--out", str(tmp_path / "d"), "--quiet",
            "--config", str(Path(__file__).parents[1] / "xdc_core" / "presets" / "cpu-demo.yaml"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert (summary["accepted"], summary["quarantined"]) == (4, 0)
    assert summary["labels"] == ["c0", "c1"]


def test_probe_prints_streams_and_fails_on_bad_file(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    r = xdc("probe", str(tmp_path / "x.mp4"))
    assert r.returncode == 1 and "x.mp4: cannot open as a media container" in r.stderr
