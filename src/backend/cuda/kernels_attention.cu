// Paged KV write and the portable attention kernel ("simt-paged"): one block per
// (query row, query head, KV split), four warps taking keys in turn, each lane holding
// head_dim/32 dims; scores in f32 with an online softmax; K/V read through the block table.
// With more than one split each block writes a normalised partial (o, m, l) and a combine
// kernel merges them (FlashDecoding). Covers causal, non-causal, sliding window, verify
// blocks (causal inside the block) and chunked prefill over cached context.
#include <cfloat>
#include <type_traits>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

__global__ void kv_write_kernel(const void* k, int k_dt, const void* v, int v_dt,
                                const int32_t* slot_mapping, int64_t row, int64_t num_slots,
                                void* ck, void* cv, int c_dt) {
  pdl_wait();
  const int64_t t = blockIdx.x;
  const int64_t slot = slot_mapping[t];
  if (slot < 0 || slot >= num_slots) return;  // -1: padding (the host checks the range)
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    st(ck, c_dt, slot * row + i, ld(k, k_dt, t * row + i));
    st(cv, c_dt, slot * row + i, ld(v, v_dt, t * row + i));
  }
}

// The split layout this launch uses: the host's, or on graph replays the one the batch's live
// max kv length gives (splits past it exit at once and the combine never reads them).
__device__ __forceinline__ SplitLayout launch_splits(const AttnArgs& a, const DeviceBatch& b) {
  if (b.live_max_kv_len == nullptr) return SplitLayout{a.num_splits, a.split_len};
  return decode_split_layout(a.split_work, a.split_sms, *b.live_max_kv_len, a.forced_split_len);
}

constexpr int kWarps = 4;
// Keys a warp loads before using any: the loop is latency-bound (a block-table read, then the
// K/V rows), so more rows in flight per step is what shortens it.
constexpr int kUnroll = 4;

__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ void from_f(float v, __nv_bfloat16* p) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void from_f(float v, float* p) { *p = v; }

template <int HD, typename T>
__device__ __forceinline__ void load_row(const T* p, float (&x)[HD / 32], int lane) {
  constexpr int V = HD / 32;
#pragma unroll
  for (int e = 0; e < V; ++e) x[e] = to_f(p[lane * V + e]);
}

// A lane's HD/32 elements of a K or V row, kept as stored (bf16 halves the registers of the
// rows in flight) and read with the widest aligned loads (rows start at multiples of HD
// elements; cache and q allocations are 256-byte aligned).
template <int HD, typename T>
struct LaneSlice {
  static constexpr int V = HD / 32;
  static constexpr int kBytes = V * static_cast<int>(sizeof(T));
  static constexpr int kWords = kBytes >= 16 ? kBytes / 16 : 1;
  using Word = std::conditional_t<
      kBytes >= 16, uint4,
      std::conditional_t<kBytes == 8, uint2, std::conditional_t<kBytes == 4, uint32_t, uint16_t>>>;
  Word w[kWords];
  __device__ __forceinline__ void load(const T* row, int lane) {
    const Word* src = reinterpret_cast<const Word*>(row + lane * V);
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = __ldg(src + i);
  }
  __device__ __forceinline__ float at(int e) const {
    return to_f(reinterpret_cast<const T*>(w)[e]);
  }
};

// Up to kMaxG query heads of one KV head per block: each K/V row is read once for all of them.
constexpr int kMaxG = 8;

