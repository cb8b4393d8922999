#!/usr/bin/env bash
# On the GPU box (bundle from tools/gpu_pack.sh, carry [".gpu"]): skinny-mma (branch
# skinny-mma): its tests against the CPU reference, the M=16 rows of `bench_cuda gemm` against
# cuBLASLt, and `bench spec` (27B + drafter shapes, B=1) with skinny-mma timed (the default)
# and off, interleaved, for the verify step's A/B in one call. The first run hung in
# MatmulSkinnyMmaEveryConfig (lanes of a warp ran different chunk rounds), so that test runs
# alone first, under its own timeout, with its exit status printed (124: it hung again).
set -uo pipefail
G=/tmp/bfgpu
mkdir -p $G && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
tests() {
  timeout "$1" $G/bin/test_cuda --gtest_color=no --gtest_filter="$2" >$G/t.log 2>&1
  echo "== $2: exit $?"
  grep -E '^\[  (PASSED|FAILED)|^\[ +(OK|FAILED) +\]|Failure|rel L2|config' $G/t.log | head -40
}
tests 60 'CudaOps.MatmulSkinnyMmaEveryConfig'
tests 120 'CudaOps.Matmul*:-CudaOps.MatmulSkinnyMmaEveryConfig'
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
