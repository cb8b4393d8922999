// CPU paged attention vs naive contiguous attention (double) over the same K/V: shuffled
// block tables, chunked prefill (num_computed > 0), decode, non-causal, GQA; and a batch of
// sequences == each sequence alone (bitwise). Tolerance vs naive: rtol 1e-5, atol 1e-5.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "test_util.h"

namespace bf {
namespace {

using test::all_close;
using test::make_batch;
using test::random_tensor;
using test::SeqSpec;

constexpr int kHq = 4, kHkv = 2, kHd = 16, kBlockSize = 4, kNumBlocks = 40;

struct AttnSeq {
  int num_computed, query_len;
  Tensor k, v;  // [kv_len, Hkv, hd], the whole sequence
  std::vector<int32_t> block_table;
};

// Naive attention of one sequence's new queries q [query_len, Hq, hd] over contiguous K/V.
std::vector<double> naive_attention(const float* q, const AttnSeq& s, float scale, bool causal,
                                    int window = 0) {
  const int kv_len = s.num_computed + s.query_len;
  std::vector<double> out(s.query_len * kHq * kHd, 0.0);
  for (int i = 0; i < s.query_len; ++i)
    for (int h = 0; h < kHq; ++h) {
      const int kvh = h / (kHq / kHkv);
      const int visible = causal ? s.num_computed + i + 1 : kv_len;
      const int first = window > 0 ? std::max(0, s.num_computed + i - window + 1) : 0;
      std::vector<double> p(visible, 0.0);
      double max_score = -INFINITY, sum = 0;
      for (int j = first; j < visible; ++j) {
        double dot = 0;
        for (int d = 0; d < kHd; ++d)
          dot += double(q[(i * kHq + h) * kHd + d]) * s.k.f32()[(j * kHkv + kvh) * kHd + d];
        p[j] = dot * scale;
        max_score = std::max(max_score, p[j]);
      }
      for (int j = first; j < visible; ++j) sum += p[j] = std::exp(p[j] - max_score);
      for (int j = first; j < visible; ++j)
        for (int d = 0; d < kHd; ++d)
          out[(i * kHq + h) * kHd + d] += p[j] / sum * s.v.f32()[(j * kHkv + kvh) * kHd + d];
    }
  return out;
}

class CpuAttention : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_cpu_backend();
  std::mt19937 rng{20};
  KvCache cache{random_tensor({kNumBlocks, kBlockSize, kHkv, kHd}, rng),
                random_tensor({kNumBlocks, kBlockSize, kHkv, kHd}, rng)};  // stale garbage
  std::vector<int32_t> free_blocks;

  void SetUp() override {
    free_blocks.resize(kNumBlocks);
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  }

  // A sequence with random K/V, its context already written to the cache (an earlier pass).
  AttnSeq make_seq(int num_computed, int query_len) {
    AttnSeq s{num_computed, query_len,
              random_tensor({num_computed + query_len, kHkv, kHd}, rng, -2, 2),
              random_tensor({num_computed + query_len, kHkv, kHd}, rng), {}};
    const int blocks = (num_computed + query_len + kBlockSize - 1) / kBlockSize;
    for (int b = 0; b < blocks; ++b) {
      s.block_table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    if (num_computed > 0) {
      ForwardBatch earlier = make_batch({{num_computed, 0, 0, s.block_table}}, kBlockSize);
      be->kv_write(s.k.rows(0, num_computed), s.v.rows(0, num_computed), earlier, cache);
    }
    return s;
  }

  // Writes the new K/V of every sequence and runs attention of the whole batch.
  Tensor run(const std::vector<AttnSeq>& seqs, const Tensor& q, bool causal, int window = 0) {
    std::vector<SeqSpec> specs;
    for (const AttnSeq& s : seqs) specs.push_back({s.query_len, s.num_computed, 0, s.block_table});
    ForwardBatch batch = make_batch(specs, kBlockSize);
    Tensor k_new = be->empty({batch.num_tokens(), kHkv, kHd}), v_new = be->empty({batch.num_tokens(), kHkv, kHd});
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int row = batch.seqs[i].query_start, n = seqs[i].query_len, ctx = seqs[i].num_computed;
      std::copy_n(seqs[i].k.f32() + ctx * kHkv * kHd, n * kHkv * kHd, k_new.f32() + row * kHkv * kHd);
      std::copy_n(seqs[i].v.f32() + ctx * kHkv * kHd, n * kHkv * kHd, v_new.f32() + row * kHkv * kHd);
    }
    be->kv_write(k_new, v_new, batch, cache);
    Tensor out = be->empty({batch.num_tokens(), kHq, kHd});
    be->paged_attention(q, cache, batch,
                        {.scale = 1.0f / std::sqrt(float(kHd)), .causal = causal,
                         .sliding_window = window},
                        out);
    return out;
  }
};

TEST_F(CpuAttention, PagedBatchMatchesNaive) {
  // Fresh prefill, chunked prefill continuing a context, decode, verify-like block.
  std::vector<AttnSeq> seqs = {make_seq(0, 9), make_seq(13, 6), make_seq(21, 1), make_seq(7, 5)};
  int T = 0;
  for (const AttnSeq& s : seqs) T += s.query_len;
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "non-causal");
    Tensor q = random_tensor({T, kHq, kHd}, rng, -2, 2);
    Tensor out = run(seqs, q, causal);
    int row = 0;
    for (const AttnSeq& s : seqs) {
      const std::vector<double> want =
          naive_attention(q.f32() + row * kHq * kHd, s, 1.0f / std::sqrt(float(kHd)), causal);
      EXPECT_TRUE(all_close(out.f32() + row * kHq * kHd, want, 1e-5, 1e-5));
      row += s.query_len;
    }
  }
}

