// Skinny GEMM for decode (M <= 8 rows): out[m, n] = x[m, :] · w[n, :], bf16 x and w, f32
// accumulation. Memory-bound on w. A block is 8 warps; each warp streams R rows of w with
// 16-byte loads, U chunks of 256 columns at a time (all of a step's loads are issued before
// any is used, so each lane keeps R·U loads in flight), and reads x through the L1 cache (it
// is small and every warp of the SM reads it). With `splits` > 1 the columns are cut into that
// many contiguous slices, one warp each, and the slices' warp sums are added in slice order
// (few output rows: more warps in flight; many rows: fewer waves). Per row the order of the
// additions depends on (splits, k) only, never on M or R: lane sums in column order, a warp
// reduction, then the slices in order. The backend times the configurations against each
// other and cuBLASLt once per shape and keeps the fastest. Gated: x is a fused gate|up row
// [2k] and the kernel multiplies by silu(gate) ⊙ up, rounded to bf16 as silu_mul_packed
// would store it (the MLP's down projection without a separate activation kernel).
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kWarps = 8;

struct GemvConfig {
  int rows;    // R: w rows per warp
  int splits;  // column slices (warps per row group)
  bool deep = false;  // twice the loads in flight per lane (fewer, longer rounds: short slices
                      // are read in one round; more registers, fewer blocks per SM)
};
constexpr GemvConfig kConfigs[] = {{1, 1}, {2, 1}, {4, 1}, {1, 2}, {2, 2}, {4, 2},
                                   {1, 4}, {2, 4}, {4, 4}, {1, 8}, {2, 8}, {4, 8},
                                   {2, 2, true}, {4, 2, true}, {2, 4, true}, {4, 4, true},
                                   {2, 8, true}, {4, 8, true}};
constexpr int kNumConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);

template <int M, int R, bool Deep>
__host__ __device__ constexpr int steps_in_flight() {
  constexpr int budget = (M <= 2 ? 8 : M <= 4 ? 4 : 2) * (Deep ? 2 : 1);  // 16-byte w loads per lane
  return budget / R > 0 ? budget / R : 1;
}

// Eight x elements at column c of row m: plain, or silu(gate) ⊙ up of a fused gate|up row.
template <bool Gated>
__device__ __forceinline__ uint4 load_x(const __nv_bfloat16* __restrict__ x, int m, int64_t k,
                                        int64_t c) {
  if constexpr (!Gated) {
    return __ldg(reinterpret_cast<const uint4*>(x + m * k + c));
  } else {
    const uint4 gv = __ldg(reinterpret_cast<const uint4*>(x + m * 2 * k + c));
    const uint4 uv = __ldg(reinterpret_cast<const uint4*>(x + m * 2 * k + k + c));
    const __nv_bfloat162* g = reinterpret_cast<const __nv_bfloat162*>(&gv);
    const __nv_bfloat162* u = reinterpret_cast<const __nv_bfloat162*>(&uv);
    uint4 out;
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 gf = __bfloat1622float2(g[e]), uf = __bfloat1622float2(u[e]);
      o[e] = __floats2bfloat162_rn(siluf_(gf.x) * uf.x, siluf_(gf.y) * uf.y);
    }
    return out;
  }
}

template <int M, int R, bool Deep, bool Gated>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                void* out, int out_dt, int64_t n, int64_t k, int splits, int64_t slice) {
  constexpr int U = steps_in_flight<M, R, Deep>();
  __shared__ float part[kWarps][R][M];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int groups = kWarps / splits;
  const int g = warp / splits, s = warp % splits;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * groups + g) * R;
  const int64_t begin = s * slice;
  const int64_t end = begin + slice < k ? begin + slice : k;
  const __nv_bfloat16* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + (row0 + r < n ? row0 + r : n - 1) * k;
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  uint4 wv[U][R];
  const uint64_t policy = stream_policy();
  auto load_w = [&](int64_t c0) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + u * 256;
