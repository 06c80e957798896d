"""The GPU benchmark and its device script cannot rot: ``bench/gpu_bench.py --smoke`` runs the whole
measurement (sample data, decode, real loader and in-memory clips through ``train_encoder``, FLOP
count) on the CPU at tiny sizes, ``bench/loader_bench.py --smoke`` likewise, and
``bench/device_check.sh`` parses.

Not an integration test: the smoke run takes about 30 s on 2 cores, so it stays in the fast loop.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def smoke(script: str, tmp_path: Path, *extra: str) -> dict:
    """``bench/SCRIPT --smoke``'s result file (the same file on every call in a test), after
    asserting that it ran."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, f"bench/{script}", "--smoke", *extra, "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def test_gpu_bench_smoke_writes_every_field(tmp_path: Path) -> None:
    section = smoke("gpu_bench.py", tmp_path)["train_throughput"]
    assert section["smoke"] is True
    assert section["machine"]["gpu"] is None
    # The count is shapes only (meta device): the tiny trunk's forward + backward is tens of MFLOP.
    assert 1e7 < section["flops_per_clip"] < 1e9
    assert "FlopCounterMode" in section["flop_count"]
    assert section["peak_bf16_dense_tflops"] is None
    assert section["loader_only"]["clips_per_s"] > 0
    rows = {r["source"]: r for r in section["configurations"]}
    assert set(rows) == {"loader", "memory"}
    for r in rows.values():
        assert r["clips_per_s"] > 0 and r["clips_per_s_epoch2"] > 0 and r["compute_only_clips_per_s"] > 0
        assert 0 <= r["data_wait_fraction"] <= 1
        assert r["steps_per_epoch"] == 3
        assert r["mfu"] is None  # no datasheet peak on the CPU
        assert r["achieved_tflops"] >= 0

    # --append keeps the configurations it does not measure again, and replaces those it does.
    names = [r["name"] for r in smoke("gpu_bench.py", tmp_path, "--append")["train_throughput"]["configurations"]]
    assert sorted(names) == ["loader-bs4", "memory-bs4"]


def test_peak_lookup_names_the_cards_the_device_machine_has() -> None:
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "bench" / "gpu_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.peak_bf16("NVIDIA H100 80GB HBM3") == 989e12  # what the H100 machine reported (SXM)
    assert bench.peak_bf16("NVIDIA H200") == 989e12
    assert bench.peak_bf16("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_bf16("NVIDIA H100 NVL") == 835e12
    assert bench.peak_bf16("NVIDIA A100-SXM4-80GB") is None
    assert bench.peak_bf16(None) is None


def test_device_script_parses() -> None:
    done = subprocess.run(["bash", "-n", str(REPO / "bench" / "device_check.sh")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_loader_bench_smoke_measures_clips_per_worker_and_where_a_clip_goes(tmp_path: Path) -> None:
    result = smoke("loader_bench.py", tmp_path)
    assert result["per_clip_ms"]["video"] > 0 and result["per_clip_ms"]["audio"] > 0
    shares = result["video_time_shares"]
    assert shares["decode"] > 0 and shares["rgb_conversion"] > 0  # the profile found the parts it names
    assert abs(sum(shares.values()) - 1) < 0.01
    assert [r["workers"] for r in result["workers"]] == [1] and result["workers"][0]["clips_per_s_per_worker"] > 0
