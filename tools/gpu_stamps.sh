#!/usr/bin/env bash
# On the GPU box (carry [".gpu-stamps"]: a bench_cuda built from a tree patched by
# tools/kernel_stamps/stamp.py and packed with DEST=.gpu-stamps BINS=tests/bench_cuda): the
# batch-1 decode step's in-kernel timestamps, with the defaults and then with each setting of
# STAMP_VARIANTS (environment assignments, ';'-separated; default: the side prefetch off).
# Logs in $OUT (default /tmp/gpu_stamps).
#   CONFIG (bench/configs/qwen3.5-35b-a3b.json)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_stamps}
G=/tmp/bf-stamps
mkdir -p "$OUT" "$G" && tar -C "$G" -xJf .gpu-stamps/bundle.tar.xz
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
CONFIG=${CONFIG:-bench/configs/qwen3.5-35b-a3b.json}
run() {  # $1 name, then environment assignments
  local name=$1
  shift
  env BENCH_STAMPS=1 BENCH_SKIP_PREFILL=1 "$@" timeout 90 "$G/bin/bench_cuda" model "$CONFIG" 1 \
    > "$OUT/$name.log" 2>&1
  echo "== $name ($*): $(grep -E 'decode B=1 graph' "$OUT/$name.log")"
  grep -E '^(stamps|  block)' "$OUT/$name.log"
}
run default
IFS=';' read -ra variants <<< "${STAMP_VARIANTS:-BLOCKFLASH_SIDE_PREFETCH=0}"
i=0
for v in "${variants[@]}"; do
  i=$((i + 1))
  # shellcheck disable=SC2086  # each variant is a list of assignments
  run "variant$i" $v
done
