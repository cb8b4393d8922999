#!/usr/bin/env bash
# On the GPU box: the decode-graph checks in one go. Binaries in $G/bin (default /tmp/g/bin,
# the unpacked bundle of /tmp/gpu_pack_abs.sh or tools/gpu_pack.sh), run from the repository
# root. Logs and a summary under $OUT (default /tmp/gpu_graphs).
#  1. test_cuda CudaGraphs (dense and MoE goldens, f32 and bf16): graph replay == eager
#     forward of the same padded batch bit for bit, greedy tokens == unpadded eager, mixed
#     prefill/decode stream, padding rows touch nothing real;
#  2. the eager paths the change touched (split-KV decode attention, goldens);
#  3. compute-sanitizer memcheck on the graph tests;
#  4. blockflash generate on the GPU: graphs vs --enforce-eager vs the CPU backend (f32 ids);
#  5. bench_cuda model: decode step eager vs graph replay (27B and 35B-A3B shapes).
set -uo pipefail
G=${G:-/tmp/g}
OUT=${OUT:-/tmp/gpu_graphs}
mkdir -p "$OUT"
export BLOCKFLASH_TEST_DATA_DIR=$PWD/tests
declare -a summary
note() { summary+=("$1"); echo "== $1"; }
passed() { grep -E '^\[  (PASSED|FAILED)' "$1" | tr '\n' ' '; }

timeout 200 $G/bin/test_cuda --gtest_color=no --gtest_filter='Goldens/CudaGraphs.*' \
  > "$OUT/test_graphs.log" 2>&1
note "CudaGraphs rc=$?: $(passed "$OUT/test_graphs.log")"
grep -E '^\[graphs|Failure|FAILED' "$OUT/test_graphs.log" | head -40

timeout 150 $G/bin/test_cuda --gtest_color=no \
  --gtest_filter='CudaOps.PagedAttention*:Goldens/CudaGolden.*f32' > "$OUT/test_eager.log" 2>&1
note "eager attention + f32 goldens rc=$?: $(passed "$OUT/test_eager.log")"

timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no \
  --gtest_filter='Goldens/CudaGraphs.*dense_flat_bf16:Goldens/CudaGraphs.PaddingRowsTouchNothingReal/moe_flat_f32' \
  > "$OUT/memcheck.log" 2>&1
note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(passed "$OUT/memcheck.log")"

gen() { timeout 60 $G/bin/blockflash generate --model tests/goldens/dense_nested --prompt-ids 1,2,3,4,5 \
          --max-tokens 24 --temperature 0 --json "$@" 2>>"$OUT/generate.log" | tail -1; }
ids() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["output_ids"])' "$1" 2>/dev/null; }
cpu=$(gen --device cpu)
f32g=$(BLOCKFLASH_CUDA_DTYPE=f32 gen --device cuda); f32e=$(BLOCKFLASH_CUDA_DTYPE=f32 gen --device cuda --enforce-eager)
bf16g=$(gen --device cuda); bf16e=$(gen --device cuda --enforce-eager)
note "generate f32 graphs == cpu: $([ -n "$(ids "$cpu")" ] && [ "$(ids "$cpu")" == "$(ids "$f32g")" ] && echo yes || echo NO); f32 graphs == eager: $([ "$(ids "$f32e")" == "$(ids "$f32g")" ] && echo yes || echo NO); bf16 graphs == eager: $([ -n "$(ids "$bf16g")" ] && [ "$(ids "$bf16e")" == "$(ids "$bf16g")" ] && echo yes || echo NO)"
grep -E 'decode graphs' "$OUT/generate.log" | head -2

for m in qwen3.5-27b qwen3.5-35b-a3b; do
  timeout 150 $G/bin/bench_cuda model bench/configs/$m.json 1 8 32 > "$OUT/bench_$m.md" 2>&1
  note "bench $m rc=$?"
  grep -v '^INFO' "$OUT/bench_$m.md"
done
echo "==== summary ===="
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
