// Raw-logit logprobs: log_softmax with max subtraction, top-k sorted with ties by lower id.
#include "engine/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace bf {
namespace {

TEST(Logprobs, TokenLogprobMatchesLogSoftmax) {
  std::vector<float> logits = {1.0f, 2.0f, 3.0f, -1.0f};
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x));
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(token_logprob(logits, i), logits[i] - std::log(sum), 1e-6);
  }
}

TEST(Logprobs, LargeLogitsDoNotOverflow) {
  // exp(1000) overflows even in double: only max subtraction makes this finite.
  std::vector<float> logits = {1000.0f, 1001.0f};
  EXPECT_NEAR(token_logprob(logits, 1), -std::log1p(std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(token_logprob(logits, 0), -1.0 - std::log1p(std::exp(-1.0)), 1e-6);
}

TEST(Logprobs, MaskedTokensHaveMinusInfinity) {
  float inf = std::numeric_limits<float>::infinity();
  std::vector<float> logits = {0.0f, -inf, 0.0f};
  EXPECT_EQ(token_logprob(logits, 1), -inf);
  EXPECT_NEAR(token_logprob(logits, 0), -std::log(2.0), 1e-6);
}

TEST(Logprobs, TopLogprobsSortedTiesByLowerId) {
  std::vector<float> logits = {0.5f, 2.0f, 0.5f, 3.0f, 2.0f, -4.0f};
  auto top = top_logprobs(logits, 4);
  ASSERT_EQ(top.size(), 4u);
  EXPECT_EQ(top[0].id, 3);
  EXPECT_EQ(top[1].id, 1);  // tie with 4: lower id first
  EXPECT_EQ(top[2].id, 4);
  EXPECT_EQ(top[3].id, 0);  // tie with 2
  for (const auto& t : top) EXPECT_FLOAT_EQ(t.logprob, token_logprob(logits, t.id));
}

TEST(Logprobs, RankCountsTokensAtLeastAsLikely) {
  std::vector<float> logits = {0.5f, 2.0f, 0.5f, 3.0f, -1.0f};
  EXPECT_EQ(token_rank(logits, 3), 1);
  EXPECT_EQ(token_rank(logits, 1), 2);
  EXPECT_EQ(token_rank(logits, 0), 4);  // tied with 2: both get the worse rank, as vLLM
  EXPECT_EQ(token_rank(logits, 2), 4);
  EXPECT_EQ(token_rank(logits, 4), 5);
}

TEST(Logprobs, TopLogprobsClampsK) {
  std::vector<float> logits = {0.0f, 1.0f};
  EXPECT_TRUE(top_logprobs(logits, 0).empty());
  EXPECT_EQ(top_logprobs(logits, 10).size(), 2u);
}

}  // namespace
}  // namespace bf
