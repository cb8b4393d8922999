#!/usr/bin/env bash
# Builds blockflash (CPU backend) and runs the whole CTest suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DBLOCKFLASH_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