// DFlash's sliding_attention draft layers: causal + a window over absolute positions; full
// layers non-causal with a window are covered too (the window then cuts only old context).
TEST_F(CpuAttention, SlidingWindowMatchesNaive) {
  std::vector<AttnSeq> seqs = {make_seq(0, 9), make_seq(13, 6), make_seq(21, 1), make_seq(7, 5)};
  int T = 0;
  for (const AttnSeq& s : seqs) T += s.query_len;
  for (bool causal : {true, false}) {
    for (int window : {1, 3, 8}) {
      SCOPED_TRACE(std::string(causal ? "causal" : "non-causal") + " window " +
                   std::to_string(window));
      Tensor q = random_tensor({T, kHq, kHd}, rng, -2, 2);
      Tensor out = run(seqs, q, causal, window);
      int row = 0;
      for (const AttnSeq& s : seqs) {
        const std::vector<double> want = naive_attention(
            q.f32() + row * kHq * kHd, s, 1.0f / std::sqrt(float(kHd)), causal, window);
        EXPECT_TRUE(all_close(out.f32() + row * kHq * kHd, want, 1e-5, 1e-5));
        row += s.query_len;
      }
    }
  }
}

TEST_F(CpuAttention, BatchEqualsEachSequenceAlone) {
  std::vector<AttnSeq> seqs = {make_seq(5, 7), make_seq(0, 3), make_seq(30, 1)};
  const int T = 11;
  Tensor q = random_tensor({T, kHq, kHd}, rng, -2, 2);
  Tensor out_batch = run(seqs, q, true);
  int row = 0;
  for (const AttnSeq& s : seqs) {
    Tensor out_alone = run({s}, q.rows(row, s.query_len), true);
    EXPECT_TRUE(test::bitwise_equal(out_batch.f32() + row * kHq * kHd, out_alone.f32(), out_alone.numel()));
    row += s.query_len;
  }
}

// Qwen3.5's output-gated attention: out[t, h, :] = attention * sigmoid(gate) with the gate in
// columns [hd, 2 hd) of per-head [q | gate] rows; a gate of the wrong shape is an error.
TEST_F(CpuAttention, GatedMultipliesBySigmoidOfTheGateHalf) {
  std::vector<AttnSeq> seqs = {make_seq(13, 6), make_seq(21, 1)};
  const int T = 7;
  Tensor q = random_tensor({T, kHq, kHd}, rng, -2, 2);
  Tensor plain = run(seqs, q, true);
  Tensor gate_rows = random_tensor({T * kHq, 2 * kHd}, rng, -4, 4);
  std::vector<SeqSpec> specs;
  for (const AttnSeq& s : seqs) specs.push_back({s.query_len, s.num_computed, 0, s.block_table});
  ForwardBatch batch = make_batch(specs, kBlockSize);
  const AttentionParams params{.scale = 1.0f / std::sqrt(float(kHd)), .causal = true};
  Tensor gated = be->empty({T, kHq, kHd});
  be->paged_attention_gated(q, cache, batch, params, gate_rows, kHd, gated);
  std::vector<double> want(plain.numel());
  for (int64_t r = 0; r < T * kHq; ++r)
    for (int d = 0; d < kHd; ++d)
      want[r * kHd + d] = plain.f32()[r * kHd + d] /
                          (1.0 + std::exp(-double(gate_rows.f32()[r * 2 * kHd + kHd + d])));
  EXPECT_TRUE(all_close(gated.f32(), want, 1e-6, 1e-6));
  // The gate half past the rows' end, and too few rows.
  EXPECT_THROW(be->paged_attention_gated(q, cache, batch, params, gate_rows, kHd + 1, gated), Error);
  Tensor short_rows = random_tensor({T * kHq - 1, 2 * kHd}, rng);
  EXPECT_THROW(be->paged_attention_gated(q, cache, batch, params, short_rows, kHd, gated), Error);
}

TEST_F(CpuAttention, RejectsShortBlockTable) {
  AttnSeq s = make_seq(6, 2);
  s.block_table.pop_back();  // 8 positions need 2 blocks of 4
  ForwardBatch batch = make_batch({{2, 6, 0, {s.block_table[0], s.block_table[0]}}}, kBlockSize);
  batch.seqs[0].block_table = s.block_table;
  Tensor q = random_tensor({2, kHq, kHd}, rng), out = be->empty({2, kHq, kHd});
  EXPECT_THROW(be->paged_attention(q, cache, batch, {}, out), Error);
}

}  // namespace
}  // namespace bf
