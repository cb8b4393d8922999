#!/usr/bin/env bash
# Here (the build machine): builds the CUDA binaries of experimental branches, each in its
# worktree (the branch's own, else a new ../wt-BRANCH; build-cuda inside it, sm_90a), and packs each into
# .gpu-BRANCH/bundle.tar.xz with tools/gpu_pack.sh, for tools/gpu_branches.sh on the GPU box
# (carry [".gpu-base", ".gpu-BRANCH", ...]; .gpu-base: this checkout's bench_cuda, the
# baseline).
#   BRANCHES (required: the branches to pack, space-separated)
#   BINS (default: tests/test_cuda tests/bench_cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${BRANCHES:?name the branches to pack, e.g. BRANCHES=my-branch}"
for b in $BRANCHES; do
  # The branch's worktree if it has one, else a new one next to this checkout.
  wt=$(git worktree list --porcelain | awk -v ref="refs/heads/$b" \
         '/^worktree /{w = substr($0, 10)} $0 == "branch " ref {print w}')
  if [ -z "$wt" ]; then
    wt=$(dirname "$root")/wt-$b
    git worktree add "$wt" "$b"
  fi
  cmake -S "$wt" -B "$wt/build-cuda" -DBLOCKFLASH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$wt/build-cuda" -j"$(nproc)" | tail -1
  BUILD="$wt/build-cuda" DEST=".gpu-$b" BINS="${BINS:-tests/test_cuda tests/bench_cuda}" \
    bash tools/gpu_pack.sh | tail -1
done
# The baseline: this checkout's bench_cuda alone (build-cuda, built by the caller), small enough
# that it and four branch bundles stay under the 64 MiB a device call carries.
BUILD=build-cuda DEST=.gpu-base BINS=tests/bench_cuda bash tools/gpu_pack.sh | tail -1
du -ch .gpu-base/bundle.tar.xz $(for b in $BRANCHES; do echo ".gpu-$b/bundle.tar.xz"; done) | tail -1
