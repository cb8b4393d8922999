#!/usr/bin/env bash
# On the GPU box (bundle from tools/gpu_pack.sh, carry [".gpu"]): per-kernel times of one eager
# Qwen3.5-27B decode step (random weights, context 1024) under ncu, summed per kernel
# (tools/ncu_summary.py), next to the step's own eager and graph times from the same binary.
#   CONFIG (bench/configs/qwen3.5-27b.json), BATCH (1), BUNDLE (.gpu/bundle.tar.xz)
set -uo pipefail
G=/tmp/bfgpu
L=${OUT:-/tmp/profile_out}
mkdir -p $G "$L" && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
CONFIG=${CONFIG:-bench/configs/qwen3.5-27b.json}
B=${BATCH:-1}
BENCH_SKIP_PREFILL=1 timeout 120 $G/bin/bench_cuda model "$CONFIG" "$B" 2>&1 | grep -E "^\| decode|copy"
BENCH_PROFILE=1 timeout 240 ncu --profile-from-start off --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --page raw $G/bin/bench_cuda model "$CONFIG" "$B" \
  > "$L/ncu_decode_b$B.csv" 2> "$L/ncu_decode_b$B.err"
echo "ncu rc=$?"
tail -3 "$L/ncu_decode_b$B.err"
python3 tools/ncu_summary.py "$L/ncu_decode_b$B.csv" | tee "$L/ncu_decode_b$B.md"
