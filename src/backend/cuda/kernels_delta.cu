// The gated delta rule, recurrent form (research/qwen35.md §2.3), one block per
// (sequence, value head) and one thread per value column j holding S[:, j] (dk floats) in
// registers: S = e^g S; δ = β (v − Sᵀk); S += k δᵀ; o = Sᵀq. q and k are L2-normalised
// (rsqrt(Σx² + 1e-6)), q scaled by dk^-1/2. Verify mode writes S after each token to its
// snapshot slot (the initial state is read first, so the state slot may be listed).
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

template <int DK>
__global__ void delta_recurrent_kernel(DeltaArgs a, DeviceBatch b) {
  __shared__ float qs[DK], ks[DK], scratch[32];
  const SeqInfo seq = b.seqs[blockIdx.x];
  const int h = blockIdx.y;
  if (seq.query_len == 0) return;
  const int kh = h / (a.hv / a.hk);
  const int dv = a.dv;
  // Threads past dv (dv not a multiple of 32) only help with the reductions.
  const bool col = threadIdx.x < dv;
  const int j = col ? threadIdx.x : 0;
  const int64_t state_size = static_cast<int64_t>(DK) * dv;
  float* slot = a.state + (static_cast<int64_t>(seq.state_slot) * a.hv + h) * state_size;
  float S[DK];
#pragma unroll
  for (int i = 0; i < DK; ++i) S[i] = seq.num_computed > 0 && col ? slot[i * dv + j] : 0.0f;
  const bool snapshots = seq.snapshot_offset >= 0;
  const float q_scale = rsqrtf(static_cast<float>(DK));
  for (int t = 0; t < seq.query_len; ++t) {
    const int64_t row = seq.query_start + t;
    float qq = 0.0f, kk = 0.0f;
    __syncthreads();  // previous token's reads of qs/ks are done
    for (int i = threadIdx.x; i < DK; i += blockDim.x) {
      const float qv = ld(a.q, a.q_dt, (row * a.hk + kh) * DK + i);
      const float kv = ld(a.k, a.k_dt, (row * a.hk + kh) * DK + i);
      qs[i] = qv;
      ks[i] = kv;
      qq += qv * qv;
      kk += kv * kv;
    }
    const float q_norm = rsqrtf(block_sum(qq, scratch) + 1e-6f) * q_scale;
    const float k_norm = rsqrtf(block_sum(kk, scratch) + 1e-6f);
    const float decay = expf(ld(a.g, a.g_dt, row * a.hv + h));
    const float beta = ld(a.beta, a.beta_dt, row * a.hv + h);
    const float v = col ? ld(a.v, a.v_dt, (row * a.hv + h) * dv + j) : 0.0f;
    float kv_mem = 0.0f;
#pragma unroll
    for (int i = 0; i < DK; ++i) {
      S[i] *= decay;
      kv_mem += S[i] * ks[i];
    }
    const float delta = (v - kv_mem * k_norm) * beta;
    float o = 0.0f;
#pragma unroll
    for (int i = 0; i < DK; ++i) {
      S[i] += ks[i] * k_norm * delta;
      o += S[i] * qs[i];
    }
    if (col) st(a.out, a.out_dt, (row * a.hv + h) * dv + j, o * q_norm);
    if (snapshots && col) {
      const int32_t snap = b.snapshots[seq.snapshot_offset + t];
      float* dst = a.state + (static_cast<int64_t>(snap) * a.hv + h) * state_size;
#pragma unroll
      for (int i = 0; i < DK; ++i) dst[i * dv + j] = S[i];
    }
  }
  if (!snapshots && col) {
#pragma unroll
    for (int i = 0; i < DK; ++i) slot[i * dv + j] = S[i];
  }
}

}  // namespace

void launch_delta_rule_recurrent(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  BF_CHECK(a.dv >= 1 && a.dv <= 1024, "gated_delta_rule: v_head_dim ", a.dv,
           " must be at most 1024 on CUDA");
  if (b.num_seqs == 0) return;
  dim3 grid(b.num_seqs, a.hv);
  const int threads = (a.dv + 31) / 32 * 32;
  switch (a.dk) {
    case 16: delta_recurrent_kernel<16><<<grid, threads, 0, s>>>(a, b); break;
    case 32: delta_recurrent_kernel<32><<<grid, threads, 0, s>>>(a, b); break;
    case 64: delta_recurrent_kernel<64><<<grid, threads, 0, s>>>(a, b); break;
    case 128: delta_recurrent_kernel<128><<<grid, threads, 0, s>>>(a, b); break;
    default: fail("gated_delta_rule: k_head_dim ", a.dk, " not supported on CUDA (16/32/64/128)");
  }
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
