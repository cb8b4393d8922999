// Skinny GEMM on Hopper tensor cores: out[m, n] = x[m, k] · w[n, k]ᵀ for m <= 32 rows (decode
// batches, a DFlash verify block of 16 tokens), bf16 inputs, f32 accumulation.
//
// Why: at 9-32 rows the product is still bound by w's bytes (16-32 multiply-adds per weight
// element), but the SIMT gemv runs out of FMA issue above ~8 rows and cuBLASLt reaches only
// 55-75% of the copy rate on the mid-sized decode shapes (bench/NOTES.md). Tensor cores make
// the arithmetic free, so the kernel is a weight stream: a warpgroup per 64 rows of w (the
// wgmma M) and a range of k, w and x tiles brought into a 6-stage shared-memory ring by
// cp.async (128-byte swizzle, the layout wgmma reads without bank conflicts), one
// m64n{16,32}k16 wgmma per 16 k. The first five stages of w are requested before the PDL wait
// (weights never depend on the kernel before), x after it.
//
// Split-K: when 64-row tiles alone leave SMs idle (n = 1024 is 16 tiles), the k range is
// split; each split stores its f32 tile to a workspace and counts itself in, and the last
// split of a tile to arrive sums all splits in split order (so the result does not depend on
// which block came last) and stores the output. The tile's counter is re-armed by that block.
#include <cuda/atomic>
#include <cuda_bf16.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/flash_common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/wgmma.h"

