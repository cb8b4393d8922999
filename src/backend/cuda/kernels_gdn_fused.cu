// The Gated DeltaNet layer between its projections for a batch of single-token decodes, in one
// kernel (it was four: conv1d, gates, the recurrent delta rule, the gated RMSNorm; at batch 1
// their fixed costs were most of the ~17 us a layer took). A block per (sequence, key head)
// owns every conv channel its heads read - q and k of the key head, v of its G value heads -
// so it updates that part of the conv state alone (no other block reads it); the conv outputs
// stay in shared memory in f32. The block's 4 warps then take the G value heads in turn, a lane
// per value column with that column of the recurrent state in registers (128 threads, so 255
// registers each), the same arithmetic as delta_recurrent_kernel; the gated norm sums over the
// 4 warps through shared memory.
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kDk = 128, kDv = 128;
constexpr int kMaxGroup = 8;    // value heads per key head (shared memory for their v)
constexpr int kMaxKernel = 8;   // conv taps

__global__ void __launch_bounds__(128)
    gdn_decode_fused_kernel(GdnDecodeArgs a, DeviceBatch b) {
  pdl_wait();
  __shared__ float s_q[kDk], s_k[kDk], s_v[kMaxGroup][kDv];
  __shared__ float s_sq[kMaxGroup][4];
  const SeqInfo seq = b.seqs[blockIdx.x];
  if (seq.query_len != 1) return;  // the host sends only single-token batches
  const int kh = blockIdx.y;
  const int G = a.hv / a.hk;
  const int64_t t = seq.query_start;
  const int64_t row = t * a.proj_cols;
  const bool has_state = seq.num_computed > 0;
  const int history = a.kernel - 1;

  // Conv1d + SiLU of this block's channels: q (dk), k (dk), v of its G heads (G dv).
  const int channels = 2 * kDk + G * kDv;
  for (int idx = threadIdx.x; idx < channels; idx += blockDim.x) {
    int64_t c;
    float* dst;
    if (idx < kDk) {
      c = static_cast<int64_t>(kh) * kDk + idx;
      dst = &s_q[idx];
    } else if (idx < 2 * kDk) {
      c = a.key_dim + static_cast<int64_t>(kh) * kDk + (idx - kDk);
      dst = &s_k[idx - kDk];
    } else {
      const int j = (idx - 2 * kDk) / kDv, i = (idx - 2 * kDk) % kDv;
      c = 2 * a.key_dim + static_cast<int64_t>(kh * G + j) * kDv + i;
      dst = &s_v[j][i];
    }
    const float input = ld(a.projected, a.proj_dt, row + c);
    float* state =
        a.conv_state + (static_cast<int64_t>(seq.state_slot) * a.conv_dim + c) * history;
    float acc = ld(a.conv_weight, a.conv_w_dt, c * a.kernel + history) * input;
    float win[kMaxKernel];  // constant indices only (unrolled, guarded): registers
#pragma unroll
    for (int j = 0; j < kMaxKernel; ++j) {
      if (j >= history) break;
      win[j] = has_state ? state[j] : 0.0f;
      acc += ld(a.conv_weight, a.conv_w_dt, c * a.kernel + j) * win[j];
    }
#pragma unroll
    for (int j = 0; j < kMaxKernel; ++j) {
      if (j >= history) break;
      state[j] = j + 1 < history ? win[j + 1] : input;
    }
    *dst = siluf_(acc);
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = warp * 32 + lane;  // value column
  // q/k norms (every warp computes them: 4 values per lane).
  float qq = 0.0f, kk = 0.0f, kq = 0.0f;
#pragma unroll
  for (int e = 0; e < kDk / 32; ++e) {
    const float qv = s_q[lane + 32 * e], kv = s_k[lane + 32 * e];
    qq += qv * qv;
    kk += kv * kv;
    kq += kv * qv;
  }
  qq = warp_sum<32>(qq);
  kk = warp_sum<32>(kk);
  kq = warp_sum<32>(kq);
  const float q_norm = rsqrtf(qq + 1e-6f) * rsqrtf(static_cast<float>(kDk));
  const float k_norm = rsqrtf(kk + 1e-6f);
  const int64_t gates = row + a.conv_dim + a.value_dim;  // b, then a, per value head
  // The group's value heads one after another (128 threads: S columns stay in registers).
  for (int j = 0; j < G; ++j) {
    const int vh = kh * G + j;
    // beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias).
    const float b_in = ld(a.projected, a.proj_dt, gates + vh);
    const float a_in =
        ld(a.projected, a.proj_dt, gates + a.hv + vh) + ld(a.dt_bias, a.dt_bias_dt, vh);
    const float softplus = a_in > 20.0f ? a_in : log1pf(expf(a_in));
    const float g = -expf(ld(a.A_log, a.A_log_dt, vh)) * softplus;
    const float beta = 1.0f / (1.0f + expf(-b_in));
    float* S_col =
        a.recurrent_state + (static_cast<int64_t>(seq.state_slot) * a.hv + vh) * kDk * kDv + col;
    float S[kDk];
#pragma unroll
    for (int i = 0; i < kDk; ++i) S[i] = has_state ? S_col[i * kDv] : 0.0f;
    const float decay = expf(g);
    float kv_mem = 0.0f, sq = 0.0f;
#pragma unroll
    for (int i = 0; i < kDk; ++i) {
      S[i] *= decay;
      kv_mem += S[i] * s_k[i];
      sq += S[i] * s_q[i];
    }
    const float delta = (s_v[j][col] - kv_mem * k_norm) * beta * k_norm;  // on the raw k
#pragma unroll
    for (int i = 0; i < kDk; ++i) {
      S[i] += s_k[i] * delta;
      S_col[i * kDv] = S[i];
    }
    const float o = (sq + delta * kq) * q_norm;
    // Gated RMSNorm over the head's 128 columns (the block's 4 warps).
    const float part = warp_sum<32>(o * o);
    if (lane == 0) s_sq[j][warp] = part;
    __syncthreads();
    const float total = s_sq[j][0] + s_sq[j][1] + s_sq[j][2] + s_sq[j][3];
    const float scale = rsqrtf(total / kDv + a.eps);
    const float z =
        ld(a.projected, a.proj_dt, row + a.conv_dim + static_cast<int64_t>(vh) * kDv + col);
    st(a.out, a.out_dt, t * a.hv * kDv + static_cast<int64_t>(vh) * kDv + col,
       ld(a.norm_weight, a.norm_dt, col) * o * scale * siluf_(z));
  }
}

}  // namespace

bool gdn_decode_fused_supported(int dk, int dv, int hk, int hv, int kernel) {
  return dk == kDk && dv == kDv && hk > 0 && hv % hk == 0 && hv / hk <= kMaxGroup &&
         kernel >= 1 && kernel <= kMaxKernel;
}

void launch_gdn_decode_fused(const GdnDecodeArgs& a, const DeviceBatch& b, cudaStream_t s) {
  BF_CHECK(gdn_decode_fused_supported(kDk, kDv, a.hk, a.hv, a.kernel),
           "gdn decode (fused): unsupported shape");
  if (b.num_seqs == 0) return;
  launch_pdl(gdn_decode_fused_kernel, dim3(b.num_seqs, a.hk), 128, 0, s, a, b);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
