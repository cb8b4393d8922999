#!/usr/bin/env bash
# On the GPU box (carry [".gpu", ".gpu-trace"]: tools/gpu_pack.sh and tools/kernel_trace/build.sh
# here): the GPU start and end of every kernel of replayed decode-step graphs (CUPTI, through
# the CUDA_INJECTION64_PATH library; kernels are not serialized as under ncu), then where each
# graph's last replay spends its time (tools/kernel_trace/graph_breakdown.py). Also prints the
# step's graph time without the tracer, from the same binary, to show the tracer's own cost.
#   CONFIG (bench/configs/qwen3.5-35b-a3b.json), BATCH (1), BUNDLE (.gpu/bundle.tar.xz)
#   Extra environment (e.g. BLOCKFLASH_PDL=0) passes through to bench_cuda.
set -uo pipefail
G=/tmp/bfgpu
L=${OUT:-/tmp/kernel_trace_out}
mkdir -p $G "$L" && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
CONFIG=${CONFIG:-bench/configs/qwen3.5-35b-a3b.json}
B=${BATCH:-1}
name=$(basename "$CONFIG" .json)_b$B
echo "without the tracer: $(BENCH_SKIP_PREFILL=1 timeout 120 $G/bin/bench_cuda model "$CONFIG" "$B" 2>&1 | grep -E '^\| decode B=[0-9]+ graph')"
BENCH_SKIP_PREFILL=1 CUDA_INJECTION64_PATH=$PWD/.gpu-trace/libkernel_trace.so \
  KERNEL_TRACE_OUT="$L/trace_$name.csv" timeout 180 $G/bin/bench_cuda model "$CONFIG" "$B" \
  > "$L/bench_$name.log" 2>&1
echo "with the tracer rc=$?: $(grep -E '^\| decode B=[0-9]+ graph' "$L/bench_$name.log")"
grep -i "kernel_trace" "$L/bench_$name.log" | head -5
python3 tools/kernel_trace/graph_breakdown.py "$L/trace_$name.csv" --top 30 | tee "$L/breakdown_$name.md"
gzip -f "$L/trace_$name.csv"