template <int HD, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    attention_simt_kernel(AttnArgs a, DeviceBatch b) {
  pdl_wait();
  constexpr int V = HD / 32;
  __shared__ float sm_m[kWarps][kMaxG], sm_l[kWarps][kMaxG];
  __shared__ float sm_acc[kWarps][kMaxG][HD];
  const int t = blockIdx.x, split = blockIdx.z;
  const SplitLayout splits = launch_splits(a, b);
  if (split >= splits.num_splits) return;
  const int group = a.hq / a.hkv;
  const int chunks = (group + kMaxG - 1) / kMaxG;
  const int kvh = blockIdx.y / chunks;
  const int h0 = kvh * group + (blockIdx.y % chunks) * kMaxG;
  const int G = min(kMaxG, kvh * group + group - h0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int si = b.token_seq[t];
  int lo = 0, hi = 0;
  SeqInfo seq{};
  if (si >= 0) {
    seq = b.seqs[si];
    if (seq.query_len >= a.simt_skip_query_len) return;  // the flash kernel's rows
    const int kv_len = seq.num_computed + seq.query_len;
    const int p = seq.num_computed + (t - seq.query_start);
    hi = a.causal ? p + 1 : kv_len;
    lo = a.sliding_window > 0 ? max(0, p - a.sliding_window + 1) : 0;
  }
  if (splits.num_splits > 1) {
    lo = max(lo, split * splits.split_len);
    hi = min(hi, (split + 1) * splits.split_len);
  }
  float q[kMaxG][V];
#pragma unroll
  for (int g = 0; g < kMaxG; ++g) {
    if (g < G) {
      load_row<HD>(static_cast<const T*>(a.q) + (static_cast<int64_t>(t) * a.hq + h0 + g) * HD, q[g], lane);
#pragma unroll
      for (int e = 0; e < V; ++e) q[g][e] *= a.scale;
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) q[g][e] = 0.0f;
    }
  }
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  const int32_t* table = b.block_tables + seq.table_offset;
  const int64_t pos_stride = static_cast<int64_t>(a.hkv) * HD;

  float m[kMaxG], l[kMaxG], acc[kMaxG][V];
#pragma unroll
  for (int g = 0; g < kMaxG; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < V; ++e) acc[g][e] = 0.0f;
  }
  for (int j0 = lo + warp * kUnroll; j0 < hi; j0 += kWarps * kUnroll) {
    LaneSlice<HD, T> kk[kUnroll], vv[kUnroll];
    int64_t off[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {  // every table read, then every row load, then math
      const int j = j0 + u;
      const int jj = j < hi ? j : lo;
      const int64_t slot =
          static_cast<int64_t>(table[jj / a.block_size]) * a.block_size + jj % a.block_size;
      off[u] = slot * pos_stride + static_cast<int64_t>(kvh) * HD;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      kk[u].load(kc + off[u], lane);
      vv[u].load(vc + off[u], lane);
    }
#pragma unroll
    for (int g = 0; g < kMaxG; ++g) {
      if (g >= G) continue;
      float sc[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < V; ++e) dot += q[g][e] * kk[u].at(e);
        sc[u] = warp_sum<32>(dot);
      }
      float m_new = m[g];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (j0 + u < hi) m_new = fmaxf(m_new, sc[u]);
      const float corr = __expf(m[g] - m_new);
      l[g] *= corr;
#pragma unroll
      for (int e = 0; e < V; ++e) acc[g][e] *= corr;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const float pr = j0 + u < hi ? __expf(sc[u] - m_new) : 0.0f;
        l[g] += pr;
#pragma unroll
        for (int e = 0; e < V; ++e) acc[g][e] += pr * vv[u].at(e);
      }
      m[g] = m_new;
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxG; ++g) {
    if (g >= G) continue;
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
#pragma unroll
    for (int e = 0; e < V; ++e) sm_acc[warp][g][lane * V + e] = acc[g][e];
  }
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    float M = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0.0f;
    for (int w = 0; w < kWarps; ++w) L += sm_l[w][g] * __expf(sm_m[w][g] - M);
    const int64_t out_off = (static_cast<int64_t>(t) * a.hq + h0 + g) * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
      float o = 0.0f;
      for (int w = 0; w < kWarps; ++w) o += sm_acc[w][g][d] * __expf(sm_m[w][g] - M);
      o = L > 0.0f ? o / L : 0.0f;
      if (splits.num_splits > 1) {
        a.partial_o[(static_cast<int64_t>(split) * b.num_tokens * a.hq) * HD + out_off + d] = o;
      } else {
        from_f(o, static_cast<T*>(a.out) + out_off + d);
      }
    }
    if (splits.num_splits > 1 && threadIdx.x == 0) {
      const int64_t ml = (static_cast<int64_t>(split) * b.num_tokens * a.hq + t * a.hq + h0 + g) * 2;
      a.partial_ml[ml] = L > 0.0f ? M : -FLT_MAX;
      a.partial_ml[ml + 1] = L;
    }
  }
}

// out[t, h] = Σ_s w_s o_s / Σ_s w_s with w_s = e^{m_s − M} l_s: one block per (row, head); the
// split weights go to shared memory once (thread s reads split s), then each thread sums its
// head_dim columns over the splits with independent loads.
constexpr int kCombineThreads = 128;
static_assert(kCombineThreads >= kDecodeMaxSplits, "one thread per split's weight");
__global__ void __launch_bounds__(kCombineThreads)
    attention_combine_kernel(AttnArgs a, DeviceBatch b, int num_tokens) {
  pdl_wait();
  __shared__ float weight[kDecodeMaxSplits];
  __shared__ float scratch[32];
  const int t = blockIdx.x, h = blockIdx.y;
  const int num_splits = launch_splits(a, b).num_splits;
  if (num_splits == 1) return;  // graph replay of a short context: the kernel wrote out
  const int si = b.token_seq[t];
  if (si >= 0 && b.seqs[si].query_len >= a.simt_skip_query_len) return;  // flash rows
  const int64_t row = static_cast<int64_t>(t) * a.hq + h;
  const int64_t plane = static_cast<int64_t>(num_tokens) * a.hq;
  const int s = threadIdx.x;
  float ms = -FLT_MAX, ls = 0.0f;
  if (s < num_splits) {
    ls = a.partial_ml[(s * plane + row) * 2 + 1];
    ms = ls > 0.0f ? a.partial_ml[(s * plane + row) * 2] : -FLT_MAX;
  }
  // Block max through the sum helper's scratch: max over warps, then over their results.
  float M = warp_max(ms);
  __syncthreads();
  if (s % 32 == 0) scratch[s / 32] = M;
  __syncthreads();
  M = scratch[0];
  for (int w = 1; w < kCombineThreads / 32; ++w) M = fmaxf(M, scratch[w]);
  const float ws = ls > 0.0f ? ls * __expf(ms - M) : 0.0f;
  if (s < num_splits) weight[s] = ws;
  const float L = block_sum(ws, scratch);  // its barriers also publish weight[]
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  for (int d = threadIdx.x; d < a.hd; d += blockDim.x) {
    float o = 0.0f;
#pragma unroll 4
    for (int j = 0; j < num_splits; ++j)
      o += weight[j] * a.partial_o[(j * plane + row) * a.hd + d];
    st(a.out, a.dt, row * a.hd + d, o * inv);
  }
}

}  // namespace

void launch_kv_write(const void* k, int k_dt, const void* v, int v_dt, const DeviceBatch& b,
                     int64_t row, int64_t num_slots, void* cache_k, void* cache_v, int cache_dt,
                     cudaStream_t s) {
  if (b.num_tokens == 0) return;
  launch_pdl(kv_write_kernel, b.num_tokens, 128, 0, s, k, k_dt, v, v_dt, b.slot_mapping, row,
             num_slots, cache_k, cache_v, cache_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_attention_simt(const AttnArgs& a, const DeviceBatch& b, cudaStream_t s) {
  if (b.num_tokens == 0) return;
  const int group = a.hq / a.hkv;
  dim3 grid(b.num_tokens, a.hkv * ((group + kMaxG - 1) / kMaxG), a.num_splits);
  auto launch = [&](auto hd_tag) {
    constexpr int HD = decltype(hd_tag)::value;
    if (a.dt == kDtF32)
      launch_pdl(attention_simt_kernel<HD, float>, grid, kWarps * 32, 0, s, a, b);
    else
      launch_pdl(attention_simt_kernel<HD, __nv_bfloat16>, grid, kWarps * 32, 0, s, a, b);
  };
  switch (a.hd) {
    case 32: launch(std::integral_constant<int, 32>{}); break;
    case 64: launch(std::integral_constant<int, 64>{}); break;
    case 128: launch(std::integral_constant<int, 128>{}); break;
    case 256: launch(std::integral_constant<int, 256>{}); break;
    default: fail("paged_attention: head_dim ", a.hd, " not supported (32/64/128/256)");
  }
  BF_CUDA_LAUNCH_CHECK();
  if (a.num_splits > 1) {
    launch_pdl(attention_combine_kernel, dim3(b.num_tokens, a.hq), kCombineThreads, 0, s, a, b,
               b.num_tokens);
    BF_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace bf::cuda
