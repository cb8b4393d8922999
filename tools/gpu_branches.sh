#!/usr/bin/env bash
# On the GPU box: the first run of each experimental branch whose bundle was carried
# (tools/gpu_pack_branches.sh; .gpu-base: main's bench_cuda, the baseline):
# its correctness tests with the branch's test_cuda, then a same-call A/B of decode steps.
# Prints one summary line per check; logs in $OUT (default /tmp/gpu_branches).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_branches}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/tmp/bf-main/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
unpack() { mkdir -p "/tmp/bf-$1" && tar -C "/tmp/bf-$1" -xJf "$2"; }
unpack main .gpu-base/bundle.tar.xz
passed() { grep -E '^\[  (PASSED|FAILED)' "$1" | tr '\n' ' '; }
tests() {  # $1 branch, $2 gtest filter, then env assignments
  local b=$1 f=$2; shift 2
  env "$@" timeout 150 "/tmp/bf-$b/bin/test_cuda" --gtest_color=no --gtest_filter="$f" \
    > "$OUT/test_$b.log" 2>&1
  echo "== $b tests [$*] rc=$?: $(passed "$OUT/test_$b.log")"
  grep -E 'Failure' -A4 "$OUT/test_$b.log" | head -12
}
decode() {  # $1 bench_cuda dir name, $2 config, $3 batches, then env assignments
  local bin=$1 cfg=$2 batches=$3; shift 3
  echo "   $cfg [$bin $*]: $(env BENCH_SKIP_PREFILL=1 "$@" timeout 90 "/tmp/bf-$bin/bin/bench_cuda" \
    model "bench/configs/$cfg.json" $batches 2>&1 | grep -E '^\| decode B=[0-9]+ graph' |
    awk -F'|' '{printf "%s %s ms; ", $2, $4}')"
}
# Session 9's branches (moe-persistent, gdn-decode-split, decode-splits, gemv-prewait) ran in
# session 10 (bench/NOTES.md); their sections are gone with them.
if [ -f .gpu-moe-down-early/bundle.tar.xz ]; then
  unpack moe-down-early .gpu-moe-down-early/bundle.tar.xz
  tests moe-down-early '*Moe*:*Golden*:*Graph*'
  for r in 1 2 3; do for bin in main moe-down-early; do
    decode $bin qwen3.5-35b-a3b "1 2"; done; done
fi
if [ -f .gpu-state-prewait/bundle.tar.xz ]; then
  unpack state-prewait .gpu-state-prewait/bundle.tar.xz
  tests state-prewait 'CudaOps.GatedDelta*:CudaOps.CausalConv1d*:*Golden*:*Graph*'
  for r in 1 2; do for bin in main state-prewait; do for m in qwen3.5-35b-a3b qwen3.5-27b; do
    decode $bin $m "1 2 8"; done; done; done
fi
