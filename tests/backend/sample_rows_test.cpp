// Backend::sample_rows on the CPU (the reference the CUDA sampler is held to) is the host
// sampler row by row: each row's token, raw logprob, rank and top logprobs equal sample_token's
// on that row with that row's parameters, for batches mixing parameters, seeds and positions.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "backend/backend.h"
#include "core/error.h"
#include "engine/sampler.h"

namespace bf {
namespace {

std::vector<RowSampling> random_rows(std::mt19937& rng, int count, int vocab) {
  const float temperatures[] = {0.0f, 0.3f, 1.0f, 1.7f};
  const int32_t top_ks[] = {0, 1, 20, vocab};
  const float top_ps[] = {0.1f, 0.9f, 1.0f};
  const float min_ps[] = {0.0f, 0.1f};
  std::vector<RowSampling> rows(count);
  for (RowSampling& row : rows) {
    row.temperature = temperatures[rng() % 4];
    row.top_k = top_ks[rng() % 4];
    row.top_p = top_ps[rng() % 3];
    row.min_p = min_ps[rng() % 2];
    row.seed = (static_cast<uint64_t>(rng()) << 32) | rng();
    row.position = rng() % 1000;
    row.num_logprobs = static_cast<int32_t>(rng() % 4 == 0 ? 0 : rng() % 21);
  }
  return rows;
}

TEST(SampleRows, CpuEqualsSampleTokenPerRow) {
  auto cpu = make_cpu_backend();
  std::mt19937 rng(1234);
  for (int vocab : {7, 300, 5001}) {
    const int count = 24;
    Tensor logits = Tensor::empty({count, vocab});
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (int64_t i = 0; i < logits.numel(); ++i) logits.f32()[i] = normal(rng);
    std::vector<RowSampling> rows = random_rows(rng, count, vocab);
    std::vector<SampleResult> got = cpu->sample_rows(logits, rows);
    ASSERT_EQ(got.size(), rows.size());
    for (int r = 0; r < count; ++r) {
      const RowSampling& row = rows[r];
      SamplingParams params;
      params.temperature = row.temperature;
      params.top_k = row.top_k;
      params.top_p = row.top_p;
      params.min_p = row.min_p;
      if (row.num_logprobs > 0) params.logprobs = row.num_logprobs;
      std::span<const float> values(logits.f32() + static_cast<int64_t>(r) * vocab, vocab);
      SampleResult want = sample_token(values, params, {}, {}, {}, row.seed, row.position);
      EXPECT_EQ(got[r].token, want.token) << "vocab " << vocab << " row " << r;
      EXPECT_EQ(got[r].logprob, want.logprob);
      EXPECT_EQ(got[r].rank, want.rank);
      ASSERT_EQ(got[r].top_logprobs.size(), want.top_logprobs.size());
      for (size_t i = 0; i < want.top_logprobs.size(); ++i) {
        EXPECT_EQ(got[r].top_logprobs[i].id, want.top_logprobs[i].id);
        EXPECT_EQ(got[r].top_logprobs[i].logprob, want.top_logprobs[i].logprob);
      }
    }
  }
}

TEST(SampleRows, ParamsFollowTheRow) {
  // The same logits under different parameters: a greedy row takes the argmax, top_k 1 too,
  // and a row's seed, not its place in the batch, decides its draw.
  auto cpu = make_cpu_backend();
  const int vocab = 50;
  Tensor logits = Tensor::empty({3, vocab});
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < vocab; ++i)
    logits.f32()[i] = logits.f32()[vocab + i] = logits.f32()[2 * vocab + i] = normal(rng);
  logits.f32()[17] = logits.f32()[vocab + 17] = logits.f32()[2 * vocab + 17] = 10.0f;
  std::vector<RowSampling> rows(3);
  rows[0].temperature = 0.0f;
  rows[1].top_k = 1;
  rows[2].seed = 99;
  rows[2].position = 5;
  std::vector<SampleResult> got = cpu->sample_rows(logits, rows);
  EXPECT_EQ(got[0].token, 17);
  EXPECT_EQ(got[1].token, 17);
  EXPECT_EQ(got[0].rank, 1);
  Tensor alone = Tensor::empty({1, vocab});
  std::copy_n(logits.f32() + 2 * vocab, vocab, alone.f32());
  EXPECT_EQ(cpu->sample_rows(alone, {rows[2]})[0].token, got[2].token);
}

TEST(SampleRows, RowWithoutFiniteLogitIsAnError) {
  auto cpu = make_cpu_backend();
  Tensor logits = Tensor::empty({1, 8});
  for (int i = 0; i < 8; ++i) logits.f32()[i] = -std::numeric_limits<float>::infinity();
  EXPECT_THROW(cpu->sample_rows(logits, {RowSampling{}}), Error);
  EXPECT_THROW(cpu->sample_rows(logits, {}), Error);  // rows must match the logits
}

}  // namespace
}  // namespace bf
