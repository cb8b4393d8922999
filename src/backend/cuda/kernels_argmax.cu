// One block per row: each thread scans a strided slice keeping (value, index), then a warp
// and a block reduction pick the largest value, the lowest index among equals.
#include "backend/cuda/argmax.h"
#include "backend/cuda/cuda_common.h"

namespace bf::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool better(float v, int64_t i, float best_v, int64_t best_i) {
  if (best_i < 0) return true;
  return v > best_v || (v == best_v && i < best_i);
}

__global__ void argmax_rows_kernel(const void* x, int dt, int64_t n, int32_t* out) {
  pdl_wait();
  const int64_t row = blockIdx.x;
  float best_v = 0.0f;
  int64_t best_i = -1;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = ld(x, dt, row * n + i);
    if (!isnan(v) && better(v, i, best_v, best_i)) {
      best_v = v;
      best_i = i;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {  // warp: keep the better of the pair
    const float other_v = __shfl_xor_sync(0xffffffffu, best_v, o);
    const int64_t other_i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (other_i >= 0 && better(other_v, other_i, best_v, best_i)) {
      best_v = other_v;
      best_i = other_i;
    }
  }
  __shared__ float warp_v[kThreads / 32];
  __shared__ int64_t warp_i[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    warp_v[warp] = best_v;
    warp_i[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w)
      if (warp_i[w] >= 0 && better(warp_v[w], warp_i[w], best_v, best_i)) {
        best_v = warp_v[w];
        best_i = warp_i[w];
      }
    out[row] = static_cast<int32_t>(best_i);
  }
}

}  // namespace

void launch_argmax_rows(const void* x, int dt, int64_t rows, int64_t n, int32_t* out,
                        cudaStream_t stream) {
  if (rows == 0) return;
  launch_pdl(argmax_rows_kernel, static_cast<unsigned>(rows), kThreads, 0, stream, x, dt, n, out);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
