"""Decoding benchmarks (issue: foundation). Writes a JSON file and prints a Markdown table.

1. Random-clip read: 8 frames at 30 fps + the aligned 2 s of audio + its log-mel, at a random
   time of a 10 s 320x240 H.264/AAC clip. Our path (``MediaFile.video_clip`` + ``audio`` +
   ``log_mel``: resize, crop, resample, mel) vs the bare PyAV library doing the same seek and
   decode (frames to RGB at native size, audio frames to arrays), interleaved in one run.
2. Loader: the same random-clip read through ``ClipDataset`` on the decoded dataset (short GOP,
   audio as PCM array) vs on the raw file — the reason ``xdc decode`` normalises videos.
3. ``xdc decode`` throughput in videos/s with 2 workers on the sample dataset (the CLI, wall time
   including start-up).

Usage: python bench/decode_bench.py --out bench/results/decode.json [--reads 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from xdc_core.config import Config, DataConfig
from xdc_core.dataset import ClipDataset
from xdc_core.decode import decode_dataset
from xdc_core.media import MediaFile
from xdc_core.media.logmel import log_mel
from xdc_core.sample_data import SampleSpec, _frames, _sound, make_sample_dataset, write_video

RAW_GOP = 250  # x264's default keyframe interval, typical of downloaded videos


def make_clip(path: Path) -> None:
    spec = SampleSpec(seconds=10.0, width=320, height=240, fps=30, audio_rate=44100)
    rng = np.random.default_rng(0)
    write_video(path, _frames(1, spec, rng), 30, _sound(1, spec, rng), 44100, keyframe_interval=RAW_GOP)


def ours(path: Path, t: float, d: DataConfig, rng: np.random.Generator) -> None:
    with MediaFile(path) as m:
        m.video_clip(t, d.clip_frames, d.fps, d.short_side, d.crop_size, "random", rng)
        start = max(0.0, t + d.clip_seconds / 2 - d.audio_seconds / 2)
        log_mel(m.audio(start, d.audio_seconds, d.audio_rate), d.audio_rate, d.n_mels, d.mel_frames)


def bare(path: Path, t: float, d: DataConfig) -> None:
    """Plain PyAV: the same seeks and decodes, no resize/crop/resample/mel."""
    with av.open(str(path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        c.seek(int(t / vs.time_base), stream=vs)
        frames = []
        for f in c.decode(vs):
            if f.time >= t - 1e-3:
                frames.append(f.to_ndarray(format="rgb24"))
                if len(frames) == d.clip_frames:
                    break
        start = max(0.0, t + d.clip_seconds / 2 - d.audio_seconds / 2)
        c.seek(int(max(0.0, start - 0.1) / aus.time_base), stream=aus)
        chunks = []
        for f in c.decode(aus):
            chunks.append(f.to_ndarray())
            if f.time > start + d.audio_seconds:
                break


def bare_same_work(path: Path, t: float, d: DataConfig, rng: np.random.Generator) -> None:
    """Plain PyAV doing all our work inline: scale + crop, resample to 16 kHz mono, log-mel."""
    with av.open(str(path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        c.seek(int(t / vs.time_base), stream=vs)
        h = d.short_side
        w = round(vs.codec_context.width * h / vs.codec_context.height)
        y0, x0 = rng.integers(0, h - d.crop_size + 1), rng.integers(0, w - d.crop_size + 1)
        scaler = VideoReformatter()
        clip = np.empty((3, d.clip_frames, d.crop_size, d.crop_size), np.uint8)
        n = 0
        for f in c.decode(vs):
            if f.time >= t - 1e-3:
                rgb = scaler.reformat(f, width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()
                clip[:, n] = rgb[y0 : y0 + d.crop_size, x0 : x0 + d.crop_size].transpose(2, 0, 1)
                n += 1
                if n == d.clip_frames:
                    break
        start = max(0.0, t + d.clip_seconds / 2 - d.audio_seconds / 2)
        c.seek(int(max(0.0, start - 0.05) / aus.time_base), stream=aus)
        chunks, first = [], None
        for f in c.decode(aus):
            first = first or f
            chunks.append(f.to_ndarray())
            if f.time > start + d.audio_seconds:
                break
        frame = av.AudioFrame.from_ndarray(np.concatenate(chunks, axis=1), format=first.format.name, layout=first.layout.name)
        frame.sample_rate = first.sample_rate
        r = av.AudioResampler(format="flt", layout="mono", rate=d.audio_rate)
        wave = np.concatenate([x.to_ndarray()[0] for x in r.resample(frame) + r.resample(None)])
        log_mel(wave[: d.audio_samples], d.audio_rate, d.n_mels, d.mel_frames)


def timed(fn, reps: list[float]) -> list[float]:
    out = []
    for t in reps:
        t0 = time.perf_counter()
        fn(t)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/decode.json"))
    ap.add_argument("--reads", type=int, default=60)
    ap.add_argument("--videos", type=int, default=24, help="sample videos for the decode throughput")
    ap.add_argument("--work", type=Path, default=Path("bench/work"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    d = DataConfig()  # the paper's sizes
    clip = args.work / "clip.mp4"
    make_clip(clip)
    rng = np.random.default_rng(0)
    times = rng.uniform(0, 10 - d.clip_seconds - 0.1, args.reads).tolist()

    # 1. ours vs bare, interleaved in blocks so drift affects both alike.
    ours_t, bare_t, same_t = [], [], []
    for block in range(0, len(times), 10):
        part = times[block : block + 10]
        ours_t += timed(lambda t: ours(clip, t, d, rng), part)
        bare_t += timed(lambda t: bare(clip, t, d), part)
        same_t += timed(lambda t: bare_same_work(clip, t, d, rng), part)
    med_ours, med_bare, med_same = (statistics.median(x) for x in (ours_t, bare_t, same_t))

    # 2. loader: decoded dataset vs raw file, both through the training-mode read.
    manifest = args.work / "one.csv"
    manifest.write_text(f"path\n{clip.resolve()}\n")
    decoded = args.work / "decoded_clip"
    decode_dataset(manifest, decoded, Config(data=d), progress=False)
    ds = ClipDataset(decoded, d, "train")
    torch.manual_seed(0)
    loader_t = timed(lambda _t: ds[0], times)
    med_loader = statistics.median(loader_t)

    # 3. decode throughput, 2 workers, through the real CLI (a fresh process, as users run it),
    #    at the paper's sizes and at the CPU demo's.
    sample = make_sample_dataset(args.work / "sample", SampleSpec(videos=args.videos))
    throughput = {}
    for name, sets in {"paper (short side 256)": [], "cpu-demo preset (short side 40)": ["--config", "xdc_core/presets/cpu-demo.yaml"]}.items():
        out = args.work / f"decoded_{len(throughput)}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "xdc_cli.main", "decode", "--manifest", str(sample), "--out", str(out),
                        "--workers", "2", "--quiet", *sets], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        s = json.loads((out / "summary.json").read_text())
        throughput[name] = {"videos_per_s": round(s["accepted"] / wall, 2), "videos": s["accepted"],
                            "wall_s": round(wall, 2), "video_seconds_per_s": round(s["accepted_duration_s"] / wall, 2)}

    results = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "av": av.__version__,
                    "torch": torch.__version__, "torch_threads": 1},
        "clip": {"seconds": 10, "size": "320x240", "fps": 30, "codec": "h264+aac 44.1 kHz stereo", "gop": RAW_GOP},
        "random_clip_read": {
            "reads": len(times),
            "ours_median_ms": round(1000 * med_ours, 2),
            "bare_pyav_median_ms": round(1000 * med_bare, 2),
            "ratio_ours_over_bare": round(med_ours / med_bare, 3),
            "bare_pyav_same_work_median_ms": round(1000 * med_same, 2),
            "ratio_ours_over_bare_same_work": round(med_ours / med_same, 3),
            "ours_clips_per_s": round(1 / med_ours, 1),
            "bare_clips_per_s": round(1 / med_bare, 1),
            "target_ratio": 1.25,
        },
        "loader": {
            "raw_file_median_ms": round(1000 * med_ours, 2),
            "decoded_dataset_median_ms": round(1000 * med_loader, 2),
            "speedup": round(med_ours / med_loader, 2),
        },
        "decode_throughput_2_workers": throughput,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    r, lo = results["random_clip_read"], results["loader"]
    print(f"| random clip (8 frames + 2 s audio + log-mel), 10 s 320x240, GOP {RAW_GOP} | median ms | clips/s |")
    print("|---|---|---|")
    print(f"| bare PyAV seek + decode | {r['bare_pyav_median_ms']} | {r['bare_clips_per_s']} |")
    print(f"| ours (MediaFile: + resize, crop, resample, log-mel) | {r['ours_median_ms']} | {r['ours_clips_per_s']} |")
    print(f"| bare PyAV doing the same work inline (scale, crop, resample, log-mel) | {r['bare_pyav_same_work_median_ms']} | "
          f"{round(1000 / r['bare_pyav_same_work_median_ms'], 1)} |")
    print(f"| ours / bare decode-only | {r['ratio_ours_over_bare']}x | |")
    print(f"| ours / bare same work | {r['ratio_ours_over_bare_same_work']}x | (target <= 1.25x) |")
    print(f"| ClipDataset on the decoded dataset (GOP 16, PCM audio) | {lo['decoded_dataset_median_ms']} | "
          f"{round(1000 / lo['decoded_dataset_median_ms'], 1)} |")
    for name, t in throughput.items():
        print(f"| xdc decode, 2 workers, {name} | {t['videos_per_s']} videos/s | {t['video_seconds_per_s']} s of video/s |")
    print(f"results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
