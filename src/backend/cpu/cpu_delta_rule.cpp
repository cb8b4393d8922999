// CPU reference of the gated delta rule (research/qwen35.md §2.3), per (sequence, value head)
// with state S [dk, dv] ("key × value", f32):
//   recurrent: S = e^g S;  δ = β (v − Sᵀk);  S += k δᵀ;  o = Sᵀq
//   chunked (C = 64, multi-token sequences): HF torch_chunk_gated_delta_rule / FLA
//   chunk_gated_delta_rule, one chunk at a time with sgemm; a short last chunk equals HF's
//   zero-padded one (padded tokens have k = 0, β = 0, g = 0 and come after the real ones).
// q and k are L2-normalised per head (x · rsqrt(Σx² + 1e-6)), q scaled by dk^-1/2; value head h
// reads key head h / (Hv / Hk). out may alias v: each head's v rows are read before written.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_util.h"

namespace bf::cpu {
namespace {

constexpr int64_t kChunk = 64;
constexpr float kL2NormEps = 1e-6f;

struct DeltaArgs {
  int64_t num_tokens, hk, hv, dk, dv, num_slots;
  std::vector<float> q_hat;  // [T, Hk, dk] normalised, scaled by dk^-1/2
  std::vector<float> k_hat;  // [T, Hk, dk] normalised
};

DeltaArgs prepare(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                  const Tensor& beta, const GdnDims& dims, const ForwardBatch& batch,
                  const Tensor& state, const Tensor& out, const char* op) {
  BF_CHECK(dims.num_k_heads > 0 && dims.num_v_heads > 0 && dims.k_head_dim > 0 &&
               dims.v_head_dim > 0 && dims.num_v_heads % dims.num_k_heads == 0,
           op, ": bad dims Hk=", dims.num_k_heads, " Hv=", dims.num_v_heads,
           " dk=", dims.k_head_dim, " dv=", dims.v_head_dim, " (Hv must be a multiple of Hk)");
  DeltaArgs a{q.rank() >= 1 ? q.dim(0) : 0, dims.num_k_heads, dims.num_v_heads, dims.k_head_dim,
              dims.v_head_dim, 0, {}, {}};
  check_rows(q, a.num_tokens, a.hk * a.dk, op, "q [T, Hk, dk]");
  check_rows(k, a.num_tokens, a.hk * a.dk, op, "k [T, Hk, dk]");
  check_rows(v, a.num_tokens, a.hv * a.dv, op, "v [T, Hv, dv]");
  check_rows(out, a.num_tokens, a.hv * a.dv, op, "out [T, Hv, dv]");
  check_rows(g, a.num_tokens, a.hv, op, "g [T, Hv]");
  check_rows(beta, a.num_tokens, a.hv, op, "beta [T, Hv]");
  check_f32(state, op, "recurrent_state");
  BF_CHECK(state.rank() == 4 && state.dim(1) == a.hv && state.dim(2) == a.dk &&
               state.dim(3) == a.dv,
           op, ": recurrent_state must be [num_slots, Hv=", a.hv, ", dk=", a.dk, ", dv=", a.dv,
           "], got ", shape_string(state.shape()));
  a.num_slots = state.dim(0);
  check_batch_sequences(batch, a.num_tokens, op);
  for (size_t s = 0; s < batch.seqs.size(); ++s)
    check_state_slot(batch.seqs[s].state_slot, a.num_slots, s, op);

  const float q_scale = 1.0f / std::sqrt(static_cast<float>(a.dk));
  auto l2norm = [&](const Tensor& src, std::vector<float>& dst, float scale) {
    dst.resize(src.numel());
    for (int64_t row = 0; row < a.num_tokens * a.hk; ++row) {
      const float* x = src.f32() + row * a.dk;
      float sum_sq = 0.0f;
      for (int64_t i = 0; i < a.dk; ++i) sum_sq += x[i] * x[i];
      const float inv_norm = 1.0f / std::sqrt(sum_sq + kL2NormEps);
      for (int64_t i = 0; i < a.dk; ++i) dst[row * a.dk + i] = x[i] * inv_norm * scale;
    }
  };
  l2norm(q, a.q_hat, q_scale);
  l2norm(k, a.k_hat, 1.0f);
  return a;
}

// One token of the recurrent form on one head. S: [dk, dv]; q, k: [dk]; v, o: [dv].
void recurrent_step(float* S, const float* q, const float* k, const float* v, float g, float beta,
                    int64_t dk, int64_t dv, std::vector<float>& delta, float* o) {
  const float decay = std::exp(g);
  for (int64_t i = 0; i < dk * dv; ++i) S[i] *= decay;
  for (int64_t j = 0; j < dv; ++j) delta[j] = 0.0f;  // kv_mem = Sᵀ k
  for (int64_t i = 0; i < dk; ++i)
    for (int64_t j = 0; j < dv; ++j) delta[j] += S[i * dv + j] * k[i];
  for (int64_t j = 0; j < dv; ++j) delta[j] = (v[j] - delta[j]) * beta;
  for (int64_t i = 0; i < dk; ++i)
    for (int64_t j = 0; j < dv; ++j) S[i * dv + j] += k[i] * delta[j];
  for (int64_t j = 0; j < dv; ++j) o[j] = 0.0f;  // after reading v: o may alias v
  for (int64_t i = 0; i < dk; ++i)
    for (int64_t j = 0; j < dv; ++j) o[j] += S[i * dv + j] * q[i];
}

// Scratch of one chunk (rows r, s < L ≤ 64), named as in qwen35.md §2.3.
struct ChunkScratch {
  std::vector<float> gamma, Q, K, V, A, T, KB, U, W, Vnew, P, O;
  ChunkScratch(int64_t dk, int64_t dv)
      : gamma(kChunk), Q(kChunk * dk), K(kChunk * dk), V(kChunk * dv), A(kChunk * kChunk),
        T(kChunk * kChunk), KB(kChunk * dk), U(kChunk * dv), W(kChunk * dk), Vnew(kChunk * dv),
        P(kChunk * kChunk), O(kChunk * dv) {}
};

// One chunk of L tokens on one head: O = outputs [L, dv], S advanced past the chunk.
// Q, K [L, dk], V [L, dv], g/beta are gathered into cs by the caller.
void chunk_step(float* S, const float* g, const float* beta, int64_t L, int64_t dk, int64_t dv,
                ChunkScratch& cs) {
  float* gamma = cs.gamma.data();  // chunk-local cumulative log-decay
  float running = 0.0f;
  for (int64_t r = 0; r < L; ++r) gamma[r] = running += g[r];
  const float* Q = cs.Q.data();
  const float* K = cs.K.data();

  // A = strict_lower(diag(β) K Kᵀ ⊙ Γ), Γ_rs = e^{γ_r − γ_s}
  float* A = cs.A.data();
  gemm(false, true, L, L, dk, 1.0f, K, K, 0.0f, A);
  for (int64_t r = 0; r < L; ++r)
    for (int64_t s = 0; s < L; ++s)
      A[r * L + s] = s < r ? beta[r] * A[r * L + s] * std::exp(gamma[r] - gamma[s]) : 0.0f;

  // T = (I + A)^-1, unit lower triangular, by forward substitution row by row:
  // T[r, s] = −A[r, s] − Σ_{s<m<r} A[r, m] T[m, s]  (HF's in-place loop computes the same).
  float* T = cs.T.data();
  for (int64_t r = 0; r < L; ++r) {
    for (int64_t s = 0; s < L; ++s) T[r * L + s] = r == s ? 1.0f : 0.0f;
    for (int64_t s = 0; s < r; ++s) {
      float acc = -A[r * L + s];
      for (int64_t m = s + 1; m < r; ++m) acc -= A[r * L + m] * T[m * L + s];
      T[r * L + s] = acc;
    }
  }

  // U = T · diag(β) V;  W = T · diag(β e^γ) K
  float* KB = cs.KB.data();
  float* VB = cs.Vnew.data();  // diag(β) V, dead once U is formed
  for (int64_t r = 0; r < L; ++r) {
    for (int64_t i = 0; i < dk; ++i) KB[r * dk + i] = K[r * dk + i] * beta[r] * std::exp(gamma[r]);
    for (int64_t j = 0; j < dv; ++j) VB[r * dv + j] = cs.V[r * dv + j] * beta[r];
  }
  gemm(false, false, L, dv, L, 1.0f, T, VB, 0.0f, cs.U.data());
  gemm(false, false, L, dk, L, 1.0f, T, KB, 0.0f, cs.W.data());

  // V_new = U − W S₀
  float* Vnew = cs.Vnew.data();
  std::copy(cs.U.begin(), cs.U.begin() + L * dv, Vnew);
  gemm(false, false, L, dv, dk, -1.0f, cs.W.data(), S, 1.0f, Vnew);

  // O = (Q ⊙ e^γ) S₀ + (Q Kᵀ ⊙ Γ ⊙ 1[s ≤ r]) V_new   (Q already carries the dk^-1/2 scale)
  float* QG = cs.KB.data();  // reuse: [L, dk]
  for (int64_t r = 0; r < L; ++r)
    for (int64_t i = 0; i < dk; ++i) QG[r * dk + i] = Q[r * dk + i] * std::exp(gamma[r]);
  float* O = cs.O.data();
  gemm(false, false, L, dv, dk, 1.0f, QG, S, 0.0f, O);
  float* P = cs.P.data();
  gemm(false, true, L, L, dk, 1.0f, Q, K, 0.0f, P);
  for (int64_t r = 0; r < L; ++r)
    for (int64_t s = 0; s < L; ++s)
      P[r * L + s] = s <= r ? P[r * L + s] * std::exp(gamma[r] - gamma[s]) : 0.0f;
  gemm(false, false, L, dv, L, 1.0f, P, Vnew, 1.0f, O);

  // S_C = e^{γ_L} S₀ + (K ⊙ e^{γ_L − γ})ᵀ V_new
  const float gamma_last = gamma[L - 1];
  float* KD = cs.W.data();  // reuse: [L, dk]
  for (int64_t r = 0; r < L; ++r)
    for (int64_t i = 0; i < dk; ++i) KD[r * dk + i] = K[r * dk + i] * std::exp(gamma_last - gamma[r]);
  const float decay_last = std::exp(gamma_last);
  for (int64_t i = 0; i < dk * dv; ++i) S[i] *= decay_last;
  gemm(true, false, dk, dv, L, 1.0f, KD, Vnew, 1.0f, S);
}

// Rows [row0, row0 + len) of value head h, from S (in/out) — chunked form.
void run_chunked(const DeltaArgs& a, const Tensor& v, const Tensor& g, const Tensor& beta,
                 int64_t row0, int64_t len, int64_t h, float* S, ChunkScratch& cs, Tensor& out) {
  const int64_t kh = h / (a.hv / a.hk);
  std::vector<float> g_chunk(kChunk), beta_chunk(kChunk);
  for (int64_t c0 = 0; c0 < len; c0 += kChunk) {
    const int64_t L = std::min(kChunk, len - c0);
    for (int64_t r = 0; r < L; ++r) {  // gather this head's rows of the chunk
      const int64_t t = row0 + c0 + r;
      std::copy_n(a.q_hat.data() + (t * a.hk + kh) * a.dk, a.dk, cs.Q.data() + r * a.dk);
      std::copy_n(a.k_hat.data() + (t * a.hk + kh) * a.dk, a.dk, cs.K.data() + r * a.dk);
      std::copy_n(v.f32() + (t * a.hv + h) * a.dv, a.dv, cs.V.data() + r * a.dv);
      g_chunk[r] = g.f32()[t * a.hv + h];
      beta_chunk[r] = beta.f32()[t * a.hv + h];
    }
    chunk_step(S, g_chunk.data(), beta_chunk.data(), L, a.dk, a.dv, cs);
    for (int64_t r = 0; r < L; ++r)
      std::copy_n(cs.O.data() + r * a.dv, a.dv, out.f32() + ((row0 + c0 + r) * a.hv + h) * a.dv);
  }
}

// Rows [row0, row0 + len) of value head h, from S (in/out) — recurrent form; after token j
// the state is copied to snapshot slot j when snapshot_slots is given.
void run_recurrent(const DeltaArgs& a, const Tensor& v, const Tensor& g, const Tensor& beta,
                   int64_t row0, int64_t len, int64_t h, float* S,
                   const std::vector<int32_t>* snapshot_slots, Tensor& state, Tensor& out) {
  const int64_t kh = h / (a.hv / a.hk);
  const int64_t state_size = a.dk * a.dv;
  std::vector<float> delta(a.dv);
  for (int64_t j = 0; j < len; ++j) {
    const int64_t t = row0 + j;
    recurrent_step(S, a.q_hat.data() + (t * a.hk + kh) * a.dk,
                   a.k_hat.data() + (t * a.hk + kh) * a.dk, v.f32() + (t * a.hv + h) * a.dv,
                   g.f32()[t * a.hv + h], beta.f32()[t * a.hv + h], a.dk, a.dv, delta,
                   out.f32() + (t * a.hv + h) * a.dv);
    if (snapshot_slots != nullptr) {
      float* snapshot = state.f32() + ((*snapshot_slots)[j] * a.hv + h) * state_size;
      std::copy_n(S, state_size, snapshot);
    }
  }
}

void delta_rule_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                     const Tensor& beta, const GdnDims& dims, const ForwardBatch& batch,
                     const std::vector<std::vector<int32_t>>* snapshot_slots_per_seq,
                     Tensor& state, Tensor& out, const char* op) {
  const DeltaArgs a = prepare(q, k, v, g, beta, dims, batch, state, out, op);
  if (snapshot_slots_per_seq != nullptr)
    check_snapshot_slots(batch, *snapshot_slots_per_seq, a.num_slots, op);
  const int64_t state_size = a.dk * a.dv;
  std::vector<float> S(state_size);
  ChunkScratch scratch(a.dk, a.dv);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    if (seq.query_len == 0) continue;
    const std::vector<int32_t>* snapshots = snapshots_of(batch, snapshot_slots_per_seq, s,
                                                         a.num_slots, op);
    for (int64_t h = 0; h < a.hv; ++h) {
      float* slot_state = state.f32() + (seq.state_slot * a.hv + h) * state_size;
      if (seq.has_initial_state()) {
        std::copy_n(slot_state, state_size, S.data());
      } else {
        std::fill(S.begin(), S.end(), 0.0f);
      }
      if (snapshots != nullptr) {
        run_recurrent(a, v, g, beta, seq.query_start, seq.query_len, h, S.data(), snapshots,
                      state, out);
        continue;  // the snapshots are the result; the state slot is left as it was
      }
      if (seq.query_len == 1) {
        run_recurrent(a, v, g, beta, seq.query_start, 1, h, S.data(), nullptr, state, out);
      } else {
        run_chunked(a, v, g, beta, seq.query_start, seq.query_len, h, S.data(), scratch, out);
      }
      std::copy_n(S.data(), state_size, slot_state);
    }
  }
}

}  // namespace

void gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                      const Tensor& beta, const GdnDims& dims, const ForwardBatch& batch,
                      Tensor& recurrent_state, Tensor& out) {
  delta_rule_impl(q, k, v, g, beta, dims, batch, nullptr, recurrent_state, out,
                  "gated_delta_rule");
}

void gated_delta_rule_snapshots(const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& g, const Tensor& beta, const GdnDims& dims,
                                const ForwardBatch& batch,
                                const std::vector<std::vector<int32_t>>& snapshot_slots_per_seq,
                                Tensor& recurrent_state, Tensor& out) {
  delta_rule_impl(q, k, v, g, beta, dims, batch, &snapshot_slots_per_seq, recurrent_state, out,
                  "gated_delta_rule_snapshots");
}

}  // namespace bf::cpu
