// Skinny GEMM for decode (M <= 8 rows): out[m, n] = x[m, :] · w[n, :], bf16 x and w, f32
// accumulation. Memory-bound on w: each warp streams kRows rows of w with 16-byte loads, x sits
// in shared memory, one warp reduction per output. The backend times it against cuBLASLt
// once per shape and keeps the faster.
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kRows = 2;  // w rows per warp

template <int M>
__global__ void __launch_bounds__(256) gemv_kernel(const __nv_bfloat16* x, const __nv_bfloat16* w,
                                                   void* out, int out_dt, int64_t n, int64_t k) {
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  for (int64_t i = threadIdx.x * 8; i < M * k; i += blockDim.x * 8)
    *reinterpret_cast<uint4*>(xs + i) = *reinterpret_cast<const uint4*>(x + i);
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * 8 + warp) * kRows;
  if (row0 >= n) return;
  float acc[kRows][M];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  for (int64_t c = lane * 8; c < k; c += 32 * 8) {
    uint4 wv[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = min(row0 + r, n - 1);
      wv[r] = __ldg(reinterpret_cast<const uint4*>(w + row * k + c));
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xs + m * k + c);
      const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv[r]);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 a = __bfloat1622float2(xp[e]), bb = __bfloat1622float2(wp[e]);
          acc[r][m] += a.x * bb.x + a.y * bb.y;
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum<32>(acc[r][m]);
      if (lane == 0 && row0 + r < n) st(out, out_dt, m * n + row0 + r, v);
    }
  }
}

template <int M>
void launch_m(const void* x, const void* w, void* out, int out_dt, int64_t n, int64_t k,
              cudaStream_t s) {
  const size_t smem = static_cast<size_t>(M) * k * 2;
  static size_t configured = 0;
  if (smem > 48 * 1024 && smem > configured) {
    BF_CUDA_CHECK(cudaFuncSetAttribute(gemv_kernel<M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
    configured = smem;
  }
  const int blocks = ceil_div(n, 8 * kRows);
  gemv_kernel<M><<<blocks, 256, smem, s>>>(static_cast<const __nv_bfloat16*>(x),
                                           static_cast<const __nv_bfloat16*>(w), out, out_dt, n, k);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool gemv_supported(int64_t m, int64_t k, const void* x, const void* w, int max_smem) {
  return m >= 1 && m <= 8 && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0 && m * k * 2 <= max_smem;
}

void launch_gemv(const void* x, const void* w, void* out, int out_dt, int64_t m, int64_t n,
                 int64_t k, cudaStream_t s) {
  switch (m) {
    case 1: launch_m<1>(x, w, out, out_dt, n, k, s); break;
    case 2: launch_m<2>(x, w, out, out_dt, n, k, s); break;
    case 3: launch_m<3>(x, w, out, out_dt, n, k, s); break;
    case 4: launch_m<4>(x, w, out, out_dt, n, k, s); break;
    case 5: launch_m<5>(x, w, out, out_dt, n, k, s); break;
    case 6: launch_m<6>(x, w, out, out_dt, n, k, s); break;
    case 7: launch_m<7>(x, w, out, out_dt, n, k, s); break;
    case 8: launch_m<8>(x, w, out, out_dt, n, k, s); break;
    default: fail("gemv: m ", m, " above 8");
  }
}

}  // namespace bf::cuda
