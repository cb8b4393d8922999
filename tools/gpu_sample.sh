#!/usr/bin/env bash
# The device sampler on a GPU box (binaries packed by /tmp/gpu_pack_abs.sh into /tmp/g, or set
# G): its tests (tests/cuda/cuda_sample_test.cpp), compute-sanitizer on the small cases, the
# engine tests on CUDA in f32 storage (device sampling on), and `bench_cuda sample`.
# Logs under $OUT (default /tmp/gpu_sample); a summary at the end.
set -uo pipefail
G=${G:-/tmp/g}
DEST=${OUT:-/tmp/gpu_sample}
mkdir -p "$DEST"
export BLOCKFLASH_TEST_DATA_DIR=$PWD/tests
declare -a summary
note() { summary+=("$1"); echo "== $1"; }
result() { grep -E '^\[  (PASSED|FAILED) ' "$1" | tr '\n' ' '; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$DEST/device.txt" 2>&1

for cluster in 8 1; do  # CTAs per row: the default cluster of 8, and one CTA per row
  BLOCKFLASH_SAMPLE_CLUSTER=$cluster timeout 100 $G/bin/test_cuda --gtest_filter='CudaSample*' \
    --gtest_color=no > "$DEST/test_sample_c$cluster.log" 2>&1
  note "test_cuda CudaSample* (cluster $cluster) rc=$?: $(result "$DEST/test_sample_c$cluster.log")"
  grep -E '^\[  FAILED|Failure|^\[sample\]|^\[       OK' "$DEST/test_sample_c$cluster.log" | head -30
  BLOCKFLASH_SAMPLE_CLUSTER=$cluster timeout 60 $G/bin/bench_cuda sample \
    > "$DEST/bench_sample_c$cluster.md" 2>&1
  note "bench_cuda sample (cluster $cluster) rc=$?"
  cat "$DEST/bench_sample_c$cluster.md"
done

small='CudaSample.SmallVocabAllPaths:CudaSample.RowWithoutFiniteLogitIsAnError:CudaSample.RandomBits*'
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 $G/bin/test_cuda \
  --gtest_filter="$small" --gtest_color=no > "$DEST/memcheck.log" 2>&1
note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$DEST/memcheck.log" | tail -1)"
timeout 60 compute-sanitizer --tool racecheck --error-exitcode 9 $G/bin/test_cuda \
  --gtest_filter="$small" --gtest_color=no > "$DEST/racecheck.log" 2>&1
note "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$DEST/racecheck.log" | tail -1)"

if [ -x $G/bin/test_engine ]; then
  BLOCKFLASH_TEST_DEVICE=cuda BLOCKFLASH_CUDA_DTYPE=f32 timeout 120 $G/bin/test_engine \
    --gtest_filter='DFlashEngine*:Sampler*' --gtest_color=no > "$DEST/engine_f32.log" 2>&1
  note "test_engine on CUDA f32 rc=$?: $(result "$DEST/engine_f32.log")"
  grep -E '^\[  FAILED' "$DEST/engine_f32.log" | head -10
fi
echo "==== summary"
printf '%s\n' "${summary[@]}"
