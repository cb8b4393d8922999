#!/usr/bin/env bash
# On the GPU box (bundle from /tmp/gpu_pack_abs.sh ... flash unpacked to /tmp/g): flash-mma
# attention tests (every tile shape), bench_cuda attention (default twice for the spread,
# each pinned tile), PyTorch SDPA in the same call, racecheck on the attention tests.
set -uo pipefail
G=/tmp/g
L=${OUT:-/tmp/flash_out}
mkdir -p "$L"
declare -a summary
note() { summary+=("$1"); }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$L/device.txt"
$G/bin/blockflash env --model tests/goldens/moe_flat > "$L/env.txt" 2>&1
timeout 120 $G/bin/test_cuda --gtest_color=no --gtest_filter='CudaOps.PagedAttention*' > "$L/test_attn.log" 2>&1
note "attention tests rc=$?: $(grep -E '^\[  (PASSED|FAILED)|^\[  FAILED' "$L/test_attn.log" | tr '\n' ' ')"
grep -E 'Failure|Expected|hq ' "$L/test_attn.log" | head -20
for run in 1 2; do
  timeout 60 $G/bin/bench_cuda attention > "$L/bench_default_$run.md" 2>&1; note "bench default $run rc=$?"
done
for tile in 64 128; do
  BLOCKFLASH_FLASH_TILE=$tile timeout 60 $G/bin/bench_cuda attention > "$L/bench_tile$tile.md" 2>&1; note "bench tile $tile rc=$?"
done
PYTHONUNBUFFERED=1 timeout 90 python3 bench/sdpa_bench.py > "$L/sdpa.md" 2>&1; note "sdpa rc=$?"
if [ "${RACECHECK:-1}" = 1 ]; then
  timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no \
    --gtest_filter='CudaOps.PagedAttentionPrefillWithContext:CudaOps.PagedAttentionVerifyNonCausalWindow:CudaOps.PagedAttentionFlashTiles' \
    > "$L/racecheck.log" 2>&1
  note "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|PASSED|FAILED' "$L/racecheck.log" | tr '\n' ' ')"
fi
if [ "${FULL_TESTS:-1}" = 1 ]; then
  timeout 120 $G/bin/test_cuda --gtest_color=no > "$L/test_cuda_all.log" 2>&1
  note "test_cuda (all) rc=$?: $(grep -E '^\[  (PASSED|FAILED)' "$L/test_cuda_all.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED' "$L/test_cuda_all.log" | head
fi
echo "== prefill (default tile, runs 1 and 2; pinned 64; pinned 128) =="
grep 'prefill' "$L/bench_default_1.md" "$L/bench_default_2.md" "$L/bench_tile64.md" "$L/bench_tile128.md" | sed 's/.*bench_//'
grep -E 'sdpa|torch' "$L/sdpa.md"
cat "$L/device.txt"
grep -i 'flash-mma' "$L/env.txt" | head -3
printf '%s\n' "${summary[@]}"
