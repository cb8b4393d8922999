#!/usr/bin/env bash
# On the GPU box, from the repository root, with .gpu/bundle.tar.xz carried (tools/gpu_pack.sh):
# the CUDA tests, compute-sanitizer (memcheck on the op tests, racecheck on a subset), the
# benchmarks (kernels vs PyTorch SDPA, decode/prefill of Qwen3.5-27B and -35B-A3B shapes with
# random weights), then a summary table. Logs archived to $OUT/gpu_logs.tgz (default
# /tmp/gpu_check).
# BUNDLE: the packed binaries (default .gpu/bundle.tar.xz).
# SANITIZE_SAMPLE_CLUSTERS: sampler racecheck cluster sizes (default "1 8").
# Usage: bash tools/gpu_check.sh [tests|sanitize|bench|dflash|load|serve|all]...   (default: all)
set -uo pipefail
DEST=${OUT:-/tmp/gpu_check}
OUT=/tmp/gpu_check_logs  # logs; at the end archived into $DEST/gpu_logs.tgz
rm -rf "$OUT" && mkdir -p "$OUT" "$DEST"
G=/tmp/bfgpu
mkdir -p $G && tar -C $G -xJf "${BUNDLE:-.gpu/bundle.tar.xz}"
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export BLOCKFLASH_LOG_LEVEL=${BLOCKFLASH_LOG_LEVEL:-info}
parts=${*:-all}
has() { [[ " $parts " == *" all "* || " $parts " == *" $1 "* ]]; }
declare -a summary
# Each note also re-archives the logs, so a call cut short still returns what ran.
note() {
  summary+=("$1"); echo "== $1"
  printf '%s\n' "${summary[@]}" > "$DEST/summary.txt"; tar -C "$OUT" -czf "$DEST/gpu_logs.tgz" .
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/device.txt"
$G/bin/blockflash env --model tests/goldens/moe_flat > "$OUT/env.txt" 2>&1; note "env rc=$?"

if has tests; then
  timeout 300 $G/bin/test_cuda --gtest_color=no > "$OUT/test_cuda.log" 2>&1
  rc=$?
  note "test_cuda rc=$rc: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/test_cuda.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED|Failure|golden' "$OUT/test_cuda.log" | head -40
  BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS=1 timeout 120 $G/bin/test_cuda --gtest_color=no \
    --gtest_filter='CudaOps.PagedAttention*:CudaOps.GatedDeltaRule*' > "$OUT/test_portable.log" 2>&1
  note "attention + GDN tests, portable kernels only rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/test_portable.log" | tr '\n' ' ')"
  BLOCKFLASH_FLASH_TILE=64 timeout 120 $G/bin/test_cuda --gtest_color=no \
    --gtest_filter='CudaOps.PagedAttention*' > "$OUT/test_flash_t64.log" 2>&1
  note "attention tests, flash 64-query tiles rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$OUT/test_flash_t64.log" | tr '\n' ' ')"
  timeout 60 $G/bin/test_backend --gtest_filter='Registry*' --gtest_color=no > "$OUT/test_registry.log" 2>&1
  note "registry tests rc=$?"
fi
if has tests; then
  # The engine end to end on the GPU: greedy ids must match the CPU backend (f32 mode is exact
  # enough to compare ids; bf16 is shown).
  gen() { $G/bin/blockflash generate --model tests/goldens/dense_nested --prompt-ids 1,2,3,4,5 \
            --max-tokens 16 --temperature 0 --json "$@" 2>>"$OUT/generate.log" | tail -1; }
  cpu=$(gen --device cpu); f32=$(BLOCKFLASH_CUDA_DTYPE=f32 gen --device cuda); bf16=$(gen --device cuda)
  f32_eager=$(BLOCKFLASH_CUDA_DTYPE=f32 gen --device cuda --enforce-eager)
  echo "cpu:  $cpu" > "$OUT/generate.txt"; echo "f32:  $f32" >> "$OUT/generate.txt"; echo "bf16: $bf16" >> "$OUT/generate.txt"
  ids() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["output_ids"])' "$1" 2>/dev/null; }
  note "generate --device cuda (f32) ids == cpu: $([ -n "$(ids "$cpu")" ] && [ "$(ids "$cpu")" == "$(ids "$f32")" ] && echo yes || echo NO); cpu $(ids "$cpu") bf16 $(ids "$bf16")"
  note "generate --device cuda --enforce-eager (f32) ids == graphs (f32): $([ -n "$(ids "$f32")" ] && [ "$(ids "$f32")" == "$(ids "$f32_eager")" ] && echo yes || echo NO)"
