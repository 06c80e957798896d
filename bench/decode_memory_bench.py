"""Peak memory of the decode step on one long video (issue 13, item 3: bounded decode memory).

For each duration, a synthetic 320x240 H.264 + AAC (48 kHz stereo) mp4 is written under
``--work`` (a moving stripe pattern and two tones, audio and video interleaved as in a real
file; a low source frame rate keeps generating it fast, and the decode resamples to 30 fps
anyway). Each video is then decoded by the real worker task (``xdc_core.decode._decode_task``,
which calls ``decode_video``) with the default settings, in a fresh Python process per run, and
that process reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) and the RSS it had
after its imports, before decoding.

"before" runs the xdc_core of ``--baseline-rev`` (extracted with ``git archive`` into a temporary
folder and put first on PYTHONPATH, so the working tree is not touched); "after" runs the
working tree's. Both decodes of a video must write byte-identical files: the bench compares
their SHA-256 and says so. Reports the peak per duration and the slope (MB per minute of video,
a least-squares line through the peaks).

Usage: python bench/decode_memory_bench.py --out bench/results/decode_memory.json
           [--minutes 2 10 30] [--after-only-minutes 60] [--baseline-rev 444d342]

Generated videos are kept in ``--work`` and reused. The defaults take about 6 minutes on 2 cores
and need about 4.5 GB of free memory for the old code's 30-minute decode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 320, 240
SOURCE_FPS = 5  # low: generating is fast; the decode still writes 30 fps (each frame repeated)
AUDIO_RATE = 48000
AAC_FRAME = 1024  # samples per AAC frame


def make_long_video(path: Path, minutes: float) -> None:
    """A ``minutes``-long 320x240 H.264 + 48 kHz stereo AAC mp4, interleaved like a real file."""
    import av

    period = 64
    x = np.arange(WIDTH + period)
    y = np.arange(HEIGHT)[:, None]
    # Diagonal stripes wider than the frame: frame i is a window shifted by i pixels (motion).
    base = (128 + 100 * np.sin(2 * np.pi * (x[None, :] + y) / period)).astype(np.uint8)
    wide = np.stack([base, np.roll(base, period // 3, axis=1), 255 - base], axis=-1)
    n_frames = round(minutes * 60 * SOURCE_FPS)
    n_samples = n_frames * AUDIO_RATE // SOURCE_FPS
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(SOURCE_FPS))
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}  # keyint: x264's default (250), as downloads have
        aus = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        aus.bit_rate = 128_000
        written = 0
        for i in range(n_frames):
            shift = (3 * i) % period
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(wide[:, shift : shift + WIDTH]), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, SOURCE_FPS)
            out.mux(vs.encode(f))
            # The audio up to the end of this frame, so the muxer never buffers much of either.
            until = min(n_samples, (i + 1) * AUDIO_RATE // SOURCE_FPS)
            while written + AAC_FRAME <= until or (i == n_frames - 1 and written < n_samples):
                t = (written + np.arange(AAC_FRAME)) / AUDIO_RATE
                amp = 0.3 + 0.2 * np.sin(2 * np.pi * 0.25 * t)  # slow tremolo: not a constant signal
                wave = np.stack([amp * np.sin(2 * np.pi * 440 * t), amp * np.sin(2 * np.pi * 660 * t)])
                af = av.AudioFrame.from_ndarray(wave.astype(np.float32), format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = AUDIO_RATE, written, Fraction(1, AUDIO_RATE)
                out.mux(aus.encode(af))
                written += AAC_FRAME
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    tmp.rename(path)


def child(src: str, out_dir: str) -> int:
    """One decode in this fresh process; print its peak RSS and what it wrote as JSON."""
    import xdc_core
    from xdc_core.config import DataConfig, DecodeConfig
    from xdc_core.decode import _decode_task

    def maxrss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    out = Path(out_dir)
    (out / "video").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    imported = maxrss_mb()
    t0 = time.perf_counter()
    rec = _decode_task(src, out_dir, DataConfig(), DecodeConfig())
    wall = time.perf_counter() - t0
    peak = maxrss_mb()
    hashes = {}
    for kind, ext in (("video", "mp4"), ("audio", "npy")):
        p = out / kind / f"{rec['id']}.{ext}"
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            hashes[kind] = h.hexdigest()
            p.unlink()  # long outputs are large: keep only their hash
    print(json.dumps({
        "peak_rss_mb": round(peak, 1),
        "rss_after_imports_mb": round(imported, 1),
        "decode_wall_s": round(wall, 1),
        "status": rec["status"],
        "reason": rec.get("reason"),
        "frames": rec.get("frames"),
        "audio_samples": rec.get("audio_samples"),
        "sha256": hashes,
        "xdc_core": str(Path(xdc_core.__file__).parent),
    }))
    return 0


def run_child(src: Path, out_dir: Path, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, str(REPO)) if p)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(src), str(out_dir)],
        env=env, capture_output=True, text=True, cwd=REPO, check=False,  # the error is raised below, with stderr
    )
    if proc.returncode != 0:
        raise RuntimeError(f"decode of {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(points: dict[float, float]) -> float | None:
    """MB per minute of video: least-squares line through (minutes, peak MB)."""
    if len(points) < 2:
        return None
    xs, ys = zip(*sorted(points.items()), strict=True)
    return round(float(np.polyfit(xs, ys, 1)[0]), 2)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    import av

    return {"cpu": cpu, "cpus": os.cpu_count(), "system": f"{platform.system()} {platform.machine()}",
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(), "av": av.__version__, "numpy": np.__version__}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/decode_memory.json")
    ap.add_argument("--work", type=Path, default=REPO / "bench/work/decode_memory")
    ap.add_argument("--minutes", type=float, nargs="+", default=[2, 10, 30], help="durations decoded before and after")
    ap.add_argument("--after-only-minutes", type=float, nargs="*", default=[60],
                    help="longer durations decoded only by the new code (the old one would need GBs)")
    ap.add_argument("--baseline-rev", default="444d342", help="the commit whose xdc_core is 'before'; '' to skip")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    # "after" is the working tree: say so when its xdc_core differs from the commit.
    changed = subprocess.run(["git", "status", "--porcelain", "--", "xdc_core"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split("\n")
    changed = sorted(line[3:] for line in changed if line.strip())
    after_code = f"working tree at {commit}" + (f", uncommitted: {', '.join(changed)}" if changed else "")

    with tempfile.TemporaryDirectory(prefix="xdc-baseline-") as base:
        if args.baseline_rev:
            archive = subprocess.run(["git", "archive", args.baseline_rev, "xdc_core"], cwd=REPO, capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        impls = {"after": None} | ({"before": base} if args.baseline_rev else {})
        runs: list[dict] = []
        for minutes in sorted({*args.minutes, *args.after_only_minutes}):
            src = args.work / f"long_{minutes:g}min.mp4"
            gen_s = 0.0
            if not src.is_file():  # reused between runs: the same bytes every time
                t0 = time.perf_counter()
                make_long_video(src, minutes)
                gen_s = time.perf_counter() - t0
            for name, path in impls.items():
                if name == "before" and minutes not in args.minutes:
                    continue
                r = run_child(src, args.work / f"out_{name}", path)
                r |= {"impl": name, "minutes": minutes, "source_mb": round(src.stat().st_size / 2**20, 1)}
                if gen_s:
                    r["generate_s"] = round(gen_s, 1)
                expected = f"{base}/xdc_core" if path else str(REPO / "xdc_core")
                assert r["xdc_core"] == expected, f"ran {r['xdc_core']}, wanted {expected}"
                runs.append(r)
                print(f"{minutes:g} min, {name}: peak {r['peak_rss_mb']} MB "
                      f"(after imports {r['rss_after_imports_mb']} MB), {r['decode_wall_s']} s, {r['status']}",
                      file=sys.stderr, flush=True)

    summary: dict[str, dict] = {}
    for name in impls:
        mine = [r for r in runs if r["impl"] == name]
        peaks = {r["minutes"]: r["peak_rss_mb"] for r in mine}
        summary[name] = {"peak_rss_mb_by_minutes": {f"{m:g}": p for m, p in peaks.items()},
                         "slope_mb_per_minute": slope(peaks),
                         "max_peak_rss_mb": max(peaks.values()) if peaks else None}
    identical = None
    if args.baseline_rev:
        pairs = [(a, b) for a in runs for b in runs
                 if a["impl"] == "before" and b["impl"] == "after" and a["minutes"] == b["minutes"]]
        identical = {f"{a['minutes']:g}": a["sha256"] == b["sha256"] and bool(a["sha256"]) for a, b in pairs}
    results = {
        "what": "peak RSS of one decode worker task (decode_video, default settings: 30 fps, short side 256, "
                "16 kHz mono) on one synthetic 320x240 H.264 + AAC 48 kHz stereo video, fresh process per run",
        "source": {"size": f"{WIDTH}x{HEIGHT}", "fps": SOURCE_FPS, "audio": f"aac {AUDIO_RATE} Hz stereo 128 kb/s",
                   "gop": "x264 default (250)"},
        "machine": machine(),
        "commit": commit,
        "after_code": after_code,
        "baseline_rev": args.baseline_rev or None,
        "target_peak_rss_mb": 500,
        "summary": summary,
        "outputs_identical_before_after": identical,
        "runs": [{k: v for k, v in r.items() if k not in ("xdc_core",)} for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print("| video | " + " | ".join(f"{n} peak RSS (MB)" for n in impls) + " |")
    print("|---|" + "---|" * len(impls))
    for minutes in sorted({r["minutes"] for r in runs}):
        cells = [next((str(r["peak_rss_mb"]) for r in runs if r["impl"] == n and r["minutes"] == minutes), "-")
                 for n in impls]
        print(f"| {minutes:g} min | " + " | ".join(cells) + " |")
    print("| slope, MB/min | " + " | ".join(str(summary[n]["slope_mb_per_minute"]) for n in impls) + " |")
    if identical is not None:
        print(f"outputs byte-identical before/after: {identical}")
    print(f"results: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
