#!/usr/bin/env bash
# On the GPU box (bundle from tools/gpu_pack.sh, carry [".gpu"]): the first run of skinny-mma
# (branch skinny-mma): its tests against the CPU reference, the M=16 rows of `bench_cuda gemm`
# against cuBLASLt, and `bench spec` (27B + drafter shapes, B=1) with skinny-mma timed (the
# default) and off, interleaved, for the verify step's A/B in one call.
set -uo pipefail
G=/tmp/bfgpu
mkdir -p $G && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
timeout 120 $G/bin/test_cuda --gtest_color=no --gtest_filter='CudaOps.Matmul*' 2>&1 | grep -E '^\[  (PASSED|FAILED)|Failure|config' | head -20
timeout 120 $G/bin/bench_cuda gemm 2>&1 | grep -v INFO
spec() {
  env "$@" timeout 120 $G/bin/blockflash bench spec --device cuda --load-format dummy \
    --model bench/configs/qwen3.5-27b.json --draft bench/configs/qwen3.5-27b-dflash.json \
    --batch-sizes 1 --context-len 1024 --iters 8 --warmup 2 2>/dev/null
}
for round in 1 2; do
  echo "== skinny-mma timed (round $round)"; spec BLOCKFLASH_SKINNY_MMA=timed
  echo "== skinny-mma off (round $round)"; spec BLOCKFLASH_SKINNY_MMA=never
done