#pragma unroll
      for (int r = 0; r < R; ++r)
        wv[u][r] = c < end ? ld_stream(reinterpret_cast<const uint4*>(wr[r] + c), policy)
                           : make_uint4(0, 0, 0, 0);
    }
  };
  // The first step's w loads go out before waiting for the kernel before this one (launched
  // with programmatic dependent launch, this block may start while that kernel drains): w is
  // a weight, never written by the kernel just before; x is read and out written only after.
  // w through L2-only loads (ld_stream: __ldcg's ld.global.cg with an evict-first policy),
  // not __ldg: ptxas (CUDA 13, sm_90a) moves griddepcontrol.wait above read-only-path loads
  // (the SASS issued them after it); L2-only loads stay in place, and w is streamed once, so
  // skipping L1 costs nothing. 35B-A3B batch-1 graph step 3.20 -> 3.17 ms.
  load_w(begin + lane * 8);
  pdl_wait();
  for (int64_t c0 = begin + lane * 8; c0 < end; c0 += 256 * U) {
    if (c0 != begin + lane * 8) load_w(c0);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + u * 256;
      if (c >= end) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const uint4 xv = load_x<Gated>(x, m, k, c);
        const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&wv[u][r]);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float2 a = __bfloat1622float2(xp[e]), bb = __bfloat1622float2(wp[e]);
            acc[r][m] += a.x * bb.x + a.y * bb.y;
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = warp_sum<32>(acc[r][m]);
  if (splits == 1) {
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m)
          if (row0 + r < n) st(out, out_dt, m * n + row0 + r, acc[r][m]);
    }
    return;
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) part[warp][r][m] = acc[r][m];
  }
  __syncthreads();
  if (s == 0 && lane < R * M) {
    const int r = lane / M, m = lane % M;
    float v = part[warp][r][m];
    for (int j = 1; j < splits; ++j) v += part[warp + j][r][m];
    if (row0 + r < n) st(out, out_dt, m * n + row0 + r, v);
  }
}

template <int M, int R, bool Deep, bool Gated>
void launch_mr(const void* x, const void* w, void* out, int out_dt, int64_t n, int64_t k,
               int splits, cudaStream_t s) {
  const int groups = kWarps / splits;
  const int64_t slice = ((k + splits - 1) / splits + 7) / 8 * 8;
  const int blocks = ceil_div(ceil_div(n, R), groups);
  launch_pdl(gemv_kernel<M, R, Deep, Gated>, dim3(blocks), dim3(kWarps * 32), 0, s,
             static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(w), out,
             out_dt, n, k, splits, slice);
  BF_CUDA_LAUNCH_CHECK();
}

template <int M, bool Gated>
void launch_m(const void* x, const void* w, void* out, int out_dt, int64_t n, int64_t k,
              const GemvConfig& c, cudaStream_t s) {
  switch (c.rows * 2 + (c.deep ? 1 : 0)) {
    case 2: launch_mr<M, 1, false, Gated>(x, w, out, out_dt, n, k, c.splits, s); break;
    case 4: launch_mr<M, 2, false, Gated>(x, w, out, out_dt, n, k, c.splits, s); break;
    case 5: launch_mr<M, 2, true, Gated>(x, w, out, out_dt, n, k, c.splits, s); break;
    case 8: launch_mr<M, 4, false, Gated>(x, w, out, out_dt, n, k, c.splits, s); break;
    case 9: launch_mr<M, 4, true, Gated>(x, w, out, out_dt, n, k, c.splits, s); break;
    default: fail("gemv: bad configuration");
  }
}

template <bool Gated>
void launch_any_m(const void* x, const void* w, void* out, int out_dt, int64_t m, int64_t n,
                  int64_t k, const GemvConfig& c, cudaStream_t s) {
  switch (m) {
    case 1: launch_m<1, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 2: launch_m<2, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 3: launch_m<3, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 4: launch_m<4, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 5: launch_m<5, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 6: launch_m<6, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 7: launch_m<7, Gated>(x, w, out, out_dt, n, k, c, s); break;
    case 8: launch_m<8, Gated>(x, w, out, out_dt, n, k, c, s); break;
    default: fail("gemv: m ", m, " above 8");
  }
}

}  // namespace

bool gemv_supported(int64_t m, int64_t k, const void* x, const void* w, int /*max_smem*/) {
  return m >= 1 && m <= 8 && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

int gemv_num_configs() { return kNumConfigs; }

bool gemv_config_useful(int config, int64_t n, int64_t k) {
  if (config < 0 || config >= kNumConfigs) return false;
  const GemvConfig& c = kConfigs[config];
  // Every slice at least one step of a warp (256 columns); no more rows per warp than rows.
  if (c.splits > 1 && k < 256 * c.splits) return false;
  if (c.rows > 1 && n < c.rows * kWarps) return false;
  return true;
}

int gemv_config_rows(int config) {
  return config >= 0 && config < kNumConfigs ? kConfigs[config].rows : 0;
}
int gemv_config_splits(int config) {
  return config >= 0 && config < kNumConfigs ? kConfigs[config].splits : 0;
}

bool gemv_config_deep(int config) {
  return config >= 0 && config < kNumConfigs && kConfigs[config].deep;
}

void launch_gemv(const void* x, const void* w, void* out, int out_dt, int64_t m, int64_t n,
                 int64_t k, int config, cudaStream_t s, bool gated) {
  BF_CHECK(config >= 0 && config < kNumConfigs, "gemv: configuration ", config, " out of range");
  const GemvConfig& c = kConfigs[config];
  if (gated)
    launch_any_m<true>(x, w, out, out_dt, m, n, k, c, s);
  else
    launch_any_m<false>(x, w, out, out_dt, m, n, k, c, s);
}

}  // namespace bf::cuda
