// "skinny-mma": out[m, n] = x[m, :] · w[n, :] for 9 to 16 rows (a DFlash verify block of one
// sequence is 16), bf16 x and w, f32 accumulation, on the tensor cores. Memory-bound on w like
// the gemv (kernels_gemv.cu), but the gemv's FMA work grows with the rows (16 rows x 8 columns
// per 16-byte load), so past 8 rows cuBLASLt ran these shapes; here one mma.sync m16n8k16
// takes all 16 rows of x against 8 columns of w at a time.
//
// A warp owns 8 output columns (w rows n0..n0+7) over a slice of k. Each lane loads 16 bytes
// (8 consecutive k) of its w row g = lane / 4 at k offset 8 * (lane % 4) of a 32-wide chunk:
// every byte of each 64-byte row segment is used, and the chunk feeds two MMAs. The MMA's k
// index is a permutation of the chunk's (position 2t + e of step s is chunk element
// 8t + 4s + e, position 2t + 8 + e is 8t + 4s + 2 + e), applied alike to x's rows (the A
// fragments, also one 16-byte load per row) and w's, so the sum is unchanged. U chunks (4 or
// 8, by configuration) are loaded before any is used. With `splits` > 1 the k range is cut
// into that many slices of a multiple of 32 (one warp each) and the slices' partial sums are
// added in slice order. Configurations are timed against cuBLASLt once per shape.
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/flash_common.cuh"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kWarps = 8;
struct SkinnyConfig {
  int splits;  // k slices per 8-column group (warps per group)
  int chunks;  // U: 32-wide k chunks loaded per lane before their MMAs
};
constexpr SkinnyConfig kConfigs[] = {{1, 4}, {2, 4}, {4, 4}, {8, 4},
                                     {1, 8}, {2, 8}, {4, 8}, {8, 8}};
constexpr int kNumSkinnyConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// A 16-byte read-only load, unconditional (an invalid chunk reads a valid address and is
// zeroed after): with predicated loads ptxas interleaved them with the MMAs, one chunk in
// flight per lane.
__device__ __forceinline__ uint4 load16(const __nv_bfloat16* p, const __nv_bfloat16* fallback,
                                        bool valid) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(valid ? p : fallback));
  return valid ? v : make_uint4(0, 0, 0, 0);
}

template <int U>
__global__ void __launch_bounds__(kWarps * 32, 1)
    skinny_mma_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                      void* out, int out_dt, int m, int64_t n, int64_t k, int splits,
                      int64_t slice) {
  __shared__ float part[kWarps][32][4];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int groups = kWarps / splits;
  const int grp = warp / splits, s = warp % splits;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * groups + grp) * 8;
  const int64_t begin = s * slice;
  const int64_t end = begin + slice < k ? begin + slice : k;
  const __nv_bfloat16* wr = w + (n0 + g < n ? n0 + g : n - 1) * k;
  const bool lo = g < m, hi = g + 8 < m;  // this lane's x rows g and g + 8 exist
  const __nv_bfloat16* x_lo = x + (lo ? g : 0) * k;
  const __nv_bfloat16* x_hi = x + (hi ? g + 8 : 0) * k;
  float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t c0 = begin + 8 * t; c0 < end; c0 += 32 * U) {
    uint4 wv[U], xa[U], xb[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t col = c0 + 32 * u;
      const bool ok = col < end;  // k % 8 == 0: a chunk that starts inside ends inside
      wv[u] = load16(wr + col, wr, ok);
      xa[u] = load16(x_lo + col, x, ok && lo);
      xb[u] = load16(x_hi + col, x, ok && hi);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int step = 0; step < 2; ++step) {
        const uint32_t a[4] = {word(xa[u], 2 * step), word(xb[u], 2 * step),
                               word(xa[u], 2 * step + 1), word(xb[u], 2 * step + 1)};
        mma_bf16(c, a, word(wv[u], 2 * step), word(wv[u], 2 * step + 1));
      }
    }
  }
  // c: (row g, columns n0 + 2t, +1) and (row g + 8, the same columns).
  if (splits > 1) {
#pragma unroll
    for (int e = 0; e < 4; ++e) part[warp][lane][e] = c[e];
    __syncthreads();
    if (s != 0) return;
    for (int j = 1; j < splits; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) c[e] += part[warp + j][lane][e];
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0);
    const int64_t col = n0 + 2 * t + (e % 2);
    if (row < m && col < n) st(out, out_dt, row * n + col, c[e]);
  }
}

}  // namespace

int skinny_mma_num_configs() { return kNumSkinnyConfigs; }

bool skinny_mma_supported(int64_t m, int64_t k, const void* x, const void* w) {
  return m >= 1 && m <= 16 && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

bool skinny_mma_config_useful(int config, int64_t k) {
  if (config < 0 || config >= kNumSkinnyConfigs) return false;
  const SkinnyConfig& c = kConfigs[config];
  // Every slice at least one round of chunks.
  return c.splits == 1 || k >= int64_t{32} * c.chunks * c.splits;
}

void launch_skinny_mma(const void* x, const void* w, void* out, int out_dt, int64_t m, int64_t n,
                       int64_t k, int config, cudaStream_t s) {
  BF_CHECK(config >= 0 && config < kNumSkinnyConfigs, "skinny-mma: configuration ", config,
           " out of range");
  BF_CHECK(m >= 1 && m <= 16, "skinny-mma: ", m, " rows (1 to 16)");
  const int splits = kConfigs[config].splits;
  const int groups = kWarps / splits;
  const int64_t slice = ((k + splits - 1) / splits + 31) / 32 * 32;
  const int blocks = ceil_div(ceil_div(n, 8), groups);
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  if (kConfigs[config].chunks == 8)
    skinny_mma_kernel<8><<<blocks, kWarps * 32, 0, s>>>(xb, wb, out, out_dt, static_cast<int>(m),
                                                       n, k, splits, slice);
  else
    skinny_mma_kernel<4><<<blocks, kWarps * 32, 0, s>>>(xb, wb, out, out_dt, static_cast<int>(m),
                                                       n, k, splits, slice);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