namespace bf::cuda {
namespace {

constexpr int kSkThreads = 128;  // one warpgroup
constexpr int kSkRows = 64;      // w rows per tile: the wgmma M
constexpr int kSkChunk = 64;     // k elements per stage: one 128-byte swizzled row
// Six stages (60-72 KB with x): three blocks per SM keep ~120 KB of w in flight per SM, what
// a stream from DRAM needs (four stages measured slower than cuBLASLt in a verify step).
constexpr int kSkStages = 6;
// Per configuration: k chunks (of 64) per split; 0 is the whole k in one split.
constexpr int kSkSplitChunks[] = {0, 32, 16, 8, 4};
constexpr int kSkConfigs = sizeof(kSkSplitChunks) / sizeof(kSkSplitChunks[0]);

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
int tokens_tile(int64_t m) { return m <= 16 ? 16 : 32; }
// A stage: the w tile [64 rows][128 bytes], then the x tile [kTok rows][128 bytes]; both
// multiples of the 1024-byte swizzle atom.
__host__ __device__ constexpr int stage_bytes(int tok) { return (kSkRows + tok) * 128; }
size_t smem_bytes(int tok) { return static_cast<size_t>(kSkStages) * stage_bytes(tok) + 1024; }

int64_t k_chunks(int64_t k) { return (k + kSkChunk - 1) / kSkChunk; }
int64_t chunks_per_split(int config, int64_t k) {
  const int64_t per = kSkSplitChunks[config];
  return per == 0 || per > k_chunks(k) ? k_chunks(k) : per;
}
int64_t split_count(int config, int64_t k) {
  const int64_t per = chunks_per_split(config, k);
  return (k_chunks(k) + per - 1) / per;
}
int64_t tile_count(int64_t n) { return (n + kSkRows - 1) / kSkRows; }

struct SkinnyArgs {
  const __nv_bfloat16* x;
  const __nv_bfloat16* w;
  void* out;
  int out_dt;
  int64_t m, n, k;
  int64_t chunks_per_split;
  int splits;
  float* partial;      // [tiles][splits][threads][kTok / 2] (splits > 1)
  unsigned* counters;  // [tiles], zero between launches
};

// Byte offset of 16-byte chunk c (0..7) of row r in a [rows][128 bytes] swizzled tile.
__device__ __forceinline__ uint32_t swizzled_chunk(int r, int c) {
  return static_cast<uint32_t>(r * 128 + ((c ^ (r % 8)) * 16));
}
// cp.async of 16 bytes (zero-filled when !valid; src then only needs to be a valid address)
// with an L2 policy (the weights: evict-first, as the gemv's loads; see ld_stream).
__device__ __forceinline__ void cp_async16_to(uint32_t dst, const void* src, bool valid,
                                              uint64_t policy) {
#if BF_STREAM_EVICT_FIRST
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(dst),
               "l"(src), "r"(valid ? 16 : 0), "l"(policy));
#else
  (void)policy;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
#endif
}
// The same without a policy (x: activations other kernels read next).
__device__ __forceinline__ void cp_async16_to(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
template <int kTok>
__device__ __forceinline__ void mma_chunk(float (&d)[kTok / 8][4], uint32_t w_addr,
                                          uint32_t x_addr) {
  // Four k-steps of 16 inside the 128-byte rows (32 bytes each), K-major operands.
#pragma unroll
  for (int kk = 0; kk < kSkChunk / 16; ++kk) {
    const uint64_t da = wgmma::make_desc(w_addr + kk * 32, 16, 1024, 1);
    const uint64_t db = wgmma::make_desc(x_addr + kk * 32, 16, 1024, 1);
    if constexpr (kTok == 16)
      wgmma::mma_m64n16k16_ss(d, da, db, 1);
    else
      wgmma::mma_m64n32k16_ss(d, da, db, 1);
  }
}

// The accumulator layout of m64nN per warp (16 rows, the mma.sync m16n8 layout per 8
// columns): element e of column block j is w row warp*16 + lane/4 (+8 for e >= 2), token
// 8j + 2(lane%4) (+1 for odd e).
template <int kTok>
__device__ __forceinline__ void store_tile(const SkinnyArgs& a, const float (&d)[kTok / 8][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kSkRows + warp * 16 + lane / 4;
#pragma unroll
  for (int j = 0; j < kTok / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + (e >= 2 ? 8 : 0);
      const int64_t tok = j * 8 + (lane % 4) * 2 + (e & 1);
      if (row < a.n && tok < a.m) st(a.out, a.out_dt, tok * a.n + row, d[j][e]);
    }
}

template <int kTok>
__global__ void __launch_bounds__(kSkThreads) skinny_wgmma_kernel(SkinnyArgs a) {
  extern __shared__ uint8_t sk_raw[];
  __shared__ bool s_last;
  constexpr int kStage = stage_bytes(kTok);
  // The swizzle is applied to absolute address bits: stages start on 1024-byte boundaries.
  const uint32_t base = smem_addr(sk_raw) + ((1024 - (smem_addr(sk_raw) & 1023)) & 1023);
  const int tid = threadIdx.x;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kSkRows;
  const int split = static_cast<int>(blockIdx.y);
  const int64_t c_begin = split * a.chunks_per_split;
  const int64_t all_chunks = (a.k + kSkChunk - 1) / kSkChunk;
  const int chunks = static_cast<int>(min(a.chunks_per_split, all_chunks - c_begin));
  const uint64_t policy = stream_policy();

  auto load_w = [&](int i) {  // chunk c_begin + i of w into stage i % kSkStages
    const uint32_t dst = base + (i % kSkStages) * kStage;
    const int64_t k0 = (c_begin + i) * kSkChunk;
#pragma unroll
    for (int u = 0; u < kSkRows * 8 / kSkThreads; ++u) {
      const int p = tid + u * kSkThreads, r = p / 8, c = p % 8;
      const int64_t row = row0 + r, kk = k0 + c * 8;
      const bool valid = row < a.n && kk < a.k;
      cp_async16_to(dst + swizzled_chunk(r, c), valid ? a.w + row * a.k + kk : a.w, valid,
                    policy);
    }
  };
  auto load_x = [&](int i) {  // the same chunk of x's rows (zeros past m)
    const uint32_t dst = base + (i % kSkStages) * kStage + kSkRows * 128;
    const int64_t k0 = (c_begin + i) * kSkChunk;
#pragma unroll
    for (int u = 0; u < kTok * 8 / kSkThreads; ++u) {
      const int p = tid + u * kSkThreads, r = p / 8, c = p % 8;
      const int64_t kk = k0 + c * 8;
      const bool valid = r < a.m && kk < a.k;
      cp_async16_to(dst + swizzled_chunk(r, c), valid ? a.x + r * a.k + kk : a.x, valid);
    }
  };

  // Groups: w of chunks 0..pre-1 (one each, before the wait), then x of those chunks (one),
  // then one group (w and x) per chunk from `pre` on, issued in the loop.
  const int pre = min(kSkStages - 1, chunks);
  for (int i = 0; i < pre; ++i) {
    load_w(i);
    cp_async_commit();
  }
  pdl_wait();
  for (int i = 0; i < pre; ++i) load_x(i);
  cp_async_commit();

  float d[kTok / 8][4];
#pragma unroll
  for (int j = 0; j < kTok / 8; ++j) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.0f;
  for (int i = 0; i < chunks; ++i) {
    // Chunk i landed: at i = 0 everything issued so far; later the group of iteration
    // i - (stages - 1), with stages - 2 younger ones allowed in flight.
    if (i == 0)
      cp_async_wait_group<0>();
    else
      cp_async_wait_group<kSkStages - 2>();
    wgmma::fence_proxy_async();  // this thread's cp.async data, visible to wgmma
    __syncthreads();             // everyone's chunk i landed; chunk i - 1's stage is free
    if (i + kSkStages - 1 < chunks) {
      load_w(i + kSkStages - 1);
      load_x(i + kSkStages - 1);
    }
    cp_async_commit();
    const uint32_t w_addr = base + (i % kSkStages) * kStage;
    wgmma::fence_operands(d);
    wgmma::fence();
    mma_chunk<kTok>(d, w_addr, w_addr + kSkRows * 128);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(d);
  }
  if (a.splits == 1) {
    store_tile<kTok>(a, d);
    return;
  }
  // Split-K: this split's tile to the workspace (each thread its own kTok / 2 floats), then
  // the last split of the tile to arrive sums every split in order.
  constexpr int kPer = kTok / 2;
  auto slot = [&](int s) {
    return reinterpret_cast<float4*>(
        a.partial + ((static_cast<int64_t>(blockIdx.x) * a.splits + s) * kSkThreads + tid) * kPer);
  };
  float4* mine = slot(split);
#pragma unroll
  for (int j = 0; j < kTok / 8; ++j) mine[j] = make_float4(d[j][0], d[j][1], d[j][2], d[j][3]);
  __threadfence();
  __syncthreads();
  if (tid == 0) {
    ::cuda::atomic_ref<unsigned, ::cuda::thread_scope_device> count(a.counters[blockIdx.x]);
    s_last = count.fetch_add(1u, ::cuda::memory_order_acq_rel) == static_cast<unsigned>(a.splits - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  float sum[kTok / 8][4];
#pragma unroll
  for (int j = 0; j < kTok / 8; ++j) sum[j][0] = sum[j][1] = sum[j][2] = sum[j][3] = 0.0f;
  for (int s = 0; s < a.splits; ++s) {
    const float4* theirs = slot(s);
#pragma unroll
    for (int j = 0; j < kTok / 8; ++j) {
      const float4 v = s == split ? make_float4(d[j][0], d[j][1], d[j][2], d[j][3])
                                  : __ldcg(theirs + j);
      sum[j][0] += v.x;
      sum[j][1] += v.y;
      sum[j][2] += v.z;
      sum[j][3] += v.w;
    }
  }
  if (tid == 0) a.counters[blockIdx.x] = 0;  // every split has counted in: re-arm
  store_tile<kTok>(a, sum);
}

template <int kTok>
void launch_tile(dim3 grid, const SkinnyArgs& a, cudaStream_t s) {
  static const bool raised = [] {  // above the 48 KB default
    BF_CUDA_CHECK(cudaFuncSetAttribute(skinny_wgmma_kernel<kTok>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem_bytes(kTok))));
    return true;
  }();
  (void)raised;
  launch_pdl(skinny_wgmma_kernel<kTok>, grid, dim3(kSkThreads), smem_bytes(kTok), s, a);
}

}  // namespace

int skinny_wgmma_num_configs() { return kSkConfigs; }

bool skinny_wgmma_supported(int64_t m, int64_t n, int64_t k, const void* x, const void* w) {
  return m >= 1 && m <= kSkinnyMaxRows && n >= 1 && k >= 8 && k % 8 == 0 && aligned16(x) &&
         aligned16(w);
}

bool skinny_wgmma_config_useful(int config, int64_t m, int64_t n, int64_t k,
                                size_t workspace_bytes, int64_t counters) {
  if (config < 0 || config >= kSkConfigs) return false;
  if (config == 0) return true;
  // A split configuration differs from the whole-k one and from the one before it.
  const int64_t splits = split_count(config, k);
  if (splits <= 1 || splits == split_count(config - 1, k)) return false;
  return skinny_wgmma_workspace_bytes(config, m, n, k) <= workspace_bytes &&
         tile_count(n) <= counters;
}

size_t skinny_wgmma_workspace_bytes(int config, int64_t m, int64_t n, int64_t k) {
  const int64_t splits = split_count(config, k);
  if (splits <= 1) return 0;
  return static_cast<size_t>(tile_count(n) * splits * kSkThreads * (tokens_tile(m) / 2)) *
         sizeof(float);
}

void launch_skinny_wgmma(const void* x, const void* w, void* out, int out_dt, int64_t m,
                         int64_t n, int64_t k, int config, float* workspace, unsigned* counters,
                         cudaStream_t s) {
  BF_CHECK(skinny_wgmma_supported(m, n, k, x, w), "skinny_wgmma: unsupported shape [", m, ", ",
           k, "] x [", n, ", ", k, "]^T");
  BF_CHECK(config >= 0 && config < kSkConfigs, "skinny_wgmma: no configuration ", config);
  SkinnyArgs a{static_cast<const __nv_bfloat16*>(x),
               static_cast<const __nv_bfloat16*>(w),
               out,
               out_dt,
               m,
               n,
               k,
               chunks_per_split(config, k),
               static_cast<int>(split_count(config, k)),
               workspace,
               counters};
  const dim3 grid(static_cast<unsigned>(tile_count(n)), static_cast<unsigned>(a.splits));
  if (tokens_tile(m) == 16)
    launch_tile<16>(grid, a, s);
  else
    launch_tile<32>(grid, a, s);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