fi
if has bench; then
  timeout 200 $G/bin/bench_cuda attention > "$OUT/bench_attention.md" 2>&1; note "bench attention rc=$?"
  cat "$OUT/bench_attention.md"
  # BENCH_FULL=1: also a pinned-tile attention run and the gemv-vs-cuBLASLt table per shape.
  for tile in $([ "${BENCH_FULL:-0}" = 1 ] && echo 64); do
    BLOCKFLASH_FLASH_TILE=$tile timeout 200 $G/bin/bench_cuda attention > "$OUT/bench_attention_t$tile.md" 2>&1
    note "bench attention (flash tile pinned to $tile queries) rc=$?"
    grep prefill "$OUT/bench_attention_t$tile.md"
  done
  PYTHONUNBUFFERED=1 timeout 120 python3 bench/sdpa_bench.py > "$OUT/bench_sdpa.md" 2>&1; note "sdpa rc=$?"
  cat "$OUT/bench_sdpa.md"
  if [ "${BENCH_FULL:-0}" = 1 ]; then
    timeout 120 $G/bin/bench_cuda gemm > "$OUT/bench_gemm.md" 2>&1; note "bench gemm rc=$?"
    grep -v '^INFO' "$OUT/bench_gemm.md"
  fi
  timeout 120 $G/bin/bench_cuda gdn > "$OUT/bench_gdn.md" 2>&1; note "bench gdn rc=$?"
  grep -v '^INFO' "$OUT/bench_gdn.md"
  timeout 60 $G/bin/bench_cuda sample > "$OUT/bench_sample.md" 2>&1; note "bench sample rc=$?"
  grep -v '^INFO' "$OUT/bench_sample.md"
  PYTHONUNBUFFERED=1 timeout 120 python3 bench/gdn_reference_bench.py > "$OUT/bench_gdn_ref.md" 2>&1
  note "gdn reference rc=$?"
  cat "$OUT/bench_gdn_ref.md"
  for m in qwen3.5-27b qwen3.5-35b-a3b; do
    timeout 200 $G/bin/bench_cuda model bench/configs/$m.json 1 8 32 > "$OUT/bench_$m.md" 2>&1
    note "bench $m rc=$?"
    grep -v '^INFO' "$OUT/bench_$m.md"
  done
fi
if has serve; then
  # The mission's vLLM command on Qwen3.5-27B shapes (random weights): start-up profiling and
  # KV sizing, then `bench serve` against it (random 1024-token prompts, 128 output tokens).
  M=/tmp/qwen3.5-27b-dummy
  mkdir -p $M && cp bench/configs/qwen3.5-27b.json $M/config.json && cp tests/goldens/dense_flat/tokenizer*.json $M/
  $G/bin/blockflash serve $M --load-format dummy --port 8011 --max-model-len 65536 \
    --gpu-memory-utilization 0.85 --max-num-batched-tokens 32768 > "$OUT/serve.log" 2>&1 &
  pid=$!
  for i in $(seq 1 180); do python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:8011/health")' 2>/dev/null && break; sleep 1; done
  timeout 240 $G/bin/blockflash bench serve --port 8011 --num-prompts 64 --max-concurrency 16 \
    --random-input-len 1024 --random-output-len 128 > "$OUT/serve_bench.txt" 2>&1
  note "bench serve rc=$?: $(grep -iE 'output token throughput|median tpot|median ttft' "$OUT/serve_bench.txt" | tr -s ' ' | tr '\n' ';')"
  grep -E "profiling run|KV cache|KV blocks|graph" "$OUT/serve.log" | head -8
  kill $pid; wait $pid 2>/dev/null
