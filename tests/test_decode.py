"""`xdc decode` end to end: real and synthetic videos, bad rows, quarantine, resume."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

from conftest import make_indexed_video
from xdc_cli.main import main
from xdc_core.config import Config, DataConfig, DecodeConfig, load_config
from xdc_core.decode import _run_pool, decode_dataset, decode_video
from xdc_core.manifest import ManifestError, read_manifest
from xdc_core.media import MediaFile
from xdc_core.media import file as media_file
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


# -- bounded memory: the audio track is streamed to its .npy (issue 13) -------------------------


def whole_track_npy(path: Path, rate: int) -> bytes:
    """The audio file as ``decode_video`` wrote it before streaming: the whole track decoded,
    resampled in one libswresample call per run of same-format frames, converted and np.save'd.
    An independent copy of that algorithm, to hold the streamed file to its bytes."""
    import av

    with MediaFile(path) as m:
        a, container, vstart = m.require_audio(), m._container, m._vstart or 0.0
        container.seek(a.start_time or 0, stream=a, backward=True, any_frame=False)
        runs: list[tuple[tuple, list[np.ndarray]]] = []
        t0 = None
        for frame in container.decode(a):
            if t0 is None:
                t0 = frame.time
            kind = (frame.format.name, frame.layout.name, frame.sample_rate)
            if not runs or runs[-1][0] != kind:
                runs.append((kind, []))
            runs[-1][1].append(frame.to_ndarray())
        parts = []
        for (fmt, layout, src_rate), arrays in runs:
            frame = av.AudioFrame.from_ndarray(np.concatenate(arrays, axis=1), format=fmt, layout=layout)
            frame.sample_rate = src_rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts += [f.to_ndarray()[0] for f in resampler.resample(frame) + resampler.resample(None)]
    samples = np.concatenate(parts)
    offset = round((vstart - t0) * rate)
    samples = np.concatenate([np.zeros(-offset, np.float32), samples]) if offset < 0 else samples[offset:]
    buf = io.BytesIO()
    np.save(buf, np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16))
    return buf.getvalue()


def make_stereo_video(
    path: Path, seconds: float, audio_rate: int = 48000, fps: int = 2, audio_start: float = 0.0, video_start: float = 0.0
) -> Path:
    """A tiny-picture mp4 with 48 kHz stereo AAC, interleaved as real files are: the video runs
    from ``video_start`` to ``seconds``, the audio from ``audio_start`` to ``seconds``."""
    import av

    with av.open(str(path), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        aus = out.add_stream("aac", rate=audio_rate, layout="stereo")
        first, last = round(video_start * fps), round(seconds * fps)
        pts = round(audio_start * audio_rate)
        for i in range(first, last):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), (7 * i) % 256, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(f))
            while pts < (i + 1) * audio_rate // fps:  # the audio up to the end of this frame
                t = (pts + np.arange(1024)) / audio_rate
                wave = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 97 * t)]).astype(np.float32)
                af = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = audio_rate, pts, Fraction(1, audio_rate)
                out.mux(aus.encode(af))
                pts += 1024
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    return path


@pytest.fixture(scope="module")
def stereo_clips(tmp_path_factory) -> dict[str, Path]:
    """48 kHz stereo, longer than two resampling batches (AUDIO_BATCH_SAMPLES, about 5.5 s): with
    aligned streams, with the audio starting 0.7 s after the video (the file's audio then begins
    with silence), and with the video starting 0.4 s after the audio (its first 0.4 s is dropped)."""
    root = tmp_path_factory.mktemp("stereo")
    return {
        "stereo_12s": make_stereo_video(root / "stereo_12s.mp4", 12.0),
        "late_audio": make_stereo_video(root / "late_audio.mp4", 8.0, audio_start=0.7),
        "late_video": make_stereo_video(root / "late_video.mp4", 8.0, video_start=0.4),
    }


@pytest.mark.parametrize("batch", [None, 3001], ids=["default-batches", "tiny-batches"])
@pytest.mark.parametrize("clip", ["nasa_13013.mp4", "mm_test.avi", "stereo_12s", "late_audio", "late_video"])
def test_streamed_audio_file_is_byte_identical_to_the_whole_track_one(tmp_path, request, monkeypatch, clip, batch):
    """AAC 16 kHz stereo, MP3 44.1 kHz stereo, AAC 48 kHz stereo (streams offset either way): the
    same .npy bytes as before, whatever the batch size (tiny batches cut the track at many places,
    mid-frame included, and spread the leading silence or the dropped samples over several chunks)."""
    if batch is not None:
        monkeypatch.setattr(media_file, "AUDIO_BATCH_SAMPLES", batch)
    if clip.endswith((".mp4", ".avi")):
        src = request.getfixturevalue("real_clips") / clip
    else:
        src = request.getfixturevalue("stereo_clips")[clip]
    data = DataConfig(short_side=32, crop_size=32)
    info = decode_video(str(src), tmp_path / "v.mp4", tmp_path / "a.npy", data, DecodeConfig())
    got = (tmp_path / "a.npy").read_bytes()
    assert got == whole_track_npy(src, data.audio_rate)
    assert info["audio_samples"] == len(np.load(tmp_path / "a.npy")) > 2 * data.audio_rate
    # The in-memory reader gives the same samples as the chunks (a file each: a second read of one
    # open file can differ near its start, as the decoder is not reset by the seek back).
    with MediaFile(src) as m:
        whole = m.audio(0.0, None, data.audio_rate)
    with MediaFile(src) as m:
        assert np.array_equal(whole, np.concatenate(list(m.iter_audio(data.audio_rate))))


def test_decode_memory_does_not_hold_the_whole_audio_track(tmp_path):
    """Peak Python/numpy allocation while decoding 90 s of 48 kHz stereo stays a small fraction of
    the decoded track (34.6 MB as float32): the old whole-track decode held it several times over."""
    src = make_stereo_video(tmp_path / "long.mp4", 90.0)
    track_bytes = 90 * 48000 * 2 * 4
    data = DataConfig(short_side=32, crop_size=32)
    tracemalloc.start()
    try:
        info = decode_video(str(src), tmp_path / "v.mp4", tmp_path / "a.npy", data, DecodeConfig())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["audio_samples"] == pytest.approx(90 * data.audio_rate, abs=data.audio_rate // 10)
    assert peak < track_bytes / 4, f"peak {peak / 2**20:.1f} MB"
