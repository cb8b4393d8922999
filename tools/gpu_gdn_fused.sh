#!/usr/bin/env bash
# On the GPU box (bundle from tools/gpu_pack.sh, carry [".gpu"]): the first run of the fused
# Gated DeltaNet decode (branch gdn-decode-fused): its test against the CPU's four ops, the
# model goldens and graph tests (decode steps now take it), then `bench_cuda model` for both
# models with it (default) and without (BLOCKFLASH_GDN_FUSED=0), interleaved, for the A/B.
set -uo pipefail
G=/tmp/bfgpu
mkdir -p $G && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
timeout 200 $G/bin/test_cuda --gtest_color=no \
  --gtest_filter='CudaOps.GatedDeltaNetDecodeFused:CudaOps.GatedDeltaRule*:Goldens/*' 2>&1 |
  grep -E '^\[  (PASSED|FAILED)|Failure' | head -20
for m in qwen3.5-27b qwen3.5-35b-a3b; do
  for round in 1 2; do
    for fused in 1 0; do
      echo "== $m fused=$fused (round $round)"
      BLOCKFLASH_GDN_FUSED=$fused BENCH_SKIP_PREFILL=1 timeout 100 $G/bin/bench_cuda model \
        bench/configs/$m.json 1 8 2>&1 | grep -E "^\| decode"
    done
  done
done