fi
if has dflash; then
  # DFlash on CUDA: the engine tests (greedy with a drafter == without, rejection sampling,
  # z-lab drafter goldens) in f32 and bf16 storage, and bench spec on 27B + drafter shapes.
  for dtype in f32 bf16; do
    BLOCKFLASH_TEST_DATA_DIR=$PWD/tests BLOCKFLASH_TEST_DEVICE=cuda BLOCKFLASH_CUDA_DTYPE=$dtype \
      timeout 120 $G/bin/test_engine --gtest_filter='DFlash*:Drafters/*:Sampler*' --gtest_color=no \
      > "$OUT/dflash_tests_$dtype.log" 2>&1
    note "DFlash + sampler tests on CUDA ($dtype) rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/dflash_tests_$dtype.log" | tr '\n' ' ')"
  done
  timeout 150 $G/bin/blockflash bench spec --device cuda --load-format dummy \
    --model bench/configs/qwen3.5-27b.json --draft bench/configs/qwen3.5-27b-dflash.json \
    --batch-sizes ${SPEC_BATCHES:-1,4,16} --context-len 1024 --iters 8 --warmup 2 > "$OUT/bench_spec.txt" 2> "$OUT/bench_spec.log"
  note "bench spec rc=$?"
  cat "$OUT/bench_spec.txt"
fi
if has load; then
  # The safetensors loader on a real-sized checkpoint (16 layers of Qwen3.5-27B, 17 GB).
  BIN=$G/bin/blockflash LAYERS=16 timeout 240 bash tools/gpu_load_check.sh > "$OUT/load.log" 2>&1
  note "load rc=$?: $(grep -E 'disk:|GB/s' "$OUT/load.log" | sed 's/.*uploaded/uploaded/' | tr '\n' ' ')"
  rm -rf /tmp/synthetic-27b
fi
if has sanitize; then
  # memcheck: every op test but the slow ones (the 20k-context decode; every gemv configuration),
  # the small sampler tests and one graph configuration. racecheck: the kernels with shared memory.
  small_sample='CudaSample.RandomBitsMatchHostBitForBit:CudaSample.SmallVocabAllPaths:CudaSample.SeededAndBatchIndependent:CudaSample.RowWithoutFiniteLogitIsAnError'
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $G/bin/test_cuda \
    --gtest_filter="CudaOps.*:$small_sample:Goldens/CudaGraphs.*/dense_flat_bf16:-CudaOps.PagedAttentionDecodeLongContextSplitKv:CudaOps.MatmulSkinnyGemvEveryConfig" \
    --gtest_color=no > "$OUT/memcheck.log" 2>&1
  note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)' "$OUT/memcheck.log" | tr '\n' ' ')"
  # cuBLASLt's own kernels (nvjet_*, run by the skinny GEMM test's timed choice) synchronise
  # through mbarriers that racecheck does not model and report hazards inside themselves; they
  # are not ours to fix, so racecheck skips them and checks every kernel of this project.
  timeout 150 compute-sanitizer --tool racecheck --kernel-name-exclude kns=nvjet --error-exitcode 9 $G/bin/test_cuda \
    --gtest_filter='CudaOps.Norms:CudaOps.CausalConv1dAndGates:CudaOps.MoeExperts:CudaOps.MoeBlockDecode*:CudaOps.PagedAttentionVerifyNonCausalWindow:CudaOps.PagedAttentionPrefillWithContext:CudaOps.PagedAttentionFlashTiles:CudaOps.GatedDeltaRule*:CudaOps.GatedDeltaNetDecodeFused:CudaOps.MatmulSkinnyGemv:CudaOps.MatmulSkinnyWgmma*:CudaOps.PrepareAttentionInputs' \
    --gtest_color=no > "$OUT/racecheck.log" 2>&1
  note "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.log" | tail -1)"
  for cluster in ${SANITIZE_SAMPLE_CLUSTERS:-1 8}; do
    BLOCKFLASH_SAMPLE_CLUSTER=$cluster timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 \
      $G/bin/test_cuda --gtest_filter="$small_sample" --gtest_color=no > "$OUT/racecheck_sample_$cluster.log" 2>&1
    note "racecheck sampler (cluster $cluster) rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck_sample_$cluster.log" | tail -1)"
  done
fi
echo
echo "==== summary ===="
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
# At most 8 files come back from a device call: everything in one archive, plus the summary.
tar -C "$OUT" -czf "$DEST/gpu_logs.tgz" . && cp "$OUT/summary.txt" "$DEST/"
