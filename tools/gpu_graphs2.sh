#!/usr/bin/env bash
# Second decode-graph call: the whole test_cuda suite, memcheck on the graph tests not covered
# before, the engine with 27B shapes (dummy weights, 64 buckets: record time and graph memory,
# graph ids == eager ids), and bench spec's decode baseline eager vs graph.
set -uo pipefail
G=${G:-/tmp/g}; OUT=${OUT:-/tmp/gpu_graphs2}; mkdir -p "$OUT"
export BLOCKFLASH_TEST_DATA_DIR=$PWD/tests
declare -a summary
note() { summary+=("$1"); echo "== $1"; }
passed() { grep -E '^\[  (PASSED|FAILED)' "$1" | tr '\n' ' '; }
timeout 200 $G/bin/test_cuda --gtest_color=no > "$OUT/test_cuda.log" 2>&1
note "test_cuda rc=$?: $(passed "$OUT/test_cuda.log")"
grep -E '^\[  FAILED|Failure' "$OUT/test_cuda.log" | head -20
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no \
  --gtest_filter='Goldens/CudaGraphs.GreedyDecode*moe_flat_bf16:Goldens/CudaGraphs.MixedStream*moe_flat_f32' \
  > "$OUT/memcheck.log" 2>&1
note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(passed "$OUT/memcheck.log")"
M=/tmp/m27; mkdir -p $M && cp bench/configs/qwen3.5-27b.json $M/config.json && cp tests/goldens/dense_nested/tokenizer*.json $M/
gen() { BLOCKFLASH_LOG_LEVEL=debug timeout 120 $G/bin/blockflash generate --model $M --load-format dummy --device cuda \
          --prompt-ids 1,2,3,4,5,6,7,8 --max-tokens 32 --temperature 0 --max-model-len 8192 --max-num-seqs 64 --json "$@" 2>"$OUT/gen27${1:-}.log" | tail -1; }
g=$(gen); e=$(gen --enforce-eager)
ids() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["output_ids"])' "$1" 2>/dev/null; }
note "27B dummy generate graphs == eager: $([ -n "$(ids "$g")" ] && [ "$(ids "$g")" == "$(ids "$e")" ] && echo yes || echo NO) ($(ids "$g" | cut -c1-60))"
grep -E 'decode graphs|graph of (64|1) |KV blocks|for the KV' "$OUT/gen27.log" | cut -c1-220
for mode in "" "--enforce-eager"; do
  timeout 150 $G/bin/blockflash bench spec --device cuda --load-format dummy --model bench/configs/qwen3.5-27b.json \
    --draft bench/configs/qwen3.5-27b-dflash.json --batch-sizes 1,4,16 --context-len 1024 --iters 10 --warmup 2 $mode \
    > "$OUT/spec$mode.txt" 2>"$OUT/spec$mode.log"
  note "bench spec $mode rc=$?"; cat "$OUT/spec$mode.txt"
done
echo "==== summary ===="; printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
