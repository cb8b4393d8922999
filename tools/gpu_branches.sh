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
# Earlier branches ran in sessions 10 and 11 (bench/NOTES.md); their sections are gone with them.
if [ -f .gpu-moe-router-nolast/bundle.tar.xz ]; then
  unpack moe-router-nolast .gpu-moe-router-nolast/bundle.tar.xz
  tests moe-router-nolast '*Moe*:*Golden*:*Graph*' BLOCKFLASH_TEST_DATA_DIR=$PWD/tests
  for r in 1 2 3; do for bin in main moe-router-nolast; do
    decode $bin qwen3.5-35b-a3b "1 2"; done; done
fi
