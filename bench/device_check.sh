#!/usr/bin/env bash
# The GPU checks (docs/benchmarks.md, "GPU") in one time-boxed run on a lent GPU machine.
#
# 1. Here (this machine reaches the package index; the device machine reaches nothing), once:
#        bash bench/device_check.sh --fetch-wheels
#    downloads, for the device's Python 3.12, the wheels xdc needs that its image lacks (av, pydantic,
#    minio and their needs, faiss) into bench/work/wheels, at the versions of .venv. About 62 MB:
#    the device tool carries at most 64 MiB (working tree included) per call, so they only just fit.
#    faiss is faiss-cpu, as in every image: the GPU k-means is torch's (xdc_core/kmeans_torch.py).
# 2. On the device machine, through the device tool's run:
#        command: bash bench/device_check.sh     carry: ["bench/work/wheels"]     timeout_s: 600
#    Expected about 7-8 minutes on an H100 (a machine start adds one or two); every step is
#    time-boxed and the whole run stops by DEVICE_CHECK_SECONDS (default 540) so it ends inside the
#    tool's 10-minute limit. Steps, in order, each logged to $OUT/device.log and summed up in
#    $OUT/summary.txt:
#      a. the library's GPU k-means at 1M x 512, k = 512 (seeding included, two seeds), and the
#         objective of the CPU path (faiss, all cores) on the same features      -> kmeans_gpu.json
#      c. bench/gpu_bench.py: real loader and in-memory clips, batch 32/64/96 with cuDNN autotuning;
#         batch 32 without it (what xdc does today)                              -> gpu_bench.json
#      d. xdc run --device cuda on 96 sample videos, 1 iteration (cpu-demo sizes): the whole loop;
#         whether its k-means ran on the GPU (kmeans.json's device "cuda:0", no fallback WARNING)
#                                                        -> xdc_run_kmeans.json, xdc_run_metrics.json
#      c'. bench/gpu_bench.py with torch.compile at batch 64 (after d: the slowest and least certain
#         step, so it cannot crowd out d)                                        -> gpu_bench.json
#      e. bench/loader_bench.py: the loader alone, clips/s per worker at 1, 4, 8 and all cores
#                                                                                -> loader.json
#    Everything it writes is under $OUT (7 files at most: the tool brings back 8).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=bench/work/wheels
# Packages xdc imports that the device image (torch 2.11, Python 3.12) does not have; the image has
# numpy, torchvision, torchaudio, pyyaml, tqdm, prometheus-client, urllib3, certifi, typing-extensions.
PACKAGES=(av pydantic pydantic_core annotated-types typing-inspection minio argon2-cffi argon2-cffi-bindings
          pycryptodome cffi pycparser faiss-cpu)

if [[ ${1:-} == --fetch-wheels ]]; then
    py=.venv/bin/python
    specs=()
    for p in "${PACKAGES[@]}"; do
        specs+=("$p==$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p")") || exit 1
    done
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    platforms=()
    for tag in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${tag}_x86_64")
    done
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d "$WHEELS" "${specs[@]}" || exit 1
    bytes=$(du -sb "$WHEELS" | cut -f1)
    echo "$WHEELS: $(ls "$WHEELS" | wc -l) wheels, $((bytes / 1048576)) MiB (the device tool carries 64 MiB in all)"
    (( bytes < 62 * 1048576 )) || echo "WARNING: with the working tree this may not fit in one call" >&2
    exit 0
fi

OUT=${OUT:-bench/work/device_out}
mkdir -p "$OUT"
WORK=/tmp/xdc-device  # outside the repository: nothing of it travels back but what is copied to $OUT
mkdir -p "$WORK"
LOG=$OUT/device.log
SUMMARY=$OUT/summary.txt
: >"$LOG" && : >"$SUMMARY"
DEADLINE=$(( $(date +%s) + ${DEVICE_CHECK_SECONDS:-540} ))
CORES=$(nproc)
export PYTHONUNBUFFERED=1 XDC_CACHE_DIR=$WORK/cache
if ! command -v git >/dev/null; then  # kmeans_bench.py records the commit with git; without it, it would crash
    mkdir -p "$WORK/bin" && printf '#!/bin/sh\necho unknown\n' >"$WORK/bin/git" && chmod +x "$WORK/bin/git"
    export PATH=$WORK/bin:$PATH
fi

# step NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, never past the deadline; output to
# the log, one line (exit status, seconds) to the summary. 124 is a timeout.
step() {
    local name=$1 box=$2 left rc t0
    shift 2
    left=$(( DEADLINE - $(date +%s) ))
    (( box > left )) && box=$left
    if (( box < 20 )); then
        echo "$name: skipped, the run's deadline is near" | tee -a "$SUMMARY"
        return 124
    fi
    echo "=== $name (at most ${box} s): $*" >>"$LOG"
    t0=$(date +%s)
    timeout -k 10 "$box" "$@" >>"$LOG" 2>&1
    rc=$?
    printf '%-26s exit %-3s %4s s (limit %s s)\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$box" | tee -a "$SUMMARY"
    return $rc
}

{
    echo "started $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $CORES cores"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1
    df -h /dev/shm 2>&1 | tail -1  # DataLoader workers pass batches through it
} | tee -a "$SUMMARY"

if compgen -G "$WHEELS/*.whl" >/dev/null; then
    step install_wheels 90 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl
else
    echo "no wheels in $WHEELS (bash bench/device_check.sh --fetch-wheels, then carry it): xdc will not import" \
        | tee -a "$SUMMARY"
