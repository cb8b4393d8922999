// The gated delta rule, chunked form (research/qwen35.md §2.3; the WY / UT-transform design of
// flash-linear-attention's chunk_gated_delta_rule), for multi-token sequences without snapshots.
// Per chunk of C tokens with γ the chunk-local cumulative log decay, S₀ the state before it:
//   A  = strict_lower(diag(β) K Kᵀ ⊙ Γ),  Γ_rs = e^{γ_r − γ_s}
//   Tβ = (I + A)^-1 diag(β)
//   V' = Tβ (V − diag(e^γ) K S₀)           (= U − W S₀ of the CPU reference, without forming W)
//   O  = diag(e^γ) Q S₀ + (Q Kᵀ ⊙ Γ ⊙ 1[s ≤ r]) V'
//   S  = e^{γ_C} S₀ + (diag(e^{γ_C − γ}) K)ᵀ V'
// The value columns of S evolve independently, so one CTA runs one (sequence, value head,
// 32 value columns) through all its chunks; the column-independent parts (A, its inverse,
// Q Kᵀ) are recomputed by each column block, which is cheap next to the state GEMMs.
// GEMMs use mma.sync m16n8k8 TF32 with f32 accumulation (3xTF32, about f32-exact, when the
// inputs are f32: the checking mode); the triangular solve is f32 (a thread per column of T).
// The state stays in registers as mma accumulators across chunks, mirrored in shared memory
// for the K S₀ / Q S₀ products.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kChunk = 32;     // tokens per chunk (= warp size: one lane per row in the scans)
constexpr int kColBlock = 32;  // value columns per CTA
constexpr int kWarps = 8;      // each owns one 16x8 tile of every [C, C] and [C, kColBlock] product
constexpr int kThreads = kWarps * 32;
static_assert(kChunk == 32 && (kChunk / 16) * (kColBlock / 8) == kWarps, "tile map");

// Shared-memory leading dimensions (floats), padded so the mma fragment loads avoid bank
// conflicts: rows read as A operands want ld ≡ 4 (mod 32), rows read as B operands ≡ 8.
template <int DK>
struct ChunkLayout {
  static constexpr int ldk = DK + 4;          // Q, K [C][DK]
  static constexpr int ldv = kColBlock + 8;   // S [DK][BV], X, V' [C][BV]
  static constexpr int ldc = kChunk + 4;      // Tβ, P [C][C]
  static constexpr int q = 0;
  static constexpr int k = q + kChunk * ldk;
  static constexpr int s = k + kChunk * ldk;
  static constexpr int x = s + DK * ldv;
  static constexpr int vn = x + kChunk * ldv;
  static constexpr int t = vn + kChunk * ldv;
  static constexpr int p = t + kChunk * ldc;
  static constexpr int gam = p + kChunk * ldc;   // γ_r
  static constexpr int egam = gam + kChunk;      // e^{γ_r}
  static constexpr int kdec = egam + kChunk;     // e^{γ_C − γ_r}
  static constexpr int beta = kdec + kChunk;
  static constexpr int floats = beta + kChunk;
  static constexpr size_t bytes = floats * sizeof(float);
};

