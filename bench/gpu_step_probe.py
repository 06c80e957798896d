"""Where the GPU training time goes: one full-size R(2+1)D-18 SGD step on tensors already on the
GPU (no data loading), bf16 autocast, in the default memory format and in channels_last_3d.

Usage: python bench/gpu_step_probe.py  (prints JSON: steps/s and clips/s per variant)
"""

from __future__ import annotations

import json
import time

import torch

from xdc_core.models import build_trunk, model_input


def clips_per_s(channels_last: bool, batch: int = 32, steps: int = 20) -> float:
    dev = torch.device("cuda")
    trunk = build_trunk("video", 64).to(dev)
    head = torch.nn.Linear(trunk.out_dim, 256).to(dev)
    if channels_last:
        trunk = trunk.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD([*trunk.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    x = torch.randint(0, 256, (batch, 3, 8, 224, 224), dtype=torch.uint8, device=dev)
    y = torch.randint(0, 256, (batch,), device=dev)

    def step() -> None:
        inp = model_input("video", x)
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(head(trunk(inp)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    print(json.dumps({"default": round(clips_per_s(False), 1), "channels_last_3d": round(clips_per_s(True), 1)}))
