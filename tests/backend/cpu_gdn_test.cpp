// CPU reference of the Gated DeltaNet ops: conv1d and gates vs direct formulas; the gated
// delta rule vs a double-precision token-by-token recurrence, chunked vs recurrent, chunked
// prefill across calls vs one call, batch vs each sequence alone, and per-token snapshots.
// Tolerances: conv/gates rtol 1e-5 atol 1e-6; delta rule vs the double recurrence and
// chunked vs recurrent rtol 1e-4 atol 1e-4 (outputs and states are O(1)); batch invariance
// is bitwise (each sequence runs the same code on the same data).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "test_util.h"

namespace bf {
namespace {

using test::all_close;
using test::bitwise_equal;
using test::make_batch;
using test::random_tensor;
using test::SeqSpec;

// ---------------------------------------------------------------- conv1d

constexpr int kConvDim = 12, kKernel = 4, kSlots = 4;

// Direct formula for one sequence: out[t,c] = silu(Σ_j W[c,j] x_{t-K+1+j}[c]), inputs before
// the chunk from `initial` ([conv_dim, K-1], oldest first). Returns out and the final state.
void conv_ref(const Tensor& x, int start, int len, const Tensor& w, const std::vector<float>& initial,
              std::vector<double>& out, std::vector<double>& state) {
  auto input = [&](int i, int c) -> double {  // i: index relative to the chunk, may be < 0
    return i >= 0 ? x.f32()[(start + i) * kConvDim + c] : initial[c * (kKernel - 1) + (kKernel - 1 + i)];
  };
  out.assign(len * kConvDim, 0.0);
  for (int t = 0; t < len; ++t)
    for (int c = 0; c < kConvDim; ++c) {
      double acc = 0;
      for (int j = 0; j < kKernel; ++j) acc += w.f32()[c * kKernel + j] * input(t - kKernel + 1 + j, c);
      out[t * kConvDim + c] = acc / (1.0 + std::exp(-acc));
    }
  state.assign(kConvDim * (kKernel - 1), 0.0);
  for (int c = 0; c < kConvDim; ++c)
    for (int m = 0; m < kKernel - 1; ++m) state[c * (kKernel - 1) + m] = input(len - (kKernel - 1) + m, c);
}

std::vector<float> slot_values(const Tensor& pool, int slot) {
  const int64_t n = pool.numel() / pool.dim(0);
  return std::vector<float>(pool.f32() + slot * n, pool.f32() + (slot + 1) * n);
}

TEST(CpuConv1d, BatchMatchesDirectFormula) {
  std::mt19937 rng(10);
  auto be = make_cpu_backend();
  Tensor w = random_tensor({kConvDim, kKernel}, rng);
  // Lengths 1 and 2 are shorter than K-1: the new state keeps older state entries.
  const std::vector<SeqSpec> specs = {{5, 0, 2}, {1, 9, 0}, {2, 3, 3}, {7, 11, 1}};
  ForwardBatch batch = make_batch(specs);
  Tensor x = random_tensor({batch.num_tokens(), kConvDim}, rng);
  Tensor state = random_tensor({kSlots, kConvDim, kKernel - 1}, rng);  // garbage for fresh seqs
  const Tensor state_before = test::clone(state);
  Tensor out = be->empty({batch.num_tokens(), kConvDim});
  be->causal_conv1d(x, w, batch, state, out);
  for (const BatchSequence& seq : batch.seqs) {
    std::vector<float> initial = seq.has_initial_state()
                                     ? slot_values(state_before, seq.state_slot)
                                     : std::vector<float>(kConvDim * (kKernel - 1), 0.0f);
    std::vector<double> want_out, want_state;
    conv_ref(x, seq.query_start, seq.query_len, w, initial, want_out, want_state);
    EXPECT_TRUE(all_close(out.f32() + seq.query_start * kConvDim, want_out, 1e-5, 1e-6));
    EXPECT_TRUE(all_close(slot_values(state, seq.state_slot).data(), want_state, 0, 0));
  }
}

TEST(CpuConv1d, ChunkedPrefillEqualsOneCall) {
  std::mt19937 rng(11);
  auto be = make_cpu_backend();
  Tensor w = random_tensor({kConvDim, kKernel}, rng);
  const int total = 23;
  Tensor x = random_tensor({total, kConvDim}, rng);
  Tensor state_one = random_tensor({kSlots, kConvDim, kKernel - 1}, rng);
  Tensor state_split = test::clone(state_one);
  Tensor out_one = be->empty({total, kConvDim}), out_split = be->empty({total, kConvDim});
  be->causal_conv1d(x, w, make_batch({{total, 0, 1}}), state_one, out_one);
  int done = 0;
  for (int len : {9, 1, 2, 11}) {
    Tensor xs = x.rows(done, len), outs = out_split.rows(done, len);
    be->causal_conv1d(xs, w, make_batch({{len, done, 1}}), state_split, outs);
    done += len;
  }
  EXPECT_TRUE(all_close(out_split, out_one, 1e-6, 1e-7));
  EXPECT_TRUE(all_close(state_split, state_one, 0, 0));
}

TEST(CpuConv1d, SnapshotsHoldTheStateAfterEachToken) {
  std::mt19937 rng(12);
  auto be = make_cpu_backend();
  Tensor w = random_tensor({kConvDim, kKernel}, rng);
  const int len = 5, pool = 8;
  Tensor x = random_tensor({len, kConvDim}, rng);
  Tensor state = random_tensor({pool, kConvDim, kKernel - 1}, rng);
  Tensor stepped = test::clone(state);
  Tensor out = be->empty({len, kConvDim}), out_step = be->empty({len, kConvDim});
  const std::vector<std::vector<int32_t>> snaps = {{3, 4, 5, 6, 7}};
  cpu::causal_conv1d_snapshots(x, w, make_batch({{len, 6, 0}}), snaps, state, out);
  for (int j = 0; j < len; ++j) {
    Tensor xs = x.rows(j, 1), os = out_step.rows(j, 1);
    be->causal_conv1d(xs, w, make_batch({{1, 6 + j, 0}}), stepped, os);
    EXPECT_TRUE(bitwise_equal(slot_values(state, snaps[0][j]).data(), slot_values(stepped, 0).data(),
                              kConvDim * (kKernel - 1)));
  }
  EXPECT_TRUE(all_close(out, out_step, 0, 0));
}

// ---------------------------------------------------------------- gates

TEST(CpuGdnGates, MatchFormula) {
  std::mt19937 rng(13);
  auto be = make_cpu_backend();
  const int T = 5, Hv = 6;
  Tensor a = random_tensor({T, Hv}, rng, -5, 5), b = random_tensor({T, Hv}, rng, -5, 5);
  a.f32()[3] = 25.0f;  // above softplus's threshold of 20: linear branch
  Tensor A_log = random_tensor({Hv}, rng, -2, 2), dt_bias = random_tensor({Hv}, rng);
  Tensor g = be->empty({T, Hv}), beta = be->empty({T, Hv});
  be->gdn_gates(a, b, A_log, dt_bias, g, beta);
  std::vector<double> want_g(T * Hv), want_beta(T * Hv);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < Hv; ++h) {
      const int i = t * Hv + h;
      const double x = double(a.f32()[i]) + dt_bias.f32()[h];
      const double softplus = x > 20 ? x : std::log1p(std::exp(x));
      want_g[i] = -std::exp(double(A_log.f32()[h])) * softplus;
      want_beta[i] = 1.0 / (1.0 + std::exp(-double(b.f32()[i])));
    }
  EXPECT_TRUE(all_close(g, want_g, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(beta, want_beta, 1e-5, 1e-6));
}

// ---------------------------------------------------------------- delta rule

// Hk != Hv and dk != dv so that a head-mapping or transposition mistake shows.
const GdnDims kDims = {.num_k_heads = 2, .num_v_heads = 4, .k_head_dim = 16, .v_head_dim = 8};
constexpr int kPool = 6;

struct DeltaInputs {
  Tensor q, k, v, g, beta;
};

DeltaInputs random_delta_inputs(int T, std::mt19937& rng) {
  const int hk = kDims.num_k_heads, hv = kDims.num_v_heads;
  return {random_tensor({T, hk, kDims.k_head_dim}, rng), random_tensor({T, hk, kDims.k_head_dim}, rng),
          random_tensor({T, hv, kDims.v_head_dim}, rng),
          random_tensor({T, hv}, rng, -0.6f, -0.02f),  // log-decay g ≤ 0
          random_tensor({T, hv}, rng, 0.05f, 0.95f)};
}

Tensor random_state_pool(std::mt19937& rng) {
  return random_tensor({kPool, kDims.num_v_heads, kDims.k_head_dim, kDims.v_head_dim}, rng, -0.5f, 0.5f);
}

// The recurrence of research/qwen35.md §2.3 in double, token by token, for rows
// [start, start + len); S: [Hv, dk, dv] in/out. Returns out [len, Hv, dv].
std::vector<double> delta_rule_ref(const DeltaInputs& in, int start, int len, std::vector<double>& S) {
  const int hk = kDims.num_k_heads, hv = kDims.num_v_heads, dk = kDims.k_head_dim, dv = kDims.v_head_dim;
  std::vector<double> out(len * hv * dv);
  for (int t = 0; t < len; ++t)
    for (int h = 0; h < hv; ++h) {
      const int kh = h / (hv / hk);
      const float* qr = in.q.f32() + ((start + t) * hk + kh) * dk;
      const float* kr = in.k.f32() + ((start + t) * hk + kh) * dk;
      const float* vr = in.v.f32() + ((start + t) * hv + h) * dv;
      double qn = 0, kn = 0;
      for (int i = 0; i < dk; ++i) qn += double(qr[i]) * qr[i], kn += double(kr[i]) * kr[i];
      std::vector<double> q(dk), k(dk);
      for (int i = 0; i < dk; ++i) {
        q[i] = qr[i] / std::sqrt(qn + 1e-6) / std::sqrt(double(dk));
        k[i] = kr[i] / std::sqrt(kn + 1e-6);
      }
      const double alpha = std::exp(double(in.g.f32()[(start + t) * hv + h]));
      const double beta = in.beta.f32()[(start + t) * hv + h];
      double* s = S.data() + h * dk * dv;
      for (int i = 0; i < dk * dv; ++i) s[i] *= alpha;
      for (int j = 0; j < dv; ++j) {
        double mem = 0;
        for (int i = 0; i < dk; ++i) mem += s[i * dv + j] * k[i];
        const double delta = beta * (vr[j] - mem);
        for (int i = 0; i < dk; ++i) s[i * dv + j] += k[i] * delta;
      }
      for (int j = 0; j < dv; ++j) {
        double o = 0;
        for (int i = 0; i < dk; ++i) o += s[i * dv + j] * q[i];
        out[(t * hv + h) * dv + j] = o;
      }
    }
  return out;
}

Tensor delta_out(int T) { return Tensor::empty({T, kDims.num_v_heads, kDims.v_head_dim}); }

void run_delta(Backend& be, const DeltaInputs& in, const ForwardBatch& batch, Tensor& state, Tensor& out) {
  be.gated_delta_rule(in.q, in.k, in.v, in.g, in.beta, kDims, batch, state, out);
}

DeltaInputs rows_of(const DeltaInputs& in, int start, int len) {
  return {in.q.rows(start, len), in.k.rows(start, len), in.v.rows(start, len), in.g.rows(start, len),
          in.beta.rows(start, len)};
}

TEST(CpuDeltaRule, MatchesDoubleRecurrence) {
  auto be = make_cpu_backend();
  for (int len : {1, 5, 63, 64, 65, 130, 200}) {
    for (bool has_initial : {false, true}) {
      SCOPED_TRACE(testing::Message() << "len " << len << (has_initial ? ", initial state" : ""));
      std::mt19937 rng(100 + len);
      DeltaInputs in = random_delta_inputs(len, rng);
      Tensor state = random_state_pool(rng);  // slot 2 is garbage when !has_initial
      const int64_t slot_size = state.numel() / kPool;
      std::vector<double> S(slot_size, 0.0);
      if (has_initial) S.assign(state.f32() + 2 * slot_size, state.f32() + 3 * slot_size);
      const std::vector<double> want = delta_rule_ref(in, 0, len, S);
      Tensor out = delta_out(len);
      run_delta(*be, in, make_batch({{len, has_initial ? 17 : 0, 2}}), state, out);
      EXPECT_TRUE(all_close(out, want, 1e-4, 1e-4));
      EXPECT_TRUE(all_close(state.f32() + 2 * slot_size, S, 1e-4, 1e-4));
    }
  }
}

// Chunked (one call of len tokens) == recurrent (len calls of one token), from a nonzero state.
TEST(CpuDeltaRule, ChunkedEqualsRecurrent) {
  auto be = make_cpu_backend();
  for (int len : {5, 63, 64, 65, 130, 200}) {
    SCOPED_TRACE(testing::Message() << "len " << len);
    std::mt19937 rng(200 + len);
    DeltaInputs in = random_delta_inputs(len, rng);
    Tensor state_chunked = random_state_pool(rng);
    Tensor state_recurrent = test::clone(state_chunked);
    Tensor out_chunked = delta_out(len), out_recurrent = delta_out(len);
    run_delta(*be, in, make_batch({{len, 5, 1}}), state_chunked, out_chunked);
    for (int t = 0; t < len; ++t) {
      Tensor out_t = out_recurrent.rows(t, 1);
      run_delta(*be, rows_of(in, t, 1), make_batch({{1, 5 + t, 1}}), state_recurrent, out_t);
    }
    EXPECT_TRUE(all_close(out_chunked, out_recurrent, 1e-4, 1e-4));
    EXPECT_TRUE(all_close(state_chunked, state_recurrent, 1e-4, 1e-4));
  }
}

TEST(CpuDeltaRule, ChunkedPrefillAcrossCallsEqualsOneCall) {
  auto be = make_cpu_backend();
  std::mt19937 rng(300);
  const int total = 200;
  DeltaInputs in = random_delta_inputs(total, rng);
  Tensor state_one = random_state_pool(rng);
  Tensor state_split = test::clone(state_one);
  Tensor out_one = delta_out(total), out_split = delta_out(total);
  run_delta(*be, in, make_batch({{total, 0, 3}}), state_one, out_one);
  int done = 0;
  for (int len : {70, 1, 64, 65}) {
    Tensor out_part = out_split.rows(done, len);
    run_delta(*be, rows_of(in, done, len), make_batch({{len, done, 3}}), state_split, out_part);
    done += len;
  }
  EXPECT_TRUE(all_close(out_split, out_one, 1e-4, 1e-4));
  EXPECT_TRUE(all_close(state_split, state_one, 1e-4, 1e-4));
}

TEST(CpuDeltaRule, BatchEqualsEachSequenceAlone) {
  auto be = make_cpu_backend();
  std::mt19937 rng(400);
  const std::vector<SeqSpec> specs = {{65, 0, 4}, {1, 30, 0}, {5, 12, 2}, {130, 0, 5}, {1, 0, 1}};
  ForwardBatch batch = make_batch(specs);
  DeltaInputs in = random_delta_inputs(batch.num_tokens(), rng);
  Tensor state_batch = random_state_pool(rng);
  Tensor state_alone = test::clone(state_batch);
  Tensor out_batch = delta_out(batch.num_tokens()), out_alone = delta_out(batch.num_tokens());
  run_delta(*be, in, batch, state_batch, out_batch);
  for (const BatchSequence& seq : batch.seqs) {
    Tensor out_part = out_alone.rows(seq.query_start, seq.query_len);
    run_delta(*be, rows_of(in, seq.query_start, seq.query_len),
              make_batch({{seq.query_len, seq.num_computed, seq.state_slot}}), state_alone, out_part);
  }
  EXPECT_TRUE(bitwise_equal(out_batch.f32(), out_alone.f32(), out_batch.numel()));
  EXPECT_TRUE(bitwise_equal(state_batch.f32(), state_alone.f32(), state_batch.numel()));
}

// A verify block of 1+K tokens: snapshot j == the state after j+1 single-token decodes, the
// state slot itself untouched.
TEST(CpuDeltaRule, SnapshotsHoldTheStateAfterEachToken) {
  auto be = make_cpu_backend();
  std::mt19937 rng(500);
  const int len = 4;
  DeltaInputs in = random_delta_inputs(len, rng);
  Tensor state = random_state_pool(rng);
  Tensor stepped = test::clone(state);
  const Tensor before = test::clone(state);
  ForwardBatch verify = make_batch({{len, 9, 0}});
  Tensor out = delta_out(len), out_step = delta_out(len);
  const std::vector<std::vector<int32_t>> verify_slots = {{3, 2, 1, 4}};
  cpu::gated_delta_rule_snapshots(in.q, in.k, in.v, in.g, in.beta, kDims, verify, verify_slots,
                                  state, out);
  const int64_t slot_size = state.numel() / kPool;
  EXPECT_TRUE(bitwise_equal(state.f32(), before.f32(), slot_size));  // slot 0 only read
  for (int j = 0; j < len; ++j) {
    Tensor out_t = out_step.rows(j, 1);
    run_delta(*be, rows_of(in, j, 1), make_batch({{1, 9 + j, 0}}), stepped, out_t);
    EXPECT_TRUE(bitwise_equal(state.f32() + verify_slots[0][j] * slot_size, stepped.f32(), slot_size))
        << "snapshot " << j;
  }
  EXPECT_TRUE(bitwise_equal(out.f32(), out_step.f32(), out.numel()));
}

// The same through the op interface: BatchSequence::snapshot_slots (what the engine uses),
// with the state slot itself as snapshot 0 (read before it is overwritten), next to a plain
// sequence in the same batch that must update its own slot as usual.
TEST(CpuDeltaRule, BatchSnapshotSlotsMayReuseTheStateSlot) {
  auto be = make_cpu_backend();
  std::mt19937 rng(510);
  const int len = 4;
  DeltaInputs in = random_delta_inputs(len + 2, rng);
  Tensor state = random_state_pool(rng);
  Tensor stepped = test::clone(state);
  ForwardBatch batch = make_batch({{len, 9, 0}, {2, 5, 5}});
  batch.seqs[0].snapshot_slots = {0, 2, 3, 1};
  Tensor out = delta_out(len + 2);
  run_delta(*be, in, batch, state, out);
  const int64_t slot_size = state.numel() / kPool;
  Tensor out_step = delta_out(len);
  for (int j = 0; j < len; ++j) {
    Tensor out_t = out_step.rows(j, 1);
    run_delta(*be, rows_of(in, j, 1), make_batch({{1, 9 + j, 0}}), stepped, out_t);
    EXPECT_TRUE(bitwise_equal(state.f32() + batch.seqs[0].snapshot_slots[j] * slot_size,
                              stepped.f32(), slot_size))
        << "snapshot " << j;
  }
  EXPECT_TRUE(bitwise_equal(out.f32(), out_step.f32(), out_step.numel()));
  // The plain sequence (slot 5) advanced its own state exactly as alone.
  Tensor out_plain = delta_out(2);
  run_delta(*be, rows_of(in, len, 2), make_batch({{2, 5, 5}}), stepped, out_plain);
  EXPECT_TRUE(bitwise_equal(state.f32() + 5 * slot_size, stepped.f32() + 5 * slot_size, slot_size));
  batch.seqs[0].snapshot_slots = {0, 2};  // wrong count
  EXPECT_THROW(run_delta(*be, in, batch, state, out), Error);
}

TEST(CpuDeltaRule, RejectsBadShapes) {
  auto be = make_cpu_backend();
  std::mt19937 rng(600);
  DeltaInputs in = random_delta_inputs(3, rng);
  Tensor state = random_state_pool(rng);
  Tensor out = delta_out(3);
  GdnDims bad = kDims;
  bad.num_k_heads = 3;
  EXPECT_THROW(be->gated_delta_rule(in.q, in.k, in.v, in.g, in.beta, bad, make_batch({{3, 0, 0}}),
                                    state, out),
               Error);
  EXPECT_THROW(run_delta(*be, in, make_batch({{3, 0, kPool}}), state, out), Error);  // slot
  EXPECT_THROW(run_delta(*be, in, make_batch({{4, 0, 0}}), state, out), Error);      // rows
}

// A 300-token prefill of a small GDN layer must take milliseconds, not seconds.
TEST(CpuDeltaRule, Prefill300TokensIsFast) {
  auto be = make_cpu_backend();
  std::mt19937 rng(700);
  const GdnDims dims = {.num_k_heads = 2, .num_v_heads = 4, .k_head_dim = 32, .v_head_dim = 32};
  const int T = 300;
  Tensor q = random_tensor({T, 2, 32}, rng), k = random_tensor({T, 2, 32}, rng);
  Tensor v = random_tensor({T, 4, 32}, rng), g = random_tensor({T, 4}, rng, -0.5f, -0.01f);
  Tensor beta = random_tensor({T, 4}, rng, 0.1f, 0.9f);
  Tensor state = Tensor::zeros({1, 4, 32, 32}), out = Tensor::empty({T, 4, 32});
  const auto t0 = std::chrono::steady_clock::now();
  be->gated_delta_rule(q, k, v, g, beta, dims, make_batch({{T, 0, 0}}), state, out);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  RecordProperty("prefill_ms", std::to_string(ms));
  EXPECT_LT(ms, 200.0);
}

}  // namespace
}  // namespace bf
