#!/usr/bin/env bash
# Here (the build machine): builds libkernel_trace.so (tools/kernel_trace/kernel_trace.cpp)
# against the CUDA toolkit's CUPTI and puts it, with the libcupti it links, in .gpu-trace/ for
# tools/gpu_kernel_trace.sh on the GPU box (carry [".gpu", ".gpu-trace"]).
#   CUDA (default /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/../.."
CUDA=${CUDA:-/usr/local/cuda}
X="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx "/.gpu-trace/" "$X" || echo "/.gpu-trace/" >> "$X"
mkdir -p .gpu-trace
g++ -std=c++20 -O2 -shared -fPIC -Wall -Wextra -I"$CUDA/include" tools/kernel_trace/kernel_trace.cpp \
  -L"$CUDA/lib" -L"$CUDA/lib64" -lcupti -Wl,-rpath,'$ORIGIN' -o .gpu-trace/libkernel_trace.so
cupti=$(ldd .gpu-trace/libkernel_trace.so | awk '/libcupti/ {print $3}')
cp -L "$cupti" .gpu-trace/
ls -la .gpu-trace
