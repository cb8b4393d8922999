#!/usr/bin/env bash
# On the GPU box (carry the bundles named in ARMS and .gpu-trace): the DFlash verify step's
# A/B (tools/gpu_ab.sh MODE=spec, 27B + drafter shapes, B=1), then the tests the verify path
# touches on the newest bundle (NEW): all of test_cuda, the GDN op tests under each
# lanes-per-column setting, the DFlash engine tests on CUDA (f32: greedy with a drafter equals
# without, token for token; bf16) with verify blocks on the flash and on the split-KV kernel;
# then a CUPTI trace of NEW's verify passes (tools/kernel_trace/eager_breakdown.py).
#   ARMS (gpu_ab.sh's format), NEW (bundle dir, default .gpu-n), TRACE_ENV (assignments for
#   the traced run), ROUNDS (default 2), FMQLS (flash minimum query lengths for the DFlash
#   tests, default 16), LPCS (lanes per column for the GDN tests, default "1 8"). Logs in $OUT
#   (default /tmp/gpu_verify_ab).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_verify_ab}
NEW=${NEW:-.gpu-n}
mkdir -p "$OUT"
G=/tmp/bf-verify-new
mkdir -p $G && tar -C $G -xJf "$NEW/bundle.tar.xz"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export BLOCKFLASH_TEST_DATA_DIR=$PWD/tests
summary() { grep -E '^\[  (PASSED|FAILED) ' "$1" | tr '\n' ' '; }
timeout 150 $G/bin/test_cuda --gtest_color=no > "$OUT/test_cuda.log" 2>&1
echo "== test_cuda rc=$?: $(summary "$OUT/test_cuda.log")"; grep -E '^\[  FAILED' "$OUT/test_cuda.log" | head
# The changed kernels under compute-sanitizer: memcheck, and racecheck (shared memory).
changed='CudaOps.RopeAndElementwise:CudaOps.PagedAttentionFlashKeySplits:CudaOps.GatedDeltaRule:CudaOps.CausalConv1dAndGates'
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no \
  --gtest_filter="$changed" > "$OUT/memcheck.log" 2>&1
echo "== memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(summary "$OUT/memcheck.log")"
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no \
  --gtest_filter='CudaOps.PagedAttentionFlashKeySplits:CudaOps.GatedDeltaRule' > "$OUT/racecheck.log" 2>&1
echo "== racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" | tail -1)"
MODE=spec MODELS=bench/configs/qwen3.5-27b.json BATCHES=${BATCHES:-1} ROUNDS=${ROUNDS:-2} \
  OUT="$OUT/ab" bash tools/gpu_ab.sh | tee "$OUT/ab.md"
for lpc in ${LPCS:-1 8}; do
  BLOCKFLASH_DELTA_LANES_PER_COLUMN=$lpc timeout 60 $G/bin/test_cuda --gtest_color=no \
    --gtest_filter='CudaOps.GatedDelta*' > "$OUT/test_gdn_lpc$lpc.log" 2>&1
  echo "== GDN op tests, $lpc lanes per column rc=$?: $(summary "$OUT/test_gdn_lpc$lpc.log")"
done
for fmql in ${FMQLS:-16}; do
  for dt in f32 bf16; do
    BLOCKFLASH_FLASH_MIN_QUERY_LEN=$fmql BLOCKFLASH_TEST_DEVICE=cuda BLOCKFLASH_CUDA_DTYPE=$dt \
      timeout 120 $G/bin/test_engine --gtest_filter='DFlash*:Drafters/*' --gtest_color=no \
      > "$OUT/dflash_${dt}_fmql$fmql.log" 2>&1
    echo "== DFlash tests on CUDA ($dt, flash from $fmql queries) rc=$?: $(summary "$OUT/dflash_${dt}_fmql$fmql.log")"
  done
done
env ${TRACE_ENV:-} CUDA_INJECTION64_PATH=$PWD/.gpu-trace/libkernel_trace.so KERNEL_TRACE_OUT="$OUT/trace.csv" \
  timeout 150 $G/bin/blockflash bench spec --device cuda --load-format dummy \
  --model bench/configs/qwen3.5-27b.json --draft bench/configs/qwen3.5-27b-dflash.json \
  --batch-sizes 1 --context-len 1024 --iters 8 --warmup 2 > "$OUT/spec_trace.log" 2>&1
grep -E '^ +[0-9]+ ' "$OUT/spec_trace.log"
python3 tools/kernel_trace/eager_breakdown.py "$OUT/trace.csv" --passes 2:10 --top 30 > "$OUT/verify.md"
head -34 "$OUT/verify.md"
gzip -f "$OUT/trace.csv"
