// The attention inputs' preparation in one pass (Backend::prepare_attention_inputs): per token
// and head, the zero-centred RMSNorm of q (read in place from the [q | gate] projection rows)
// and of k, partial NeoX RoPE, q to its own tensor, k and v into the paged cache. Unfused this
// is a slice, two norms, two RoPEs and a cache write: six launches and five extra passes over
// q and k per attention layer.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kPrepWarps = 8;    // heads per block
constexpr int kPrepMaxHd = 256;  // elements per head a warp holds (8 per lane)

// One warp per (token, head). Heads [0, hq) are query heads, [hq, hq + hkv) key heads (which
// also copy their v row into the cache).
__global__ void attention_prep_kernel(AttentionPrepArgs a, DeviceBatch b) {
  __shared__ float rows[kPrepWarps][kPrepMaxHd];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = blockIdx.x;
  const int head = blockIdx.y * kPrepWarps + warp;
  const bool is_q = head < a.hq;
  const int h = is_q ? head : head - a.hq;
  // Before the wait: the batch's metadata (on the device before the step's first kernel) and
  // the norm's weights (never written by a kernel); the projection rows after it.
  const bool live = head < a.hq + a.hkv;
  const int slot = live ? b.slot_mapping[t] : -1;
  const float pos = live ? static_cast<float>(b.positions[t]) : 0.0f;
  const void* w = is_q ? a.q_norm : a.k_norm;
  float norm_w[kPrepMaxHd / 32];
#pragma unroll
  for (int i = 0; i < kPrepMaxHd / 32; ++i) {
    const int e = lane + 32 * i;
    norm_w[i] = live && e < a.hd ? 1.0f + ld(w, a.w_dt, e) : 0.0f;
  }
  pdl_wait();
  if (!live) return;
  if (!is_q && slot < 0) return;  // padding row: nothing to write
  const void* src = is_q ? a.q_and_gate : a.k_raw;
  const int src_dt = is_q ? a.q_dt : a.k_dt;
  // q rows are [q | gate] per head (2*hd wide); k rows are hd wide.
  const int64_t src_base = is_q ? (t * a.hq + h) * 2 * a.hd : (t * a.hkv + h) * a.hd;
  float* row = rows[warp];
  float sum_sq = 0.0f;
  for (int e = lane; e < a.hd; e += 32) {
    const float x = ld(src, src_dt, src_base + e);
    row[e] = x;
    sum_sq += x * x;
  }
  const float scale = rsqrtf(warp_sum<32>(sum_sq) / static_cast<float>(a.hd) + a.eps);
#pragma unroll
  for (int i = 0; i < kPrepMaxHd / 32; ++i) {
    const int e = lane + 32 * i;
    if (e < a.hd) row[e] *= scale * norm_w[i];
  }
  __syncwarp();
  // RoPE on the first rotary_dim elements; element e pairs with e + half (or e - half).
  const int half = a.rotary_dim / 2;
  float out[kPrepMaxHd / 32];
#pragma unroll
  for (int i = 0; i < kPrepMaxHd / 32; ++i) {
    const int e = lane + 32 * i;
    if (e >= a.hd) break;
    float y = row[e];
    if (e < a.rotary_dim) {
      const int pair = e < half ? e : e - half;
      // As the rope kernel (HF in f32): inv_freq = 1 / theta^(2i / rotary_dim).
      const float inv_freq =
          1.0f / powf(a.theta, static_cast<float>(2 * pair) / static_cast<float>(a.rotary_dim));
      float sn, cs;
      sincosf(pos * inv_freq, &sn, &cs);
      y = e < half ? row[e] * cs - row[e + half] * sn : row[e] * cs + row[e - half] * sn;
    }
    out[i] = y;
  }
  const int64_t cache_base = (static_cast<int64_t>(slot) * a.hkv + h) * a.hd;
#pragma unroll
  for (int i = 0; i < kPrepMaxHd / 32; ++i) {
    const int e = lane + 32 * i;
    if (e >= a.hd) break;
    if (is_q) {
      st(a.q_out, a.q_out_dt, (t * a.hq + h) * a.hd + e, out[i]);
    } else {
      st(a.cache_k, a.cache_dt, cache_base + e, out[i]);
      st(a.cache_v, a.cache_dt, cache_base + e, ld(a.v, a.v_dt, (t * a.hkv + h) * a.hd + e));
    }
  }
}

}  // namespace

void launch_attention_prep(const AttentionPrepArgs& a, const DeviceBatch& b, cudaStream_t s) {
  if (b.num_tokens == 0) return;
  BF_CHECK(a.hd <= kPrepMaxHd && a.hd % 2 == 0, "prepare_attention_inputs: head_dim ", a.hd,
           " not supported (even, at most ", kPrepMaxHd, ")");
  const dim3 grid(b.num_tokens, ceil_div(a.hq + a.hkv, kPrepWarps));
  launch_pdl(attention_prep_kernel, grid, kPrepWarps * 32, 0, s, a, b);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