__device__ __forceinline__ uint32_t tf32_bits(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void mma_tf32(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// c (a 16x8 tile) += A B over K (a multiple of 8). a_at(row 0..15, k) and b_at(k, col 0..7)
// read the operands (shared memory, any layout). Accumulator element e of a lane is at row
// g + 8 (e / 2), column 2 t + e % 2 with g = lane / 4, t = lane % 4 (PTX m16n8k8 layout).
// PRECISE splits each operand into a TF32 head and tail (3 products): about f32 accuracy.
template <int K, bool PRECISE, class AAt, class BAt>
__device__ __forceinline__ void mma_tile(float c[4], AAt a_at, BAt b_at) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll 2  // bounded: fully unrolled dk = 128 products hold too many fragments live
  for (int k0 = 0; k0 < K; k0 += 8) {
    const float af[4] = {a_at(g, k0 + t), a_at(g + 8, k0 + t), a_at(g, k0 + t + 4),
                         a_at(g + 8, k0 + t + 4)};
    const float bf[2] = {b_at(k0 + t, g), b_at(k0 + t + 4, g)};
    uint32_t ah[4], bh[2];
#pragma unroll
    for (int i = 0; i < 4; ++i) ah[i] = tf32_bits(af[i]);
#pragma unroll
    for (int i = 0; i < 2; ++i) bh[i] = tf32_bits(bf[i]);
    if constexpr (PRECISE) {
      uint32_t al[4], bl[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) al[i] = tf32_bits(af[i] - __uint_as_float(ah[i]));
#pragma unroll
      for (int i = 0; i < 2; ++i) bl[i] = tf32_bits(bf[i] - __uint_as_float(bh[i]));
      mma_tf32(c, al, bh);
      mma_tf32(c, ah, bl);
    }
    mma_tf32(c, ah, bh);
  }
}

__device__ __forceinline__ int frag_row(int e) { return ((threadIdx.x & 31) >> 2) + 8 * (e >> 1); }
__device__ __forceinline__ int frag_col(int e) { return 2 * (threadIdx.x & 3) + (e & 1); }

// Q and K are prefetched in their storage type (bf16 halves the registers that takes).
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <int DK, bool PRECISE, class QK>
__global__ void __launch_bounds__(kThreads, 2)  // two CTAs per SM: 192 CTAs at batch 1 fit
    delta_chunked_kernel(DeltaArgs a, DeviceBatch b) {
  using Lay = ChunkLayout<DK>;
  constexpr int C = kChunk, BV = kColBlock;
  constexpr int ldk = Lay::ldk, ldv = Lay::ldv, ldc = Lay::ldc;
  constexpr int kStateTiles = (DK / 16) * (BV / 8);
  constexpr int kStateTilesPerWarp = (kStateTiles + kWarps - 1) / kWarps;
  extern __shared__ float smem[];
  float* Qs = smem + Lay::q;
  float* Ks = smem + Lay::k;
  float* Ss = smem + Lay::s;
  float* Xs = smem + Lay::x;
  float* Vn = smem + Lay::vn;
  float* Tb = smem + Lay::t;
  float* Ps = smem + Lay::p;
  float* gam = smem + Lay::gam;
  float* egam = smem + Lay::egam;
  float* kdec = smem + Lay::kdec;
  float* bet = smem + Lay::beta;

  const SeqInfo seq = b.seqs[blockIdx.x];
  // Verify blocks (snapshots) and short sequences are the recurrent kernel's.
  if (seq.snapshot_offset >= 0 || seq.query_len < a.chunk_min_len || seq.query_len == 0) return;
  const int h = blockIdx.y, j0 = blockIdx.z * BV, dv = a.dv;
  const int kh = h / (a.hv / a.hk);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  // This warp's 16x8 tile of the [C, C] and [C, BV] products.
  const int mr = (warp / (BV / 8)) * 16, nc = (warp % (BV / 8)) * 8;
  float* slot = a.state + (static_cast<int64_t>(seq.state_slot) * a.hv + h) * DK * dv;

  // The state block S [DK, BV] as accumulator tiles: tile id = warp + kWarps n.
  float S[kStateTilesPerWarp][4];
#pragma unroll
  for (int n = 0; n < kStateTilesPerWarp; ++n) {
    const int tile = warp + kWarps * n;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      S[n][e] = 0.0f;
      if (tile < kStateTiles) {
        const int i = (tile / (BV / 8)) * 16 + frag_row(e), c = (tile % (BV / 8)) * 8 + frag_col(e);
        if (seq.num_computed > 0 && j0 + c < dv) S[n][e] = slot[static_cast<int64_t>(i) * dv + j0 + c];
        Ss[i * ldv + c] = S[n][e];
      }
    }
  }
  const float q_scale = rsqrtf(static_cast<float>(DK));

  // The next chunk's inputs are fetched into registers while the current one computes; rows
  // past the sequence are zero (k = v = 0, g = β = 0: they change nothing).
  constexpr int kQkPerThread = C * DK / kThreads, kVPerThread = C * BV / kThreads;
  static_assert(C * DK % kThreads == 0 && C * BV % kThreads == 0, "load split");
  QK next_q[kQkPerThread], next_k[kQkPerThread];
  float next_v[kVPerThread], next_g = 0.0f, next_beta = 0.0f;
  const QK* q_in = static_cast<const QK*>(a.q);
  const QK* k_in = static_cast<const QK*>(a.k);
  auto fetch = [&](int c0) {
    const int L = min(C, seq.query_len - c0);
    const int64_t row0 = seq.query_start + c0;
#pragma unroll
    for (int n = 0; n < kQkPerThread; ++n) {
      const int idx = tid + n * kThreads, r = idx / DK, i = idx % DK;
      const int64_t src = ((row0 + r) * a.hk + kh) * DK + i;
      next_q[n] = r < L ? q_in[src] : QK(0.0f);
      next_k[n] = r < L ? k_in[src] : QK(0.0f);
    }
#pragma unroll
    for (int n = 0; n < kVPerThread; ++n) {
      const int idx = tid + n * kThreads, r = idx / BV, c = idx % BV;
      next_v[n] = r < L && j0 + c < dv ? ld(a.v, a.v_dt, ((row0 + r) * a.hv + h) * dv + j0 + c)
                                       : 0.0f;
    }
    if (warp == 0) {
      next_g = lane < L ? ld(a.g, a.g_dt, (row0 + lane) * a.hv + h) : 0.0f;
      next_beta = lane < L ? ld(a.beta, a.beta_dt, (row0 + lane) * a.hv + h) : 0.0f;
    }
  };
  fetch(0);

  for (int c0 = 0; c0 < seq.query_len; c0 += C) {
    const int L = min(C, seq.query_len - c0);
    const int64_t row0 = seq.query_start + c0;
    __syncthreads();  // the previous chunk's readers are done (and Ss holds S₀)
#pragma unroll
    for (int n = 0; n < kQkPerThread; ++n) {
      const int idx = tid + n * kThreads, r = idx / DK, i = idx % DK;
      Qs[r * ldk + i] = to_f32(next_q[n]);
      Ks[r * ldk + i] = to_f32(next_k[n]);
    }
#pragma unroll
    for (int n = 0; n < kVPerThread; ++n) {
      const int idx = tid + n * kThreads;
      Xs[(idx / BV) * ldv + idx % BV] = next_v[n];
    }
    if (warp == 0) {  // inclusive scan of g over the chunk: γ
      float gv = next_g;
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const float up = __shfl_up_sync(0xffffffffu, gv, off);
        if (lane >= off) gv += up;
      }
      const float last = __shfl_sync(0xffffffffu, gv, 31);
      gam[lane] = gv;
      egam[lane] = expf(gv);
      kdec[lane] = expf(last - gv);
      bet[lane] = next_beta;
    }
    __syncthreads();
    if (c0 + C < seq.query_len) fetch(c0 + C);  // in flight while this chunk computes

    // L2-normalise the q and k rows (a warp per row); q also carries dk^-1/2.
    for (int row = warp; row < 2 * C; row += kWarps) {
      float* x = row < C ? Qs + row * ldk : Ks + (row - C) * ldk;
      float ss = 0.0f;
      for (int i = lane; i < DK; i += 32) ss += x[i] * x[i];
      ss = warp_sum<32>(ss);
      const float scale = rsqrtf(ss + 1e-6f) * (row < C ? q_scale : 1.0f);
      for (int i = lane; i < DK; i += 32) x[i] *= scale;
    }
    __syncthreads();

    // A (into Tb) and P; X = V − e^γ K S₀; O starts as e^γ Q S₀ (kept in registers).
    float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    {
      float kk[4] = {0.0f, 0.0f, 0.0f, 0.0f}, qk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (nc < mr + 16) {  // tiles wholly above the diagonal are zero
        auto k_t = [&](int i, int s) { return Ks[(nc + s) * ldk + i]; };
        mma_tile<DK, PRECISE>(kk, [&](int r, int i) { return Ks[(mr + r) * ldk + i]; }, k_t);
        mma_tile<DK, PRECISE>(qk, [&](int r, int i) { return Qs[(mr + r) * ldk + i]; }, k_t);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = mr + frag_row(e), s = nc + frag_col(e);
        const float decay = s <= r ? expf(gam[r] - gam[s]) : 0.0f;
        Tb[r * ldc + s] = s < r ? bet[r] * kk[e] * decay : 0.0f;
        Ps[r * ldc + s] = qk[e] * decay;
      }
      float ks[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      auto s_at = [&](int i, int c) { return Ss[i * ldv + nc + c]; };
      mma_tile<DK, PRECISE>(ks, [&](int r, int i) { return Ks[(mr + r) * ldk + i]; }, s_at);
      mma_tile<DK, PRECISE>(o, [&](int r, int i) { return Qs[(mr + r) * ldk + i]; }, s_at);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = mr + frag_row(e), c = nc + frag_col(e);
        Xs[r * ldv + c] -= egam[r] * ks[e];
        o[e] *= egam[r];
      }
    }
    __syncthreads();

    // Tβ = (I + A)^-1 diag(β): lane s solves column s by forward substitution,
    // T[r, s] = δ_rs − Σ_{m<r} A[r, m] T[m, s]; the A rows are broadcast reads.
    if (warp == 0) {
      const int s = lane;
      float tcol[C];
#pragma unroll
      for (int r = 0; r < C; ++r) {
        float acc = 0.0f;
#pragma unroll
        for (int m = 0; m < r; ++m) acc -= Tb[r * ldc + m] * tcol[m];
        tcol[r] = r == s ? 1.0f : acc;
      }
      __syncwarp();
      const float beta_s = bet[s];
#pragma unroll
      for (int r = 0; r < C; ++r) Tb[r * ldc + s] = tcol[r] * beta_s;
    }
    __syncthreads();

    // V' = Tβ X
    {
      float vn[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      mma_tile<C, PRECISE>(vn, [&](int r, int m) { return Tb[(mr + r) * ldc + m]; },
                           [&](int m, int c) { return Xs[m * ldv + nc + c]; });
#pragma unroll
      for (int e = 0; e < 4; ++e) Vn[(mr + frag_row(e)) * ldv + nc + frag_col(e)] = vn[e];
    }
    __syncthreads();

    // O += P V' (stored); S = e^{γ_C} S₀ + (diag(e^{γ_C − γ}) K)ᵀ V'.
    mma_tile<C, PRECISE>(o, [&](int r, int m) { return Ps[(mr + r) * ldc + m]; },
                         [&](int m, int c) { return Vn[m * ldv + nc + c]; });
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = mr + frag_row(e), c = nc + frag_col(e);
      if (r < L && j0 + c < dv) st(a.out, a.out_dt, ((row0 + r) * a.hv + h) * dv + j0 + c, o[e]);
    }
    const float chunk_decay = egam[C - 1];
#pragma unroll
    for (int n = 0; n < kStateTilesPerWarp; ++n) {
      const int tile = warp + kWarps * n;
      if (tile >= kStateTiles) continue;
      const int ti = (tile / (BV / 8)) * 16, tc = (tile % (BV / 8)) * 8;
#pragma unroll
      for (int e = 0; e < 4; ++e) S[n][e] *= chunk_decay;
      mma_tile<C, PRECISE>(S[n], [&](int i, int r) { return Ks[r * ldk + ti + i] * kdec[r]; },
                           [&](int r, int c) { return Vn[r * ldv + tc + c]; });
#pragma unroll
      for (int e = 0; e < 4; ++e) Ss[(ti + frag_row(e)) * ldv + tc + frag_col(e)] = S[n][e];
    }
  }

