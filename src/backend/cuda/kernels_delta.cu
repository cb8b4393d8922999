// The gated delta rule, recurrent form (research/qwen35.md §2.3): S = e^g S; δ = β (v − Sᵀk);
// S += k δᵀ; o = Sᵀq, with q and k L2-normalised (rsqrt(Σx² + 1e-6)) and q scaled by dk^-1/2.
// The value columns of S are independent given q, k, g, β: a warp takes (sequence, value head,
// 32 / LPC columns), LPC lanes per column, each lane holding dk / LPC rows of its column in
// registers (rows seg, seg + LPC, ...: the lanes of a column read adjacent words of q and k in
// shared memory, so no bank conflicts); q/k of the next token are loaded while the current one
// is computed; reductions are warp shuffles, so no block barriers on the per-token path. Several
// lanes per column matter for the multi-token verify of one sequence: with one lane per column a
// 27B layer is 48 blocks of 4 warps, each lane walking 128 rows per token, and the 16 tokens'
// serial chain took ~44 us (bench/NOTES.md); four lanes per column cut each token's chain by 4
// and fill 4x the warps. Verify mode writes S after each token to its snapshot slot (the initial
// state is read first, so the state slot may be listed). When gdn-chunked is selected,
// multi-token sequences without snapshots are its (kernels_delta_chunked.cu).
#include <cstdlib>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

// DV > 0: v_head_dim known at compile time (128 in every Qwen3.5), so each lane's 128 state
// loads and stores take immediate offsets from one address instead of 64-bit address
// arithmetic per element (~1200 fewer instructions on a path every decode step runs 30 times);
// DV == 0: a.dv at run time. LPC: lanes per column (1, 2, 4 or 8; DK a multiple of it).
template <int DK, int DV, int LPC>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    delta_recurrent_kernel(DeltaArgs a, DeviceBatch b) {
  static_assert(32 % LPC == 0 && DK % LPC == 0, "lanes per column must divide 32 and dk");
  constexpr int KPL = (DK + 31) / 32;  // q/k elements per lane when staging them
  constexpr int R = DK / LPC;          // state rows per lane
  constexpr int kCols = 32 / LPC;      // columns per warp
  __shared__ float qk_s[kWarpsPerBlock][2][DK];
  const SeqInfo seq = b.seqs[blockIdx.x];
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int seg = lane % LPC;  // this lane's rows: seg, seg + LPC, ...
  const int dv = DV > 0 ? DV : a.dv;
  const int warp_col0 = (blockIdx.z * kWarpsPerBlock + warp) * kCols;
  const int j_raw = warp_col0 + lane / LPC;
  // Every block waits before it exits, also those with nothing to do: a kernel after this one
  // may rely on this grid's blocks all having passed the wait (bench/NOTES.md, PDL).
  if (seq.query_len == 0 || warp_col0 >= dv ||
      (seq.snapshot_offset < 0 && seq.query_len >= a.chunk_min_len)) {  // the chunked kernel's
    pdl_wait();
    return;
  }
  const bool col = j_raw < dv;
  const int j = col ? j_raw : 0;
  const int kh = h / (a.hv / a.hk);
  const int64_t state_size = static_cast<int64_t>(DK) * dv;
  float* slot = a.state + (static_cast<int64_t>(seq.state_slot) * a.hv + h) * state_size;
  // The state column is read before waiting for the kernels just before (programmatic
  // dependent launch): a slot's recurrent state was last written by this layer's kernel in an
  // earlier forward pass, many launches back, and the batch metadata was uploaded before the
  // pass began; so its 128 loads overlap the gates kernel instead of following it. Through L2
  // (__ldcg), which ptxas keeps above the wait. q, k, v, g and beta come from the kernels just
  // before: read after it.
  float S[R];
  const bool has_state = seq.num_computed > 0 && col;
  const float* state_col = slot + j + static_cast<int64_t>(seg) * dv;
#pragma unroll
  for (int r = 0; r < R; ++r) S[r] = has_state ? __ldcg(state_col + r * LPC * dv) : 0.0f;
  pdl_wait();
  const bool snapshots = seq.snapshot_offset >= 0;
  const float q_scale = rsqrtf(static_cast<float>(DK));
  float* qs = qk_s[warp][0];
  float* ks = qk_s[warp][1];

  // Registers of the next token (prefetched).
  float nq[KPL], nk[KPL], nv, ng, nb;
  auto fetch = [&](int64_t row) {
#pragma unroll
    for (int e = 0; e < KPL; ++e) {
      const int i = lane + 32 * e;
      nq[e] = i < DK ? ld(a.q, a.q_dt, (row * a.hk + kh) * DK + i) : 0.0f;
      nk[e] = i < DK ? ld(a.k, a.k_dt, (row * a.hk + kh) * DK + i) : 0.0f;
    }
    nv = col ? ld(a.v, a.v_dt, (row * a.hv + h) * dv + j) : 0.0f;
    ng = ld(a.g, a.g_dt, row * a.hv + h);
    nb = ld(a.beta, a.beta_dt, row * a.hv + h);
  };
  fetch(seq.query_start);
  for (int t = 0; t < seq.query_len; ++t) {
    const int64_t row = seq.query_start + t;
    float qq = 0.0f, kk = 0.0f, kq = 0.0f;
    __syncwarp();  // the previous token's reads of qs/ks are done
#pragma unroll
    for (int e = 0; e < KPL; ++e) {
      const int i = lane + 32 * e;
      if (i < DK) {
        qs[i] = nq[e];
        ks[i] = nk[e];
      }
      qq += nq[e] * nq[e];
      kk += nk[e] * nk[e];
      kq += nk[e] * nq[e];
    }
    const float v = nv, decay = expf(ng), beta = nb;
    if (t + 1 < seq.query_len) fetch(row + 1);  // in flight while this token computes
    qq = warp_sum<32>(qq);
    kk = warp_sum<32>(kk);
    kq = warp_sum<32>(kq);
    __syncwarp();
    const float q_norm = rsqrtf(qq + 1e-6f) * q_scale;
    const float k_norm = rsqrtf(kk + 1e-6f);
    // With S' = e^g S: kv = S'ᵀk, sq = S'ᵀq; then S'' = S' + k δ and o = S''ᵀq = sq + δ (k·q),
    // so one pass reads q and k and the update pass reads k again (re-read from shared memory
    // rather than held in registers next to S).
    float kv_mem = 0.0f, sq = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      S[r] *= decay;
      kv_mem += S[r] * ks[r * LPC + seg];
      sq += S[r] * qs[r * LPC + seg];
    }
    kv_mem = warp_sum<LPC>(kv_mem);
    sq = warp_sum<LPC>(sq);
    const float delta = (v - kv_mem * k_norm) * beta * k_norm;  // applied to the raw k
    const volatile float* ks_again = ks;
#pragma unroll
    for (int r = 0; r < R; ++r) S[r] += ks_again[r * LPC + seg] * delta;
    const float o = (sq + delta * kq) * q_norm;
    if (col && seg == 0) st(a.out, a.out_dt, (row * a.hv + h) * dv + j, o);
    if (snapshots && col) {
      const int32_t snap = b.snapshots[seq.snapshot_offset + t];
      float* dst = a.state + (static_cast<int64_t>(snap) * a.hv + h) * state_size + j +
                   static_cast<int64_t>(seg) * dv;
#pragma unroll
      for (int r = 0; r < R; ++r) dst[r * LPC * dv] = S[r];
    }
  }
  if (!snapshots && col) {
    float* dst = slot + j + static_cast<int64_t>(seg) * dv;
#pragma unroll
    for (int r = 0; r < R; ++r) dst[r * LPC * dv] = S[r];
  }
}