fi
export PYTHONPATH=/tmp/site:$PWD  # xdc from the working tree: it is not pip-installed there

# a. The library's GPU k-means (xdc_core/kmeans_torch.py) at 1M x 512, k = 512, seeding included, and
#    its objective against the CPU path's (faiss, all cores) on the same features.
step a_kmeans_gpu 200 python3 - "$OUT/kmeans_gpu.json" <<'PY'
import json, sys, time
from pathlib import Path

import numpy as np
import torch

from xdc_core.kmeans import kmeans

r: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0)}
rng = np.random.default_rng(0)
means = rng.standard_normal((2048, 512), dtype=np.float32)  # features with structure: 2048 blobs
x = means[rng.integers(0, 2048, 1_000_000)] + 0.8 * rng.standard_normal((1_000_000, 512), dtype=np.float32)
kmeans(x[:20000], 64, seed=0, use_gpu=True)  # CUDA context and kernels, untimed
times = []
for seed in (1, 2):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    gpu = kmeans(x, 512, seed=seed, use_gpu=True)
    times.append(round(time.perf_counter() - t0, 3))
r |= {"gpu_kmeans_1M_x512_k512_s": times, "gpu_device": gpu.stats.device, "gpu_objective": gpu.stats.objective}
Path(sys.argv[1]).write_text(json.dumps(r, indent=2) + "\n")
t0 = time.perf_counter()
cpu = kmeans(x, 512, seed=2, use_gpu=False)
r |= {"cpu_kmeans_s": round(time.perf_counter() - t0, 1), "cpu_objective": cpu.stats.objective,
      "objective_gpu_over_cpu": round(gpu.stats.objective / cpu.stats.objective, 4)}
Path(sys.argv[1]).write_text(json.dumps(r, indent=2) + "\n")
print(json.dumps(r, indent=2))
PY

# c. Training throughput through train_encoder, real loader and in-memory clips (bench/gpu_bench.py).
BENCH=(python3 bench/gpu_bench.py --work "$WORK/gpu" --workers "$CORES" --out "$OUT/gpu_bench.json")
step c_gpu_bench_autotuned 210 "${BENCH[@]}" --batch-size 32 64 96 --cudnn-benchmark --in-memory
step c_gpu_bench_as_xdc 75 "${BENCH[@]}" --batch-size 32 --append

# d. The whole loop on the GPU path.
XDC=(python3 -m xdc_cli.main)
step d_sample_data 60 "${XDC[@]}" sample-data --out "$WORK/run_sample" --videos 96
step d_xdc_run_cuda 150 "${XDC[@]}" run --data "$WORK/run_sample/manifest.csv" --out "$WORK/run" --device cuda \
    --config cpu-demo --iterations 1 --set "decode.workers=$CORES" --set embed.workers=8 --set train.workers=8 \
    --set evaluate.workers=8 --quiet
kmeans_stats=$(ls "$WORK"/run/iter_*/kmeans.json 2>/dev/null | head -1)
[[ -n $kmeans_stats ]] && cp "$kmeans_stats" "$OUT/xdc_run_kmeans.json"
[[ -f $WORK/run/metrics.json ]] && cp "$WORK/run/metrics.json" "$OUT/xdc_run_metrics.json"
{
    echo -n "d: k-means device: "
    grep -ho '"device": *"[^"]*"' "$OUT/xdc_run_kmeans.json" 2>/dev/null | sort | uniq -c | tr '\n' ' '
    echo
    grep -h "k-means on the CPU" "$LOG" | head -2
} | tee -a "$SUMMARY"

# c'. The torch.compile lever, last.
step c_gpu_bench_compiled 200 "${BENCH[@]}" --batch-size 64 --compile --cudnn-benchmark --in-memory --append

# e. The loader alone on this node's cores (last: the CPU machine measures it too): clips/s per worker
step e_loader_per_core 60 python3 bench/loader_bench.py --work "$WORK/gpu" --workers 1 4 8 "$CORES" --batches 16 \
    --clips 100 --out "$OUT/loader.json"

echo "finished $(date -u +%FT%TZ)" | tee -a "$SUMMARY"
echo "--- $SUMMARY"
cat "$SUMMARY"
echo "--- gpu_bench.json (train_throughput)"
[[ -f $OUT/gpu_bench.json ]] || echo "(not written: see the log)"
[[ -f $OUT/gpu_bench.json ]] && python3 - "$OUT/gpu_bench.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["train_throughput"]
print(s["machine"], f"{s['gflops_per_clip']} GFLOP/clip, peak {s['peak_bf16_dense_tflops']} TFLOP/s,",
      f"matmul measured {s['matmul_bf16_tflops_measured']} TFLOP/s, loader alone {s['loader_only']}")
for r in s["configurations"]:
    print(f"{r['name']:<40} {r['clips_per_s']:>7} clips/s (epoch 2: {r['clips_per_s_epoch2']}, compute only: "
          f"{r['compute_only_clips_per_s']}), data wait {r['data_wait_fraction']:.1%}, MFU {r['mfu']}, "
          f"{r['gpu_peak_gib']} GiB, first epoch {r['first_epoch_s']} s")
PY
echo "--- loader.json"
cat "$OUT/loader.json" 2>/dev/null
echo "--- kmeans_gpu.json"
cat "$OUT/kmeans_gpu.json" 2>/dev/null
echo "--- last lines of the log"
tail -n 40 "$LOG"
