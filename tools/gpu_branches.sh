#!/usr/bin/env bash
# On the GPU box: the first run of each experimental branch whose bundle was carried
# (tools/gpu_pack_branches.sh packs .gpu-BRANCH/bundle.tar.xz; .gpu-base: main's bench_cuda,
# the baseline): the branch's test_cuda, then a same-call A/B of decode steps, main and the
# branch interleaved. Prints one summary line per check; logs in $OUT (default
# /tmp/gpu_branches).
#   TESTS: gtest filter (default: all), CONFIGS (default: qwen3.5-35b-a3b), BATCHES ("1 2"),
#   ROUNDS (3). A branch that needs an environment switch reads it from the caller's env.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_branches}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/tmp/bf-main/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
unpack() { mkdir -p "/tmp/bf-$1" && tar -C "/tmp/bf-$1" -xJf "$2"; }
unpack main .gpu-base/bundle.tar.xz
passed() { grep -E '^\[  (PASSED|FAILED)' "$1" | tr '\n' ' '; }
tests() {  # $1 branch
  local b=$1
  BLOCKFLASH_TEST_DATA_DIR=$PWD/tests timeout 300 "/tmp/bf-$b/bin/test_cuda" --gtest_color=no \
    --gtest_filter="${TESTS:-*}" > "$OUT/test_$b.log" 2>&1
  echo "== $b tests rc=$?: $(passed "$OUT/test_$b.log")"
  grep -E 'Failure' -A4 "$OUT/test_$b.log" | head -12
}
decode() {  # $1 bench_cuda dir name, $2 config
  echo "   $2 [$1]: $(BENCH_SKIP_PREFILL=1 timeout 90 "/tmp/bf-$1/bin/bench_cuda" \
    model "bench/configs/$2.json" ${BATCHES:-1 2} 2>&1 | grep -E '^\| decode B=[0-9]+ graph' |
    awk -F'|' '{printf "%s %s ms; ", $2, $4}')"
}
for bundle in .gpu-*/bundle.tar.xz; do
  b=${bundle%/bundle.tar.xz}
  b=${b#.gpu-}
  [ "$b" = base ] && continue
  unpack "$b" "$bundle"
  tests "$b"
  for r in $(seq "${ROUNDS:-3}"); do for bin in main "$b"; do
    for cfg in ${CONFIGS:-qwen3.5-35b-a3b}; do decode "$bin" "$cfg"; done; done; done
done