// Lanes per column for dk: several where a lane would otherwise walk 64+ rows per token, one
// for small dk. BLOCKFLASH_DELTA_LANES_PER_COLUMN=1|2|4|8 pins it (for A/B runs).
int lanes_per_column(int dk) {
  static const int forced = [] {
    const char* e = std::getenv("BLOCKFLASH_DELTA_LANES_PER_COLUMN");
    const int v = e != nullptr ? std::atoi(e) : 0;
    return v == 1 || v == 2 || v == 4 || v == 8 ? v : 0;
  }();
  if (dk < 16) return 1;
  return forced > 0 ? forced : (dk >= 64 ? 4 : 1);
}

template <int DK, int LPC>
void launch_delta_recurrent_lpc(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  const int col_groups = (a.dv + 32 / LPC - 1) / (32 / LPC);
  dim3 grid(b.num_seqs, a.hv, (col_groups + kWarpsPerBlock - 1) / kWarpsPerBlock);
  if (a.dv == 128)
    launch_pdl(delta_recurrent_kernel<DK, 128, LPC>, grid, kWarpsPerBlock * 32, 0, s, a, b);
  else
    launch_pdl(delta_recurrent_kernel<DK, 0, LPC>, grid, kWarpsPerBlock * 32, 0, s, a, b);
}

template <int DK>
void launch_delta_recurrent_dk(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  if constexpr (DK >= 16) {
    switch (lanes_per_column(DK)) {
      case 2: return launch_delta_recurrent_lpc<DK, 2>(a, b, s);
      case 4: return launch_delta_recurrent_lpc<DK, 4>(a, b, s);
      case 8: return launch_delta_recurrent_lpc<DK, 8>(a, b, s);
      default: break;
    }
  }
  launch_delta_recurrent_lpc<DK, 1>(a, b, s);
}

}  // namespace

void launch_delta_rule_recurrent(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  BF_CHECK(a.dv >= 1, "gated_delta_rule: bad v_head_dim ", a.dv);
  if (b.num_seqs == 0) return;
  switch (a.dk) {
    case 16: launch_delta_recurrent_dk<16>(a, b, s); break;
    case 32: launch_delta_recurrent_dk<32>(a, b, s); break;
    case 64: launch_delta_recurrent_dk<64>(a, b, s); break;
    case 128: launch_delta_recurrent_dk<128>(a, b, s); break;
    default: fail("gated_delta_rule: k_head_dim ", a.dk, " not supported on CUDA (16/32/64/128)");
  }
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
