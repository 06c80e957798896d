"""GPU benchmark: full-size encoders' training and inference throughput, and the GPU path end to end.

1. Throughput of the paper-size trunks (R(2+1)D-18 at 8x224x224, ResNet-18 on 40x100 log-mel,
   width 64) through the real training loop (``train_encoder``: bf16 autocast, SGD, balanced
   sampler) and the real feature extractor (``clip_features``), on in-memory clips so that data
   loading is not what is measured. Clips/s of the second epoch (the first pays cuDNN autotuning).
2. ``xdc run`` on a small sample dataset with ``--device cuda``: the whole loop (decode, embed,
   k-means, train, evaluate) on the GPU path.

Usage: python bench/gpu_bench.py --out bench/results/gpu.json [--epoch-clips 960]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from xdc_core.config import Config, TrainConfig
from xdc_core.embed import clip_features
from xdc_core.models import build_trunk
from xdc_core.train import train_encoder


class InMemoryClips(Dataset):
    """``n`` videos served from a few preallocated random clips (decoding is not measured)."""

    def __init__(self, modality: str, n: int, clips: int | None, cfg: Config) -> None:
        d = cfg.data
        shape = (3, d.clip_frames, d.crop_size, d.crop_size) if modality == "video" else (1, d.n_mels, d.mel_frames)
        pool = 16
        if modality == "video":
            self.pool = torch.randint(0, 256, (pool, *shape), dtype=torch.uint8)
        else:
            self.pool = torch.randn(pool, *shape)
        self.modality, self.n, self.clips = modality, n, clips

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x = self.pool[i % len(self.pool)]
        if self.clips is not None:  # eval mode: [clips, ...]
            x = x.unsqueeze(0).expand(self.clips, *x.shape)
        return {self.modality: x, "index": i, "label": -1}


def throughput(modality: str, cfg: Config, epoch_clips: int, batch_size: int) -> dict:
    device = torch.device("cuda")
    n = 4096
    trunk = build_trunk(modality, 64)
    train_cfg = TrainConfig(epoch_size=epoch_clips, batch_size=batch_size, lr=0.01, warmup_epochs=0, step_epochs=10,
                            total_epochs=2, val_fraction=0.0, early_stop=False, workers=4)
    epoch_times: list[float] = []
    last = [time.perf_counter()]

    def on_epoch_end(epoch: int, _: object) -> None:
        torch.cuda.synchronize()
        now = time.perf_counter()
        epoch_times.append(now - last[0])
        last[0] = now

    labels = np.arange(n) % 256
    torch.cuda.reset_peak_memory_stats()
    train_encoder(trunk, modality, InMemoryClips(modality, n, None, cfg), InMemoryClips(modality, n, 1, cfg),
                  [labels], train_cfg, seed=0, device=device, progress=False, on_epoch_end=on_epoch_end)
    train_mem = torch.cuda.max_memory_allocated() / 2**30
    # inference: the embed / evaluate path, one clip per video
    videos = 2048
    ds = InMemoryClips(modality, videos, 1, cfg)
    clip_features(trunk, ds, modality, batch_size=64, workers=4, device=device, progress=False)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    clip_features(trunk, ds, modality, batch_size=64, workers=4, device=device, progress=False)
    torch.cuda.synchronize()
    infer_s = time.perf_counter() - t0
    return {
        "train_clips_per_s": round(epoch_clips / epoch_times[1], 1),
        "train_first_epoch_clips_per_s": round(epoch_clips / epoch_times[0], 1),
        "train_batch_size": batch_size,
        "train_peak_gib": round(train_mem, 2),
        "inference_clips_per_s": round(videos / infer_s, 1),
        "inference_batch_size": 64,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    ap.add_argument("--epoch-clips", type=int, default=960)
    ap.add_argument("--skip-run", action="store_true", help="only the throughput part")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: this benchmark needs one")
    torch.backends.cudnn.benchmark = True
    cfg = Config()  # the paper's input sizes
    result: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "inputs": {"video": [3, cfg.data.clip_frames, cfg.data.crop_size, cfg.data.crop_size],
                   "audio": [1, cfg.data.n_mels, cfg.data.mel_frames]},
    }
    for modality in ("video", "audio"):
        result[modality] = throughput(modality, cfg, args.epoch_clips, batch_size=32)
        print(modality, result[modality], flush=True)
    if not args.skip_run:
        work = Path("/tmp/xdc-gpu-run")
        xdc = str(Path(sys.executable).parent / "xdc") if (Path(sys.executable).parent / "xdc").exists() else None
        cmd = [xdc] if xdc else [sys.executable, "-m", "xdc_cli.main"]
        subprocess.run([*cmd, "sample-data", "--out", str(work / "sample"), "--videos", "96"], check=True)
        t0 = time.perf_counter()
        done = subprocess.run(
            [*cmd, "run", "--data", str(work / "sample" / "manifest.csv"), "--out", str(work / "run"), "--device", "cuda",
             "--config", "xdc_core/presets/cpu-demo.yaml", "--set", "decode.workers=12", "--set", "model.video_width=64",
             "--set", "model.audio_width=64", "--set", "data.short_side=128", "--set", "data.crop_size=112",
             "--set", "embed.workers=6", "--set", "train.workers=6", "--set", "evaluate.workers=6", "--quiet"],
            capture_output=True, text=True,
        )
        result["xdc_run_cuda"] = {
            "returncode": done.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
            "settings": "cpu-demo preset with full-width encoders (64) at 112x112, 96 sample videos, --device cuda",
            "stdout_tail": done.stdout[-1500:],
            "stderr_tail": done.stderr[-1500:],
        }
        print(done.stdout[-1500:], done.stderr[-1500:], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
