"""GPU benchmark: full-size R(2+1)D-18 training throughput through the real training step and loader.

Issue 13 item 5. Each configuration trains the paper-size video trunk (width 64, 8x224x224 clips,
bf16 autocast on CUDA, SGD) for two epochs through ``xdc_core.train.train_encoder`` itself, fed by

* ``loader``: the real loader: ``ClipDataset`` in train mode (random clip start and crop, decoded
  at every visit from a decoded dataset, or from the clip cache with ``--clip-cache``) in
  DataLoader workers, one per available core by default. The data are the embedded sample videos,
  generated at 320x240 and decoded at the paper's settings (short side 256, 30 fps, GOP 16);
* ``memory`` (``--in-memory``): a few preallocated clips served through the same DataLoader, so
  decoding is not measured (the path this script measured before): model speed alone.

Epoch 1 is warm-up (DataLoader start, cuDNN autotuning, ``torch.compile``); epoch 2 is measured. Per
configuration it reports, from the per-step timings ``train_encoder`` gives its ``observer``:

* ``clips_per_s``: batch / the median step time (data wait + compute) over epoch 2, and
  ``clips_per_s_epoch2``: epoch 2's clips over its wall time (DataLoader start included);
* ``data_wait_fraction``: the share of epoch 2's step time spent waiting for the loader;
* ``mfu``: ``clips_per_s`` x the training FLOPs of one clip / the card's dense bf16 peak (null on
  the CPU or on a card not in ``PEAK_BF16_DENSE``).

The FLOPs of one clip are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (on the
meta device: shapes only): forward and backward of the trunk plus one 256-way linear head and the
cross-entropy. It counts the convolutions and matrix products (2 FLOPs per multiply-add, the
backward's input and weight gradients included); BatchNorm, ReLU, the loss and the SGD update are
not counted. Full size: about 485 GFLOP per training clip (162 forward).

Levers: ``--compile`` (``train.compile: true``: train_encoder compiles its training step),
``--cudnn-benchmark`` (cuDNN autotuning; xdc itself never sets it, so off is what ``xdc run``
does), ``--batch-size`` (several: one configuration each; the lr follows the linear rule,
0.01 x batch / 32), ``--clip-cache`` (``data.clip_cache``). ``--append`` adds this invocation's
configurations to those already in ``--out`` (same card only), so one JSON can hold the matrix.

The results go to the ``train_throughput`` section of ``--out``; other sections are kept.

Usage:
  python bench/gpu_bench.py --batch-size 32 64 96 --cudnn-benchmark --in-memory --out bench/results/gpu.json
  python bench/gpu_bench.py --batch-size 64 --compile --cudnn-benchmark --append --out bench/results/gpu.json
  python bench/gpu_bench.py --smoke --out /tmp/gpu_smoke.json  # CPU, tiny sizes, < 60 s: keeps it from rotting
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

import xdc_core
from xdc_core.config import Config, DataConfig, load_config
from xdc_core.dataset import ClipDataset
from xdc_core.decode import decode_dataset
from xdc_core.models import model_input
from xdc_core.sample_data import SampleSpec, make_sample_dataset
from xdc_core.steps import init_encoder
from xdc_core.train import Observer, Step, TrainResult, train_encoder

SECTION = "train_throughput"
HEAD_CLASSES = 256  # the paper's k for Kinetics (Table 2): the head the FLOP count includes
# NVIDIA's datasheet dense (no sparsity) bf16 tensor-core peaks, in FLOP/s, by a substring of
# torch.cuda.get_device_name(); first match wins, so the specific names come first.
PEAK_BF16_DENSE: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("NVL", 835e12),  # H100 NVL and H200 NVL
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("H200", 989e12),  # SXM
)


class InMemoryClips(Dataset[dict[str, Any]]):
    """``n`` videos served from 16 preallocated random uint8 clips: the loader does no decoding."""

    def __init__(self, n: int, data: DataConfig, clips: int | None = None) -> None:
        shape = (3, data.clip_frames, data.crop_size, data.crop_size)
        self.pool = torch.randint(0, 256, (16, *shape), dtype=torch.uint8)
        self.n, self.clips = n, clips

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.pool[i % len(self.pool)]
        if self.clips is not None:  # eval mode: [clips, ...]
            x = x.unsqueeze(0).expand(self.clips, *x.shape)
        return {"video": x, "index": i, "label": -1}


class StepRecorder(Observer):
    """Keeps every step's timing, by epoch, and when each epoch ended (the device synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps: list[tuple[int, int, float, float]] = []  # (epoch, clips, data wait s, compute s)
        self.ends: list[float] = []
        self.gpu_peak_bytes: int | None = None

    def log(self, line: str) -> None:
        pass

    def step(self, step: Step) -> None:
        self.steps.append((step.epoch, step.clips, step.waited_s, step.busy_s))

    def epoch(self, result: TrainResult, gpu_peak_bytes: int | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.gpu_peak_bytes = gpu_peak_bytes


def sample_dataset(work: Path, spec: SampleSpec, cfg: Config) -> Path:
    """The sample videos decoded at ``cfg.data``'s settings under ``work`` (both reused when present)."""
    sample = work / f"sample_{spec.videos}_{spec.width}x{spec.height}"
    manifest = sample / "manifest.csv"
    if not manifest.is_file():
        make_sample_dataset(sample, spec, workers=cfg.decode.workers)
    decoded = sample / f"decoded_{cfg.data.short_side}"
    decode_dataset(manifest, decoded, cfg, progress=False)  # resumes: a no-op once decoded
    return decoded


def flops_per_clip(cfg: Config) -> float:
    """Training FLOPs of one clip (see the module docstring), counted on the meta device."""
    d = cfg.data
    batch = 2  # the count is linear in the batch; 2 keeps BatchNorm's train-mode statistics defined
    with torch.device("meta"):
        trunk = init_encoder("video", cfg)
        head = torch.nn.Linear(int(trunk.out_dim), HEAD_CLASSES)
        x = torch.randint(0, 256, (batch, 3, d.clip_frames, d.crop_size, d.crop_size), dtype=torch.uint8)
        y = torch.randint(0, HEAD_CLASSES, (batch,))
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(head(trunk(model_input("video", x))), y).backward()
    return counter.get_total_flops() / batch


def peak_bf16(gpu: str | None) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None for the CPU or a card not in the table."""
    return next((peak for key, peak in PEAK_BF16_DENSE if gpu and key in gpu), None)


def matmul_tflops() -> float:
    """A measured ceiling beside the datasheet: an 8192^3 bf16 matrix product on random data,
    median of 10 after 3 warm-ups, timed with CUDA events."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    return round(2 * 8192**3 / statistics.median(times) / 1e12, 1)


def loader_only(train_set: ClipDataset, batch: int, workers: int, batches: int) -> dict[str, Any]:
    """What the loader alone delivers (no model), in clips/s, in steady state: timed from the
    arrival of the first wave's last batch to the last batch. The first wave is one batch per
    worker, all started together, and it arrives almost at once, so it is left out."""
    loader = DataLoader(train_set, batch_size=batch, num_workers=workers, pin_memory=torch.cuda.is_available(),
                        sampler=RandomSampler(train_set, replacement=True, num_samples=batch * batches))
    arrivals = [time.perf_counter() for _ in loader]
    first = max(workers, 1) - 1
    return {"batch_size": batch, "workers": workers, "batches": batches,
            "clips_per_s": round(batch * (len(arrivals) - 1 - first) / (arrivals[-1] - arrivals[first]), 1)}


def commit() -> str | None:
    """The checked-out commit, or None where there is no git (the device machine may have none)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None


def measure(source: str, train_set: Dataset[dict[str, Any]], val_set: Dataset[dict[str, Any]], n_videos: int,
            cfg: Config, args: argparse.Namespace, batch: int, device: torch.device, flops: float,
            peak: float | None) -> dict[str, Any]:
    """Two epochs of ``train_encoder``; the timings of epoch 2 (see the module docstring)."""
    train_cfg = cfg.train.model_copy(update={
        "epoch_size": args.steps * batch, "batch_size": batch, "lr": 0.01 * batch / 32, "warmup_epochs": 0,
        "total_epochs": 2, "val_fraction": 0.0, "early_stop": False, "workers": args.workers,
        "compile": args.compile})  # explicit: train.compile's auto would compile every CUDA configuration
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    trunk = init_encoder("video", cfg)
    if args.compile:
        torch._dynamo.reset()  # each configuration compiles afresh, never hits the recompile limit
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    recorder = StepRecorder(device)
    labels = np.arange(n_videos) % HEAD_CLASSES  # balanced pseudo-labels: the sampler draws evenly over them
    started = time.perf_counter()
    train_encoder(trunk, "video", train_set, val_set, [labels], train_cfg, seed=0, device=device, progress=False,
                  observer=recorder)
    ends = recorder.ends
    timed = [s for s in recorder.steps if s[0] == 2]
    total = [w + b for _, _, w, b in timed]
    step_s = statistics.median(total)
    clips_per_s = batch / step_s
    name = f"{source}-bs{batch}" + ("-compile" if args.compile else "") + (
        "-cudnn_benchmark" if args.cudnn_benchmark else "") + (f"-clip_cache{args.clip_cache}" if args.clip_cache else "")
    return {
        "name": name,
        "source": source,
        "batch_size": batch,
        "lr": train_cfg.lr,
        "compile": args.compile,
        "cudnn_benchmark": args.cudnn_benchmark,
        "clip_cache": args.clip_cache if source == "loader" else None,
        "workers": args.workers,
        "steps_per_epoch": len(timed),
        "clips_per_s": round(clips_per_s, 1),
        "clips_per_s_epoch2": round(args.steps * batch / (ends[1] - ends[0]), 1),
        "compute_only_clips_per_s": round(batch / statistics.median(b for _, _, _, b in timed), 1),
        "first_epoch_s": round(ends[0] - started, 2),
        "data_wait_fraction": round(sum(w for _, _, w, _ in timed) / sum(total), 4),
        "data_wait_median_ms": round(1e3 * statistics.median(w for _, _, w, _ in timed), 2),
        "step_median_ms": round(1e3 * step_s, 2),
        "achieved_tflops": round(clips_per_s * flops / 1e12, 2),
        "mfu": round(clips_per_s * flops / peak, 4) if peak else None,
        "gpu_peak_gib": round(recorder.gpu_peak_bytes / 2**30, 2) if recorder.gpu_peak_bytes else None,
    }


def main() -> int:
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    ap.add_argument("--work", type=Path, default=Path("bench/work/gpu"), help="sample videos and their decoded dataset")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[32], help="one configuration per batch size")
    ap.add_argument("--steps", type=int, default=20, help="steps per epoch (2 epochs: warm-up, measured)")
    ap.add_argument("--workers", type=int, default=cores, help=f"DataLoader workers (default: the {cores} cores available)")
    ap.add_argument("--videos", type=int, default=256, help="sample videos the loader reads")
    ap.add_argument("--compile", action="store_true", help="train.compile: true (default here: eager)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    ap.add_argument("--clip-cache", type=int, default=0, help="data.clip_cache for the loader (0: decode every visit)")
    ap.add_argument("--in-memory", action="store_true", help="also time each configuration on in-memory clips")
    ap.add_argument("--append", action="store_true", help="keep the configurations already in --out (same card)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, a few steps: checks that the script runs")
    args = ap.parse_args()

    overrides: dict[str, Any] = {"decode.workers": min(cores, 16), "data.clip_cache": args.clip_cache}
    spec = SampleSpec(videos=args.videos, classes=8, width=320, height=240, seconds=4.0)
    if args.smoke:  # the same code at sizes a 2-core CPU runs in seconds
        overrides |= {"data.short_side": 40, "data.crop_size": 32, "data.clip_frames": 4, "model.video_width": 8}
        spec = SampleSpec(videos=12, classes=4, width=64, height=48, seconds=3.0)
        args.batch_size, args.steps, args.workers, args.in_memory = [4], 3, min(args.workers, 2), True
        args.work = args.work / "smoke"
        device = torch.device("cpu")
        # One intra-op thread: on a shared 2-core machine, two OpenMP threads spinning against other
        # processes' load made these steps 10-100x slower (seen: 0.9 instead of ~100 clips/s).
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        sys.exit("no CUDA GPU: this benchmark needs one (--smoke runs it on the CPU at tiny sizes)")
    cfg = load_config(Path(xdc_core.__file__).parent / "presets" / "paper.yaml", overrides)

    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    peak = peak_bf16(gpu)
    flops = flops_per_clip(cfg)
    decoded = sample_dataset(args.work, spec, cfg)
    train_set = ClipDataset(decoded, cfg.data, "train", None, ("video",))
    # Never read (val_fraction 0), but train_encoder takes one; no clip cache, so none is built for it.
    val_set = ClipDataset(decoded, cfg.data.model_copy(update={"clip_cache": 0}), "eval", None, ("video",), clips=1)
    n_videos = len(train_set)

    section: dict[str, Any] = {
        "machine": {
            "gpu": gpu,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "cpu_cores": cores,
            "python": platform.python_version(),
        },
        "model": f"R(2+1)D-18 ({cfg.model.video_arch}), width {cfg.model.video_width}, "
                 f"input 3x{cfg.data.clip_frames}x{cfg.data.crop_size}x{cfg.data.crop_size}, "
                 + ("bf16 autocast, channels_last_3d (xdc_core.device)" if device.type == "cuda" else "float32 (CPU)"),
        "data": f"{n_videos} sample videos ({spec.width}x{spec.height}, {spec.seconds} s, synthetic) decoded at short "
                f"side {cfg.data.short_side}, {cfg.data.fps:g} fps, GOP {cfg.decode.keyframe_interval}; all in the page "
                "cache (disk and network reads are not measured); synthetic frames may decode faster than real video",
        "flops_per_clip": flops,
        "gflops_per_clip": round(flops / 1e9, 2),
        "flop_count": "torch.utils.flop_counter.FlopCounterMode on the meta device: forward + backward of the trunk, "
                      f"a {HEAD_CLASSES}-way linear head and the cross-entropy; convolutions and matrix products only "
                      "(2 FLOPs per multiply-add); BatchNorm, ReLU, loss and SGD update not counted",
        "peak_bf16_dense_tflops": peak / 1e12 if peak else None,
        "peak_source": "NVIDIA datasheet, dense bf16 tensor-core peak (H100/H200 SXM 989, H100 PCIe 756, NVL 835)",
        "matmul_bf16_tflops_measured": matmul_tflops() if device.type == "cuda" else None,
        "warm_up": "epoch 1 (DataLoader start, cuDNN autotuning, compilation); epoch 2 measured",
        "smoke": args.smoke,
        "commit": commit(),
        "configurations": [],
    }
    section["loader_only"] = loader_only(train_set, args.batch_size[0], args.workers, max(args.steps, 3 * args.workers))
    print(json.dumps({k: v for k, v in section.items() if k != "configurations"}, indent=2), flush=True)

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    earlier = results.get(SECTION, {}) if args.append else {}
    if earlier and earlier.get("machine", {}).get("gpu") != gpu:
        sys.exit(f"--append: {args.out} holds configurations measured on {earlier['machine'].get('gpu')}, not {gpu}")
    sources = ["loader", "memory"] if args.in_memory else ["loader"]
    rows: list[dict[str, Any]] = []
    for batch in args.batch_size:
        for source in sources:
            if source == "loader":
                row = measure(source, train_set, val_set, n_videos, cfg, args, batch, device, flops, peak)
            else:
                row = measure(source, InMemoryClips(n_videos, cfg.data), InMemoryClips(n_videos, cfg.data, clips=1),
                              n_videos, cfg, args, batch, device, flops, peak)
            print(json.dumps(row), flush=True)
            rows.append(row)
            # Written after every configuration: a run stopped by its time limit keeps what it measured.
            names = {r["name"] for r in rows}
            kept = [r for r in earlier.get("configurations", []) if r["name"] not in names]
            results[SECTION] = section | {"configurations": kept + rows}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{gpu or 'CPU'}: {section['gflops_per_clip']} GFLOP per training clip; loader alone "
          f"{section['loader_only']['clips_per_s']} clips/s with {args.workers} workers")
    print(f"{'configuration':<44} {'clips/s':>8} {'epoch 2':>8} {'compute':>8} {'wait':>6} {'MFU':>6}")
    for r in results[SECTION]["configurations"]:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"{r['name']:<44} {r['clips_per_s']:>8} {r['clips_per_s_epoch2']:>8} "
              f"{r['compute_only_clips_per_s']:>8} {r['data_wait_fraction']:>6.1%} {mfu:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
