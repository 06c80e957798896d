"""Loader benchmark: training clips per second per CPU core at the paper's input, to size a node.

Issue 24, item 2. The video encoder's training loader is ``ClipDataset`` in train mode: for every
clip it seeks to the keyframe before a random start, decodes up to the clip's last frame, converts
the 8 frames it needs to RGB and takes a random 224x224 crop (the audio encoder's loader reads a
2 s window and computes its log-mel). This script times that loader on the CPU alone, no model:

* ``per_clip_ms``: one process, clip by clip: the median milliseconds of a video clip and of an
  audio clip, so the cost of each modality is known apart;
* ``video_time_shares``: where a video clip's time goes in that process (cProfile): decoding
  (from the keyframe before the start to the clip's last frame), opening the file, the RGB
  conversion (swscale), the rest (crop, copies);
* ``workers``: the DataLoader with 1, 2, ... workers (up to the cores available), batch 32, in
  steady state (the first wave of batches left out): clips/s, and clips/s per worker.

The data are the sample videos `bench/gpu_bench.py` trains on (320x240, 4 s, synthetic, decoded at
the paper's settings: short side 256, 30 fps, GOP 16), in the page cache: disk and network reads
are not measured, and synthetic frames may decode faster than camera video.

A node feeding one GPU at R clips/s needs about R / (clips/s per worker) loader cores, plus what
the training process itself uses.

Usage:
  python bench/loader_bench.py --out bench/results/loader.json
  python bench/loader_bench.py --smoke --out /tmp/loader_smoke.json  # tiny sizes: keeps it from rotting
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import xdc_core
from xdc_core.config import load_config
from xdc_core.dataset import ClipDataset
from xdc_core.sample_data import SampleSpec

sys.path.insert(0, str(Path(__file__).parent))
from gpu_bench import commit, loader_only, sample_dataset  # noqa: E402  (the same data and loader timing)
from learning_bench import machine  # noqa: E402

# cProfile entries (file suffix, function) that make up a video clip's time, by what they do.
PARTS = {"decode": ("media/file.py", "timed_frames"), "open": ("~", "<av.container.core.open>"),
         "rgb_conversion": ("~", "<method 'reformat' of 'av.video.reformatter.VideoReformatter' objects>")}


def per_clip_ms(dataset: ClipDataset, modality: str, clips: int, seed: int) -> float:
    """Median milliseconds of one training clip of ``modality``, read in this process."""
    rng = np.random.default_rng(seed)
    times = []
    for i in rng.integers(0, len(dataset), clips):
        t0 = time.perf_counter()
        dataset.read(int(i), dataset.train_starts(int(i), 1, rng), "random", rng)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def video_time_shares(dataset: ClipDataset, clips: int, seed: int) -> dict[str, float]:
    """Shares of a video clip's time (one process, cProfile's own time per function) by part."""
    profile = cProfile.Profile()
    profile.runcall(per_clip_ms, dataset, "video", clips, seed)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values())
    shares = {part: sum(entry[2] for (path, _, name), entry in stats.items() if path.endswith(where) and name == fn)
              / total for part, (where, fn) in PARTS.items()}
    shares["rest"] = 1 - sum(shares.values())
    return {part: round(share, 3) for part, share in shares.items()}


def main() -> int:
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/loader.json"))
    ap.add_argument("--work", type=Path, default=Path("bench/work/gpu"), help="sample videos and their decoded dataset")
    ap.add_argument("--videos", type=int, default=256, help="sample videos the loader reads")
    ap.add_argument("--workers", type=int, nargs="+", default=sorted({1, cores}), help="DataLoader worker counts")
    ap.add_argument("--batches", type=int, default=24, help="batches of 32 per worker count")
    ap.add_argument("--clips", type=int, default=200, help="clips timed one by one per modality")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few clips: checks that the script runs")
    args = ap.parse_args()

    torch.set_num_threads(1)  # the loader's workers are single-threaded; so is this process's timing
    overrides: dict[str, Any] = {"decode.workers": min(cores, 16)}
    spec = SampleSpec(videos=args.videos, classes=8, width=320, height=240, seconds=4.0)
    if args.smoke:
        overrides |= {"data.short_side": 40, "data.crop_size": 32, "data.clip_frames": 4}
        spec = SampleSpec(videos=12, classes=4, width=64, height=48, seconds=3.0)
        args.workers, args.batches, args.clips, args.work = [1], 3, 10, args.work / "smoke"
    cfg = load_config(Path(xdc_core.__file__).parent / "presets" / "paper.yaml", overrides)
    decoded = sample_dataset(args.work, spec, cfg)
    d = cfg.data
    result: dict[str, Any] = {
        "machine": machine(), "torch": torch.__version__,
        "input": f"video 3x{d.clip_frames}x{d.crop_size}x{d.crop_size} from frames of short side {d.short_side} at "
                 f"{d.fps:g} fps (GOP {cfg.decode.keyframe_interval}); audio {d.audio_seconds:g} s, "
                 f"{d.n_mels}x{d.mel_frames} log-mel",
        "data": f"{args.videos} sample videos ({spec.width}x{spec.height}, {spec.seconds:g} s, synthetic), "
                "in the page cache",
        "commit": commit(),
        "per_clip_ms": {m: per_clip_ms(ClipDataset(decoded, d, "train", None, (m,)), m, args.clips, seed=0)
                        for m in ("video", "audio")},
        "video_time_shares": video_time_shares(ClipDataset(decoded, d, "train", None, ("video",)), args.clips, seed=1),
        "workers": [],
    }
    print(json.dumps({k: result[k] for k in ("per_clip_ms", "video_time_shares")}), flush=True)
    video = ClipDataset(decoded, d, "train", None, ("video",))
    for w in args.workers:
        row = loader_only(video, 32, w, max(args.batches, 3 * w))
        row["clips_per_s_per_worker"] = round(row["clips_per_s"] / w, 1)
        result["workers"].append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    best = max(r["clips_per_s_per_worker"] for r in result["workers"])
    print(f"video clip {result['per_clip_ms']['video']} ms, audio clip {result['per_clip_ms']['audio']} ms (one "
          f"process); loader up to {best} video clips/s per worker: {600 / best:.0f} loader cores for 600 clips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
