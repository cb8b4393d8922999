#!/usr/bin/env bash
# DFlash on the GPU box. Here: `bash tools/gpu_dflash.sh pack` builds build-dflash-cuda
# (sm_90a; blockflash + test_engine) and packs it with the shared libraries the GPU image
# lacks into .gpu-dflash/bundle.tar.xz. There (device `run`, carry [".gpu-dflash"], from the
# repository root): `bash tools/gpu_dflash.sh` runs
#   1. the DFlash engine + drafter-golden tests on CUDA, f32 storage (exact: greedy with a
#      drafter == without, token for token) and bf16 storage (the serving mode);
#   2. the CUDA whole-model goldens (test_cuda), as the model code they drive is shared;
#   3. `bench spec` on Qwen3.5-27B + its drafter's shapes (dummy weights), batch 1, 4, 16;
# and leaves the logs and a summary under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-run}" == pack ]]; then
  set -e
  B=build-dflash-cuda
  cmake -S . -B $B -DBLOCKFLASH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build $B -j"$(nproc)" --target blockflash test_engine test_cuda
  grep -qx '/build-dflash-cuda/' .git/info/exclude || echo '/build-dflash-cuda/' >> .git/info/exclude
  BUILD=$B DEST=.gpu-dflash BINS="blockflash tests/test_engine tests/test_cuda" bash tools/gpu_pack.sh
  exit 0
fi
DEST=${OUT:-/tmp/gpu_dflash}
mkdir -p "$DEST"
G=/tmp/bf_dflash
mkdir -p $G && tar -C $G -xJf .gpu-dflash/bundle.tar.xz
export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
declare -a summary
note() { summary+=("$1"); echo "== $1"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$DEST/device.txt"

for dtype in f32 bf16; do
  BLOCKFLASH_TEST_DATA_DIR=$PWD/tests BLOCKFLASH_TEST_DEVICE=cuda BLOCKFLASH_CUDA_DTYPE=$dtype timeout 120 $G/bin/test_engine \
    --gtest_filter='DFlash*:Drafters/*' --gtest_color=no > "$DEST/dflash_tests_$dtype.log" 2>&1
  note "DFlash tests on CUDA ($dtype) rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$DEST/dflash_tests_$dtype.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED|^\[       OK' "$DEST/dflash_tests_$dtype.log" | head -20
done

# The whole-model GPU goldens too (tests/cuda), since the model code these tests drive changed.
BLOCKFLASH_TEST_DATA_DIR=$PWD/tests timeout 120 $G/bin/test_cuda --gtest_filter='*Golden*:*Batch*:*Chunk*' \
  --gtest_color=no > "$DEST/cuda_goldens.log" 2>&1
note "CUDA model goldens rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$DEST/cuda_goldens.log" | tr '\n' ' ')"

timeout 330 $G/bin/blockflash bench spec --device cuda --load-format dummy \
  --model bench/configs/qwen3.5-27b.json --draft bench/configs/qwen3.5-27b-dflash.json \
  --batch-sizes 1,4,16 --context-len 1024 --iters 10 --warmup 2 \
  > "$DEST/bench_spec_27b.txt" 2> "$DEST/bench_spec_27b.log"
note "bench spec Qwen3.5-27B rc=$?"
cat "$DEST/bench_spec_27b.txt"
grep -E "weights ready|error" "$DEST/bench_spec_27b.log" | tail -3
echo "==== summary ===="
printf '%s\n' "${summary[@]}" | tee "$DEST/summary.txt"
