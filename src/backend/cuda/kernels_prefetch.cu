// L2 prefetch of weights from a side stream (CudaBackend::prefetch_weights). A decode step at
// batch 1 leaves DRAM idle through its latency-bound ops; this kernel, forked off the main
// stream before such ops, asks L2 for the weights of the projection that follows them. It
// reads nothing into registers and writes nothing, so it needs no ordering with the main
// stream beyond the fork, and a few blocks issue it all in a few microseconds.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kLine = 128;  // bytes per prefetch request (an L2 line)
constexpr int kThreads = 256;
constexpr int kBlocks = 16;

__global__ void __launch_bounds__(kThreads) l2_prefetch_kernel(L2PrefetchRanges r) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int i = 0; i < r.count; ++i) {
    const char* base = static_cast<const char*>(r.ptr[i]);
    const int64_t lines = (r.bytes[i] + kLine - 1) / kLine;
    for (int64_t l = thread; l < lines; l += threads)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(base + l * kLine));
  }
}

}  // namespace

void launch_l2_prefetch(const L2PrefetchRanges& r, cudaStream_t s) {
  if (r.count <= 0) return;
  l2_prefetch_kernel<<<kBlocks, kThreads, 0, s>>>(r);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
