"""`xdc decode` end to end: real and synthetic videos, bad rows, quarantine, resume."""

import csv
import json
import os
import shutil
import subprocess
import sys
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from conftest import make_indexed_video
from xdc_cli.main import main
from xdc_core.config import Config, DataConfig, DecodeConfig, load_config
from xdc_core.decode import _run_pool, decode_dataset
from xdc_core.manifest import ManifestError, read_manifest
from xdc_core.sample_data import SampleSpec, make_sample_dataset

XDC = [sys.executable, "-m", "xdc_cli.main"]


def quarantine(out: Path) -> dict[str, str]:
    with open(out / "quarantine.csv", newline="") as f:
        return {r["path"]: r["reason"] for r in csv.DictReader(f)}


def tiny_config(data: DataConfig) -> Config:
    return Config(data=data, decode=DecodeConfig(workers=2))


def test_shared_real_clips_plus_corrupt_and_missing(tmp_path, real_clips):
    """The issue's acceptance case: 2 accepted, 4 quarantined with specific reasons, exit 0."""
    (tmp_path / "corrupt.mp4").write_bytes(os.urandom(4096))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,split\n"
        + "".join(f"{real_clips / n},x,train\n" for n in ("nasa_13013.mp4", "mm_test.avi", "mm_test.mp4", "h265_video.mp4"))
        + "corrupt.mp4,x,train\nmissing/clip.mp4,x,train\n"
    )
    out = tmp_path / "decoded"
    proc = subprocess.run(
        [*XDC, "decode", "--manifest", str(manifest), "--out", str(out), "--quiet", "--set", "data.short_side=64",
         "--set", "data.crop_size=64"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["accepted"], summary["quarantined"], summary["total"]) == (2, 4, 6)
    assert summary["accepted_duration_s"] == pytest.approx(13.03 + 6.6, abs=0.1)
    assert summary["reasons"] == {"file_not_found": 1, "no_audio_stream": 2, "unreadable": 1}
    q = quarantine(out)
    assert q[str(real_clips / "mm_test.mp4")] == "no audio stream"
    assert q[str(real_clips / "h265_video.mp4")].startswith("no audio stream; too short: 1.00 s")
    assert q["corrupt.mp4"].startswith("cannot open as a media container")
    assert q["missing/clip.mp4"] == f"file not found (looked for {tmp_path / 'missing' / 'clip.mp4'})"
    with open(out / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in index] == ["nasa_13013.mp4", "mm_test.avi"]
    assert [r["index"] for r in index] == ["0", "1"]
    for r in index:  # normalised files: target fps, short side 64, 16 kHz mono audio
        assert int(r["height"]) == 64 and int(r["frames"]) == pytest.approx(float(r["duration"]) * 30, abs=1)
        pcm = np.load(out / "audio" / f"{r['id']}.npy")
        assert pcm.dtype == np.int16 and abs(len(pcm) / 16000 - float(r["duration"])) < 0.1
    assert "accepted" in proc.stdout and "quarantined" in proc.stdout


def test_mixed_manifest_counts_and_resume(tmp_path, tiny_data):
    good = [make_indexed_video(tmp_path / f"good{i}.mp4", frames=25, fps=10) for i in range(3)]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.mp4").write_text("not a video")
    make_indexed_video(tmp_path / "silent.mp4", frames=25, fps=10, audio_rate=None)
    rows = [*(g.name for g in good), "empty.mp4", "notes.mp4", "silent.mp4", "gone.mp4"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"

    s1 = decode_dataset(manifest, out, tiny_config(tiny_data), progress=False)
    assert (s1["accepted"], s1["quarantined"], s1["decoded_now"], s1["resumed"]) == (3, 4, 7, 0)
    assert s1["reasons"] == {"empty_file": 1, "file_not_found": 1, "no_audio_stream": 1, "unreadable": 1}
    assert isinstance(s1["accepted"], int) and s1["videos_per_s"] > 0

    # Rerun: everything already done is skipped, except the missing file, which is retried.
    s2 = decode_dataset(manifest, out, tiny_config(tiny_data), progress=False)
    assert (s2["accepted"], s2["quarantined"], s2["decoded_now"], s2["resumed"]) == (3, 4, 1, 6)

    # A source that changed, or whose output vanished, is decoded again; the missing one now exists.
    make_indexed_video(good[0], frames=30, fps=10)
    (out / "audio" / (csv_ids(out)[1] + ".npy")).unlink()
    shutil.copy(good[2], tmp_path / "gone.mp4")
    s3 = decode_dataset(manifest, out, tiny_config(tiny_data), progress=False)
    assert (s3["accepted"], s3["quarantined"], s3["decoded_now"]) == (4, 3, 3)


def csv_ids(out: Path) -> list[str]:
    with open(out / "index.csv", newline="") as f:
        return [r["id"] for r in csv.DictReader(f)]


def test_resume_with_other_settings_is_refused(tmp_path, tiny_data):
    make_indexed_video(tmp_path / "v.mp4", frames=25, fps=10)
    (tmp_path / "m.csv").write_text("path\nv.mp4\n")
    decode_dataset(tmp_path / "m.csv", tmp_path / "out", tiny_config(tiny_data), progress=False)
    rc = main(["decode", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2


def test_video_shorter_than_the_audio_window_is_quarantined(tmp_path):
    make_indexed_video(tmp_path / "short.mp4", frames=15, fps=10)  # 1.5 s < 2 s window
    (tmp_path / "m.csv").write_text("path\nshort.mp4\n")
    data = DataConfig(short_side=32, crop_size=32)
    s = decode_dataset(tmp_path / "m.csv", tmp_path / "out", tiny_config(data), progress=False)
    assert s["reasons"] == {"too_short": 1}
    assert "too short: 1.50 s, need at least 2.00 s" in quarantine(tmp_path / "out")["short.mp4"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\na.mp4,x,extra\n", "line 2: expected 2 fields"),
        ("file,label\na.mp4,x\n", "line 1: header must name 'path'"),
        ("path\n", "no rows after the header"),
        ("path,label\na.mp4,x\n\n,y\n", "line 4: empty path"),
        ("path\na.mp4\nb.mp4\na.mp4\n", "line 4: a.mp4 is listed twice (first on line 2)"),
    ],
)
def test_malformed_manifest_names_the_line(tmp_path, text, message):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(ManifestError) as err:
        read_manifest(m)
    assert message in str(err.value) and "m.csv" in str(err.value)


def test_unusable_manifest_exits_non_zero(tmp_path, capsys):
    assert main(["decode", "--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("path,label\nx.mp4\n")
    assert main(["decode", "--manifest", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err


class CrashOn:
    """A task that kills its worker process on one path, like a crash inside FFmpeg would."""

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def __call__(self, path: str) -> dict:
        if path == self.bad:
            os._exit(11)
        return {"resolved": path, "status": "accepted"}


def test_a_crashing_worker_costs_only_its_file():
    done: list[dict] = []
    _run_pool(["a", "b", "crash", "c", "d"], 2, CrashOn("crash"), done.append)
    by_path = {d["resolved"]: d for d in done}
    assert sorted(by_path) == ["a", "b", "c", "crash", "d"]
    assert by_path["crash"]["status"] == "quarantined" and by_path["crash"]["code"] == "worker_crashed"
    assert all(by_path[p]["status"] == "accepted" for p in "abcd")


def test_concurrent_decodes_are_byte_identical(tmp_path):
    """Two decodes of one manifest at the same time write the same bytes (x264 included, see media/x264.py)."""
    manifest = make_sample_dataset(tmp_path / "src", SampleSpec(videos=8, classes=2, seconds=2.0))
    config = load_config(Path(__file__).parents[1] / "xdc_core" / "presets" / "cpu-demo.yaml")
    outs = [tmp_path / "a", tmp_path / "b"]
    # Separate processes (each with its own worker pool), as two `xdc decode` runs would be.
    ctx = get_context("spawn")
    procs = [ctx.Process(target=decode_dataset, args=(manifest, out, config, False)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0

    def files(out: Path) -> dict[str, bytes]:
        paths = [*sorted(out.glob("video/*.mp4")), *sorted(out.glob("audio/*.npy")), out / "index.csv"]
        return {str(p.relative_to(out)): p.read_bytes() for p in paths}

    a, b = (files(out) for out in outs)
    assert len(a) == 2 * 8 + 1 and sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []
