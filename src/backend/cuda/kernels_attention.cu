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

// Up to kMaxG query heads of one KV head per block (a GQA group: each K/V row is read once
// for all of them); four warps take the keys in turn, kKeysPerStep rows each per step. A warp
// walks the heads in a loop with q, o, m and l in shared memory: the former form held them in
// registers, so every head's code was unrolled (~10k instructions at head_dim 256) and a
// launch took ~20 us at any context length (instruction fetch the likely cost; not profiled
// at that level). Small code and few
// registers also let several blocks share an SM, which is what keeps rows in flight at large
// batches. At the end the warps' (m, l, o) are merged through shared memory.
constexpr int kMaxG = 8;
constexpr int kWarps = 4;
// Keys a warp loads before using any: the loop is latency-bound (a block-table read, then the
// K/V rows), so more rows in flight per step is what shortens it.
constexpr int kKeysPerStep = 4;

__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }

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
  // coherent: through L2 (rows this kernel wrote), else the read-only path.
  __device__ __forceinline__ void load(const T* row, int lane, bool coherent) {
    const Word* src = reinterpret_cast<const Word*>(row + lane * V);
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = coherent ? __ldcg(src + i) : __ldg(src + i);
  }
  __device__ __forceinline__ float at(int e) const {
    return to_f(reinterpret_cast<const T*>(w)[e]);
  }
};

// out[row, d] = v; with an output gate (AttnArgs::gate), v rounded to out's type, then times
// sigmoid of the gate: the arithmetic of sigmoid_mul on the stored output, so the fold changes
// no bit of the result.
__device__ __forceinline__ void store_out(const AttnArgs& a, int64_t row, int d, float v) {
  if (a.gate != nullptr) {
    const float stored = a.dt == kDtF32 ? v : __bfloat162float(__float2bfloat16(v));
    v = stored * sigmoidf_(ld(a.gate, a.dt, row * a.gate_stride + d));
  }
  st(a.out, a.dt, row * a.hd + d, v);
}

// The key range [lo, hi) of query row t inside this block's split; empty for padding rows.
struct KeyRange {
  int lo = 0, hi = 0;
};
__device__ __forceinline__ KeyRange key_range(const AttnArgs& a, const SeqInfo& seq, int t,
                                              int split, const SplitLayout& splits) {
  KeyRange r;
  const int kv_len = seq.num_computed + seq.query_len;
  const int p = seq.num_computed + (t - seq.query_start);
  r.hi = a.causal ? p + 1 : kv_len;
  r.lo = a.sliding_window > 0 ? max(0, p - a.sliding_window + 1) : 0;
  if (splits.num_splits > 1) {
    r.lo = max(r.lo, split * splits.split_len);
    r.hi = min(r.hi, (split + 1) * splits.split_len);
  }
  return r;
}

// Element offsets in the cache of keys j0 .. j0 + kKeysPerStep - 1 (past the range: key lo,
// loaded and masked) for KV head kvh, through the block table.
__device__ __forceinline__ void key_offsets(const AttnArgs& a, const int32_t* table, int kvh,
                                            int hd, const KeyRange& keys, int j0,
                                            int64_t (&off)[kKeysPerStep]) {
  const int64_t pos_stride = static_cast<int64_t>(a.hkv) * hd;
#pragma unroll
  for (int u = 0; u < kKeysPerStep; ++u) {
    const int j = j0 + u < keys.hi ? j0 + u : keys.lo;
    const int64_t slot =
        static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size;
    off[u] = slot * pos_stride + static_cast<int64_t>(kvh) * hd;
  }
}

// The folded preparation (AttnArgs::fold_prep), in prepare_attention_inputs' arithmetic.
// Before the wait: the RoPE angles of the token's position, one (cos, sin) per rotated pair.
template <int HD>
__device__ __forceinline__ void rope_table(const AttentionPrepArgs& p, float pos, float* cs,
                                           float* sn) {
  const int half = p.rotary_dim / 2;
  for (int pair = threadIdx.x; pair < half; pair += blockDim.x) {
    // As the rope kernel (HF in f32): inv_freq = 1 / theta^(2i / rotary_dim).
    const float inv_freq =
        1.0f / powf(p.theta, static_cast<float>(2 * pair) / static_cast<float>(p.rotary_dim));
    sincosf(pos * inv_freq, &sn[pair], &cs[pair]);
  }
}

// One warp: the zero-centred RMSNorm of a head's row (elements lane, lane + 32, ...), into row.
template <int HD>
__device__ __forceinline__ void norm_row(const void* src, int src_dt, int64_t base, const void* w,
                                         int w_dt, float eps, int lane, float* row) {
  float x[HD / 32];
  float sum_sq = 0.0f;
#pragma unroll
  for (int i = 0; i < HD / 32; ++i) {
    x[i] = ld(src, src_dt, base + lane + 32 * i);
    sum_sq += x[i] * x[i];
  }
  const float scale = rsqrtf(warp_sum<32>(sum_sq) / static_cast<float>(HD) + eps);
#pragma unroll
  for (int i = 0; i < HD / 32; ++i) row[lane + 32 * i] = x[i] * (scale * (1.0f + ld(w, w_dt, lane + 32 * i)));
}

// NeoX RoPE of a normalised row, shared by `threads` threads (this one is `thread`): pair e
// (e < half) owns elements e and e + half, so `store` may write the row in place.
template <int HD, typename Store>
__device__ __forceinline__ void rotate_row(float* row, int rotary_dim, const float* cs,
                                           const float* sn, int thread, int threads, Store store) {
  const int half = rotary_dim / 2;
  for (int e = thread; e < HD; e += threads) {
    if (e < half) {
      const float x1 = row[e], x2 = row[e + half];
      store(e, x1 * cs[e] - x2 * sn[e]);
      store(e + half, x2 * cs[e] + x1 * sn[e]);
    } else if (e >= rotary_dim) {
      store(e, row[e]);
    }
  }
}

template <int HD, typename T>
__global__ void __launch_bounds__(kWarps * 32)
    attention_simt_kernel(AttnArgs a, DeviceBatch b) {
  constexpr int V = HD / 32;
  constexpr int kStride = kWarps * kKeysPerStep;  // keys between a warp's steps
  __shared__ float sm_q[kMaxG][HD];               // scaled q of the block's heads
  __shared__ float sm_o[kWarps][kMaxG][HD];       // each warp's unnormalised o per head
  __shared__ float sm_m[kWarps][kMaxG], sm_l[kWarps][kMaxG];
  // The batch's metadata and block tables are on the device before the step's first kernel,
  // so they are read before waiting on the kernels just before (which write q and the newest
  // K/V rows); the first step's table reads with them.
  const int t = blockIdx.x, split = blockIdx.z;
  const SplitLayout splits = launch_splits(a, b);
  const int group = a.hq / a.hkv;
  const int chunks = (group + kMaxG - 1) / kMaxG;
  const int kvh = blockIdx.y / chunks;
  const int h0 = kvh * group + (blockIdx.y % chunks) * kMaxG;
  const int G = min(kMaxG, kvh * group + group - h0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int si = b.token_seq[t];
  KeyRange keys;
  SeqInfo seq{};
  if (si >= 0) {
    seq = b.seqs[si];
    keys = key_range(a, seq, t, split, splits);
  }
  const int32_t* table = b.block_tables + seq.table_offset;
  const int first = keys.lo + warp * kKeysPerStep;
  int64_t off[kKeysPerStep];
  const bool work = split < splits.num_splits &&
                    (si < 0 || seq.query_len < a.simt_skip_query_len);  // else: flash rows
  if (work && first < keys.hi) key_offsets(a, table, kvh, HD, keys, first, off);
  // With the preparation folded in, the block whose keys hold the token's own position writes
  // that key and value first, then reads its rows through L2.
  const int own = seq.num_computed + (t - seq.query_start);
  const bool writes_own = a.fold_prep && work && si >= 0 && keys.lo <= own && own < keys.hi &&
                          b.slot_mapping[t] >= 0;
  const T* kc = static_cast<const T*>(a.k_cache);
  const T* vc = static_cast<const T*>(a.v_cache);
  LaneSlice<HD, T> kk[kKeysPerStep], vv[kKeysPerStep];
  auto load_rows = [&] {
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) {
      kk[u].load(kc + off[u], lane, writes_own);
      vv[u].load(vc + off[u], lane, writes_own);
    }
  };
  // With the preparation folded in, a warp whose first rows all lie before this step's tokens
  // (written by earlier steps, which are complete) loads them before the wait, so their
  // latency overlaps the kernels before. (Valid for any batch; kept to the folded form, the
  // switched one, until it has run on a GPU.)
  const bool early = a.fold_prep && work && first < keys.hi &&
                     min(first + kKeysPerStep, keys.hi) <= seq.num_computed;
  if (early) load_rows();
  __shared__ float sm_cs[HD / 2], sm_sn[HD / 2], sm_k[HD];
  if (a.fold_prep && work && si >= 0) rope_table<HD>(a.prep, static_cast<float>(b.positions[t]), sm_cs, sm_sn);
  pdl_wait();
  if (!work) return;

  if (a.fold_prep) {
    // q of the block's heads (and the own key) normalised, then rotated, rounded to the type
    // prepare_attention_inputs stores, scaled.
    const AttentionPrepArgs& p = a.prep;
    if (si >= 0) {
      for (int g = warp; g < G; g += kWarps)
        norm_row<HD>(p.q_and_gate, p.q_dt, (static_cast<int64_t>(t) * a.hq + h0 + g) * 2 * HD,
                     p.q_norm, p.w_dt, p.eps, lane, sm_q[g]);
      if (writes_own && warp == G % kWarps)
        norm_row<HD>(p.k_raw, p.k_dt, (static_cast<int64_t>(t) * a.hkv + kvh) * HD, p.k_norm,
                     p.w_dt, p.eps, lane, sm_k);
    }
    __syncthreads();
    if (si >= 0) {
      for (int g = 0; g < G; ++g)
        rotate_row<HD>(sm_q[g], p.rotary_dim, sm_cs, sm_sn, threadIdx.x, blockDim.x,
                       [&](int e, float y) { sm_q[g][e] = to_f(static_cast<T>(y)) * a.scale; });
      if (writes_own) {
        const int64_t at = (static_cast<int64_t>(b.slot_mapping[t]) * a.hkv + kvh) * HD;
        rotate_row<HD>(sm_k, p.rotary_dim, sm_cs, sm_sn, threadIdx.x, blockDim.x,
                       [&](int e, float y) { st(p.cache_k, p.cache_dt, at + e, y); });
        for (int e = threadIdx.x; e < HD; e += blockDim.x)
          st(p.cache_v, p.cache_dt, at + e,
             ld(p.v, p.v_dt, (static_cast<int64_t>(t) * a.hkv + kvh) * HD + e));
      }
    }
    __syncthreads();  // q staged; the own key and value written (visible to the block)
    if (first < keys.hi && !early) load_rows();
  } else {
    if (first < keys.hi && !early) load_rows();  // the first step's rows fly while q is staged
    const T* q = static_cast<const T*>(a.q) + (static_cast<int64_t>(t) * a.hq + h0) * HD;
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x) sm_q[i / HD][i % HD] = to_f(q[i]) * a.scale;
  }
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int e = 0; e < V; ++e) sm_o[warp][g][lane * V + e] = 0.0f;
  }
  if (lane < G) {
    sm_m[warp][lane] = -FLT_MAX;
    sm_l[warp][lane] = 0.0f;
  }
  __syncthreads();

  for (int j0 = first; j0 < keys.hi; j0 += kStride) {
    if (j0 != first) load_rows();
    // The next step's table reads go out while these rows are in flight.
    if (j0 + kStride < keys.hi) key_offsets(a, table, kvh, HD, keys, j0 + kStride, off);
#pragma unroll 2
    for (int g = 0; g < G; ++g) {
      float qg[V], o[V];
#pragma unroll
      for (int e = 0; e < V; ++e) {
        qg[e] = sm_q[g][lane * V + e];
        o[e] = sm_o[warp][g][lane * V + e];
      }
      float sc[kKeysPerStep];
      const float m_old = sm_m[warp][g];
      float m_new = m_old;
#pragma unroll
      for (int u = 0; u < kKeysPerStep; ++u) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < V; ++e) dot += qg[e] * kk[u].at(e);
        sc[u] = warp_sum<32>(dot);
        if (j0 + u < keys.hi) m_new = fmaxf(m_new, sc[u]);
      }
      const float corr = __expf(m_old - m_new);
      float l = sm_l[warp][g] * corr;
#pragma unroll
      for (int e = 0; e < V; ++e) o[e] *= corr;
#pragma unroll
      for (int u = 0; u < kKeysPerStep; ++u) {
        const float pr = j0 + u < keys.hi ? __expf(sc[u] - m_new) : 0.0f;
        l += pr;
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] += pr * vv[u].at(e);
      }
#pragma unroll
      for (int e = 0; e < V; ++e) sm_o[warp][g][lane * V + e] = o[e];
      __syncwarp();  // every lane has read this head's m and l before lane 0 replaces them
      if (lane == 0) {
        sm_m[warp][g] = m_new;
        sm_l[warp][g] = l;
      }
      __syncwarp();
    }
  }
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    float M = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float factor[kWarps];  // e^{m_w - M}: each warp's rescaling, once for l and every column
    float L = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      factor[w] = __expf(sm_m[w][g] - M);
      L += sm_l[w][g] * factor[w];
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    const int64_t out_row = static_cast<int64_t>(t) * a.hq + h0 + g, out_off = out_row * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
      float o = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) o += sm_o[w][g][d] * factor[w];
      if (splits.num_splits > 1)
        a.partial_o[static_cast<int64_t>(split) * b.num_tokens * a.hq * HD + out_off + d] = o * inv;
      else
        store_out(a, out_row, d, o * inv);
    }
    if (splits.num_splits > 1 && threadIdx.x == 0) {
      const int64_t ml = (static_cast<int64_t>(split) * b.num_tokens * a.hq + t * a.hq + h0 + g) * 2;
      a.partial_ml[ml] = L > 0.0f ? M : -FLT_MAX;
      a.partial_ml[ml + 1] = L;
    }
  }
}

// out[t, h] = Σ_s w_s o_s / Σ_s w_s with w_s = e^{m_s − M} l_s: one block per (row, head); the
// split weights go to shared memory once (thread s reads split s). Then the threads split into
// groups of head_dim/4 (one float4 column each), each group summing every groups-th split, so
// a thread has up to 8 independent loads in flight; shared memory adds the groups up.
constexpr int kCombineThreads = 256;
static_assert(kCombineThreads >= kDecodeMaxSplits, "one thread per split's weight");
__global__ void __launch_bounds__(kCombineThreads)
    attention_combine_kernel(AttnArgs a, DeviceBatch b, int num_tokens) {
  __shared__ float weight[kDecodeMaxSplits];
  __shared__ float scratch[32];
  __shared__ float4 group_sum[kCombineThreads];
  const int t = blockIdx.x, h = blockIdx.y;
  // Metadata before the wait (see attention_simt_kernel), partials after it.
  const int si = b.token_seq[t];
  const bool flash_row = si >= 0 && b.seqs[si].query_len >= a.simt_skip_query_len;
  // A flash row has flash-wgmma's splits (or none: that kernel wrote out), a simt row the simt
  // kernel's (one on a graph replay of a short context: the kernel wrote out).
  const int num_splits = flash_row ? a.flash_splits : launch_splits(a, b).num_splits;
  const float* partial_o = flash_row ? a.flash_partial_o : a.partial_o;
  const float* partial_ml = flash_row ? a.flash_partial_ml : a.partial_ml;
  pdl_wait();
  if (num_splits == 1) return;
  const int64_t row = static_cast<int64_t>(t) * a.hq + h;
  const int64_t plane = static_cast<int64_t>(num_tokens) * a.hq;
  const int s = threadIdx.x;
  float ms = -FLT_MAX, ls = 0.0f;
  if (s < num_splits) {
    ls = partial_ml[(s * plane + row) * 2 + 1];
    ms = ls > 0.0f ? partial_ml[(s * plane + row) * 2] : -FLT_MAX;
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
  const int columns = a.hd / 4;  // head_dim is 32..256, so 8..64 float4 columns
  const int groups = kCombineThreads / columns;
  const int c = threadIdx.x % columns, g = threadIdx.x / columns;
  float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  const float4* po = reinterpret_cast<const float4*>(partial_o + row * a.hd) + c;
  const int64_t split_stride = plane * a.hd / 4;  // float4s from one split's row to the next
#pragma unroll 8
  for (int j = g; j < num_splits; j += groups) {
    const float4 v = po[j * split_stride];
    const float w = weight[j];
    o.x += w * v.x;
    o.y += w * v.y;
    o.z += w * v.z;
    o.w += w * v.w;
  }
  group_sum[threadIdx.x] = o;
  __syncthreads();
  if (g != 0) return;
  for (int k = 1; k < groups; ++k) {
    const float4 v = group_sum[k * columns + c];
    o.x += v.x;
    o.y += v.y;
    o.z += v.z;
    o.w += v.w;
  }
  store_out(a, row, 4 * c + 0, o.x * inv);
  store_out(a, row, 4 * c + 1, o.y * inv);
  store_out(a, row, 4 * c + 2, o.z * inv);
  store_out(a, row, 4 * c + 3, o.w * inv);
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
  if (a.num_splits > 1 || a.flash_splits > 1) launch_attention_combine(a, b, s);
}

void launch_attention_combine(const AttnArgs& a, const DeviceBatch& b, cudaStream_t s) {
  if (b.num_tokens == 0) return;
  launch_pdl(attention_combine_kernel, dim3(b.num_tokens, a.hq), kCombineThreads, 0, s, a, b,
             b.num_tokens);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
