#!/usr/bin/env bash
# On the GPU box (carry [".gpu-s", ".gpu-trace"]; packed here with DEST=.gpu-s
# BINS="tests/bench_cuda blockflash" tools/gpu_pack.sh and tools/kernel_trace/build.sh): the
# skinny tensor-core GEMM's A/B on the DFlash verify step (bench spec, 27B shapes, B=1; arms:
# off, timed choice), `bench_cuda skinny`, and CUPTI traces of bench spec's eager verify
# passes (tools/kernel_trace/eager_breakdown.py). Logs in $OUT (default /tmp/gpu_spec_skinny).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_spec_skinny}
G=/tmp/bf-skinny
rm -rf "$G"
mkdir -p "$OUT" "$G" && tar -C "$G" -xJf .gpu-s/bundle.tar.xz
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
SPEC="$G/bin/blockflash bench spec --device cuda --load-format dummy --model bench/configs/qwen3.5-27b.json --draft bench/configs/qwen3.5-27b-dflash.json --batch-sizes ${SPEC_BATCHES:-1} --context-len 1024 --iters 8 --warmup 2"
for r in 1 2; do
  for arm in BLOCKFLASH_SKINNY=never BLOCKFLASH_SKINNY=timed; do
    env $arm BLOCKFLASH_LOG_LEVEL=debug timeout 150 $SPEC > "$OUT/spec_${arm#*=}_$r.log" 2>&1
    echo "== $arm round $r: $(grep -E '^ +[0-9]+ ' "$OUT/spec_${arm#*=}_$r.log")"
  done
done
echo "== timed choices above 8 rows (round 1):"
grep -o 'matmul \[[0-9]*, .*' "$OUT/spec_timed_1.log" | grep -v '^matmul \[[1-8], ' | sort -u
timeout 200 "$G/bin/bench_cuda" skinny 2>&1 | tee "$OUT/skinny.log" | tail -30
for arm in never timed; do
  BLOCKFLASH_SKINNY=$arm CUDA_INJECTION64_PATH=$PWD/.gpu-trace/libkernel_trace.so \
    KERNEL_TRACE_OUT="$OUT/trace_spec_$arm.csv" timeout 200 $SPEC > "$OUT/spec_trace_$arm.log" 2>&1
  echo "== verify passes, skinny $arm (traced: $(grep -E '^ +[0-9]+ ' "$OUT/spec_trace_$arm.log"))"
  python3 tools/kernel_trace/eager_breakdown.py "$OUT/trace_spec_$arm.csv" --passes 2:10 --top 25 |
    tee "$OUT/verify_breakdown_$arm.md"
  gzip -f "$OUT/trace_spec_$arm.csv"
done
