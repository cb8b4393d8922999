#!/usr/bin/env bash
# On the GPU box (bundle from tools/gpu_pack.sh, carry [".gpu"]): a same-call A/B of the two
# experimental gemv options on the Qwen3.5-27B decode step (bench/NOTES.md), each setting
# twice, interleaved, so the spread between identical runs is visible next to the difference.
set -uo pipefail
G=/tmp/bfgpu
mkdir -p $G && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
run() {
  echo "== $1"
  env BENCH_SKIP_PREFILL=1 ${2:-} timeout 90 $G/bin/bench_cuda model bench/configs/qwen3.5-27b.json ${AB_BATCHES:-1 8} 2>&1 | grep -E "^\| decode"
}
for round in 1 2; do
  run "default (round $round)"
  run "deep (round $round)" "BLOCKFLASH_GEMV_DEEP=1"
  run "gated (round $round)" "BLOCKFLASH_GEMV_GATED=1"
  run "deep + gated (round $round)" "BLOCKFLASH_GEMV_DEEP=1 BLOCKFLASH_GEMV_GATED=1"
done