#pragma unroll
  for (int n = 0; n < kStateTilesPerWarp; ++n) {
    const int tile = warp + kWarps * n;
    if (tile >= kStateTiles) continue;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = (tile / (BV / 8)) * 16 + frag_row(e), c = (tile % (BV / 8)) * 8 + frag_col(e);
      if (j0 + c < dv) slot[static_cast<int64_t>(i) * dv + j0 + c] = S[n][e];
    }
  }
}

template <int DK, bool PRECISE, class QK>
void launch_chunked(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  constexpr size_t smem = ChunkLayout<DK>::bytes;
  static bool configured = false;  // opt in to more than 48 KB once per instantiation
  if (!configured) {
    BF_CUDA_CHECK(cudaFuncSetAttribute(delta_chunked_kernel<DK, PRECISE, QK>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
    configured = true;
  }
  dim3 grid(b.num_seqs, a.hv, (a.dv + kColBlock - 1) / kColBlock);
  delta_chunked_kernel<DK, PRECISE, QK><<<grid, kThreads, smem, s>>>(a, b);
}

template <int DK>
void launch_chunked_dk(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  // f32 inputs are the exact checking mode: 3xTF32; bf16 inputs carry 2^-9 rounding already.
  if (a.q_dt == kDtF32)
    launch_chunked<DK, true, float>(a, b, s);
  else
    launch_chunked<DK, false, __nv_bfloat16>(a, b, s);
}

}  // namespace

size_t delta_chunked_smem_bytes(int dk) {
  switch (dk) {
    case 16: return ChunkLayout<16>::bytes;
    case 32: return ChunkLayout<32>::bytes;
    case 64: return ChunkLayout<64>::bytes;
    case 128: return ChunkLayout<128>::bytes;
    default: return 0;
  }
}

void launch_delta_rule_chunked(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s) {
  BF_CHECK(a.dv >= 1, "gated_delta_rule: bad v_head_dim ", a.dv);
  BF_CHECK(a.chunk_min_len >= 2, "gated_delta_rule: chunk_min_len must be >= 2");
  BF_CHECK(a.q_dt == a.k_dt, "gated_delta_rule: the chunked kernel needs q and k of one dtype");
  if (b.num_seqs == 0) return;
  switch (a.dk) {
    case 16: launch_chunked_dk<16>(a, b, s); break;
    case 32: launch_chunked_dk<32>(a, b, s); break;
    case 64: launch_chunked_dk<64>(a, b, s); break;
    case 128: launch_chunked_dk<128>(a, b, s); break;
    default: fail("gated_delta_rule: k_head_dim ", a.dk, " not supported by the chunked kernel");
  }
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
