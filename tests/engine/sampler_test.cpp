// Sampler: greedy, temperature (empirical chi-square), exact truncation sets for top-k, top-p
// and min_p in vLLM's order, hand-computed penalties, min_tokens, determinism by
// (seed, position), raw logprobs, and SamplingParams::validate.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/random.h"

namespace bf {
namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
const std::vector<int32_t> no_ids;

std::vector<double> softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max_logit = -inf;
  for (float x : logits) max_logit = std::max<double>(max_logit, x);
  std::vector<double> p;
  double sum = 0.0;
  for (float x : logits) {
    p.push_back(std::exp((x - max_logit) / temperature));
    sum += p.back();
  }
  for (double& v : p) v /= sum;
  return p;
}

// Logits whose softmax is exactly proportional to probs.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

std::set<int32_t> support(const std::vector<float>& probs) {
  std::set<int32_t> ids;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] > 0.0f) ids.insert(static_cast<int32_t>(i));
  }
  return ids;
}

std::set<int32_t> kept(const std::vector<float>& logits, const SamplingParams& params) {
  return support(processed_probs(logits, params, no_ids, no_ids, no_ids));
}

SamplingParams with(std::function<void(SamplingParams&)> edit) {
  SamplingParams p;
  edit(p);
  return p;
}

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestId) {
  std::vector<float> logits = {0.1f, 3.0f, -2.0f, 3.0f, 1.0f};
  SamplingParams params = with([](SamplingParams& p) { p.temperature = 0.0f; });
  for (uint64_t position = 0; position < 20; ++position) {
    auto r = sample_token(logits, params, no_ids, no_ids, no_ids, 99, position);
    EXPECT_EQ(r.token, 1);
  }
  auto probs = processed_probs(logits, params, no_ids, no_ids, no_ids);
  EXPECT_EQ(support(probs), (std::set<int32_t>{1}));
  EXPECT_EQ(probs[1], 1.0f);
}

TEST(Sampler, TemperatureMatchesSoftmaxEmpirically) {
  // 8 tokens -> 7 degrees of freedom; chi-square critical value at p = 0.001 is 24.32.
  // Fixed seeds make the test deterministic; the threshold states how unlikely a failure is.
  std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -1.0f, 0.3f, 1.5f};
  for (float temperature : {0.7f, 1.0f, 1.8f}) {
    SamplingParams params = with([&](SamplingParams& p) { p.temperature = temperature; });
    std::vector<double> expected = softmax(logits, temperature);
    auto probs = processed_probs(logits, params, no_ids, no_ids, no_ids);
    for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(probs[i], expected[i], 1e-6);

    constexpr int draws = 40000;
    std::vector<int> counts(logits.size(), 0);
    for (int position = 0; position < draws; ++position) {
      ++counts[sample_token(logits, params, no_ids, no_ids, no_ids, 2024, position).token];
    }
    double chi = 0.0;
    for (size_t i = 0; i < logits.size(); ++i) {
      double e = expected[i] * draws;
      chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    EXPECT_LT(chi, 24.32) << "temperature " << temperature;
  }
}

TEST(Sampler, TopKKeepsExactlyTheKLargest) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.5f, 0.7f, 3.0f};
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.top_k = 3; })),
            (std::set<int32_t>{1, 3, 5}));
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.top_k = 1; })), (std::set<int32_t>{5}));
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.top_k = 0; })).size(), 6u);
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.top_k = -1; })).size(), 6u);
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.top_k = 100; })).size(), 6u);
  // Renormalised over the kept set.
  auto probs = processed_probs(logits, with([](SamplingParams& p) { p.top_k = 2; }), no_ids,
                               no_ids, no_ids);
  double z = std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(probs[5], std::exp(3.0) / z, 1e-6);
  EXPECT_NEAR(probs[1], std::exp(2.0) / z, 1e-6);
}

TEST(Sampler, TopKKeepsTiesAtTheThresholdAsVllm) {
  std::vector<float> logits = {1.0f, 2.0f, 1.0f, 0.0f};
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.top_k = 2; })),
            (std::set<int32_t>{0, 1, 2}));
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  // Sorted probabilities 0.5, 0.2, 0.15, 0.1, 0.05 (shuffled ids).
  std::vector<float> logits = logits_of({0.15, 0.5, 0.05, 0.2, 0.1});
  auto top_p = [&](float p) { return kept(logits, with([&](SamplingParams& s) { s.top_p = p; })); };
  EXPECT_EQ(top_p(0.01f), (std::set<int32_t>{1}));  // always at least one token
  EXPECT_EQ(top_p(0.45f), (std::set<int32_t>{1}));
  EXPECT_EQ(top_p(0.6f), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(top_p(0.75f), (std::set<int32_t>{0, 1, 3}));
  EXPECT_EQ(top_p(0.9f), (std::set<int32_t>{0, 1, 3, 4}));
  EXPECT_EQ(top_p(1.0f).size(), 5u);
}

TEST(Sampler, TopPAfterTopKUsesRenormalisedMass) {
  // top_k = 2 leaves 0.5 and 0.2 -> 0.714, 0.286; top_p = 0.7 then keeps only the first.
  std::vector<float> logits = logits_of({0.5, 0.2, 0.15, 0.1, 0.05});
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) {
              p.top_k = 2;
              p.top_p = 0.7f;
            })),
            (std::set<int32_t>{0}));
}

// Naive reference for temperature + min_p + top-k + top-p: full sort by logit (ties by id),
// vLLM's order.
std::set<int32_t> reference_support(const std::vector<float>& logits, const SamplingParams& s) {
  std::vector<double> p = softmax(logits, s.temperature);
  double p_max = *std::max_element(p.begin(), p.end());
  std::vector<int32_t> order;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] >= s.min_p * p_max) order.push_back(static_cast<int32_t>(i));
  }
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  });
  if (s.top_k > 0 && static_cast<size_t>(s.top_k) < order.size()) {
    float kth = logits[order[s.top_k - 1]];
    while (logits[order.back()] < kth) order.pop_back();
  }
  double total = 0.0;
  for (int32_t id : order) total += p[id];
  std::set<int32_t> out;
  double before = 0.0;
  for (int32_t id : order) {
    if (before >= s.top_p * total) break;
    out.insert(id);
    before += p[id];
  }
  return out;
}

TEST(Sampler, TruncationMatchesNaiveReferenceOnRandomRows) {
  // Even rows: one spike 7 nats above a flat floor, so the floor tokens sit below top-p's first
  // candidate threshold (1e-2 of the max) yet hold most of the mass: the threshold must drop.
  // Odd rows: spread logits (scale 8), mostly settled at the first threshold.
  for (uint64_t row = 0; row < 40; ++row) {
    float scale = row % 2 ? 8.0f : 0.01f;
    std::vector<float> logits(3000);
    for (size_t i = 0; i < logits.size(); ++i) {
      logits[i] = static_cast<float>((uniform(row, i, 9) - 0.5) * scale);
    }
    if (row % 2 == 0) logits[row] = 7.0f;
    SamplingParams params = with([&](SamplingParams& p) {
      p.temperature = 0.5f + static_cast<float>(uniform(row, 0, 10));
      p.top_p = 0.05f + 0.95f * static_cast<float>(uniform(row, 0, 11));
      p.top_k = row % 3 == 0 ? 0 : 1 + static_cast<int32_t>(uniform(row, 0, 12) * 2000);
      p.min_p = row % 4 == 0 ? 0.0f : 0.1f * static_cast<float>(uniform(row, 0, 13));
    });
    EXPECT_EQ(kept(logits, params), reference_support(logits, params)) << "row " << row;
  }
}

TEST(Sampler, MinPDropsTokensBelowFractionOfMax) {
  std::vector<float> logits = logits_of({0.5, 0.2, 0.15, 0.1, 0.05});
  // Threshold 0.25 * 0.5 = 0.125.
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.min_p = 0.25f; })),
            (std::set<int32_t>{0, 1, 2}));
  // After temperature 2 the probabilities go as sqrt(p): ratios to the max are 0.632, 0.548,
  // 0.447, 0.316, so min_p = 0.5 keeps three tokens where it would keep one at T = 1.
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) {
              p.min_p = 0.5f;
              p.temperature = 2.0f;
            })),
            (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) { p.min_p = 1.0f; })),
            (std::set<int32_t>{0}));
}

TEST(Sampler, MinPRunsBeforeTopPAsVllm) {
  // vLLM v1: temperature, min_p, then top-k/top-p. min_p = 0.3 removes 0.1 (< 0.12); the
  // rest renormalise to 0.444, 0.333, 0.222 and top_p = 0.75 keeps two. With top_p first on
  // the raw 0.4, 0.3, 0.2 it would keep three.
  std::vector<float> logits = logits_of({0.4, 0.3, 0.2, 0.1});
  EXPECT_EQ(kept(logits, with([](SamplingParams& p) {
              p.min_p = 0.3f;
              p.top_p = 0.75f;
            })),
            (std::set<int32_t>{0, 1}));
}

// Hand-computed penalty examples on logits {2, -1, 0.5, 3, -2};
// prompt {0, 1}, output {2, 2, 1}: token 0 in prompt, 1 in both (count 1), 2 in output
// (count 2), 3 and 4 unseen.
const std::vector<float> penalty_logits = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f};
const std::vector<int32_t> penalty_prompt = {0, 1};
const std::vector<int32_t> penalty_output = {2, 2, 1};

std::vector<float> penalised(const SamplingParams& params) {
  std::vector<float> x = penalty_logits;
  apply_penalties(x, params, penalty_prompt, penalty_output);
  return x;
}

void expect_logits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << "token " << i;
}

TEST(Sampler, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  // Seen (prompt or output): 0: 2/2, 1: -1*2, 2: 0.5/2.
  expect_logits(penalised(with([](SamplingParams& p) { p.repetition_penalty = 2.0f; })),
                {1.0f, -2.0f, 0.25f, 3.0f, -2.0f});
}

TEST(Sampler, FrequencyPenaltyCountsOutputOnly) {
  // Output counts: 1 -> 1, 2 -> 2; the prompt's token 0 is untouched.
  expect_logits(penalised(with([](SamplingParams& p) { p.frequency_penalty = 0.5f; })),
                {2.0f, -1.5f, -0.5f, 3.0f, -2.0f});
}

TEST(Sampler, PresencePenaltyOncePerOutputToken) {
  expect_logits(penalised(with([](SamplingParams& p) { p.presence_penalty = 0.25f; })),
                {2.0f, -1.25f, 0.25f, 3.0f, -2.0f});
}

TEST(Sampler, PenaltiesCombineRepetitionFirst) {
  // 1: -1*2 - 0.5*1 - 0.25 = -2.75; 2: 0.5/2 - 0.5*2 - 0.25 = -1.0.
  expect_logits(penalised(with([](SamplingParams& p) {
                  p.repetition_penalty = 2.0f;
                  p.frequency_penalty = 0.5f;
                  p.presence_penalty = 0.25f;
                })),
                {1.0f, -2.75f, -1.0f, 3.0f, -2.0f});
  // Negative values reward repetition.
  expect_logits(penalised(with([](SamplingParams& p) { p.frequency_penalty = -1.0f; })),
                {2.0f, 0.0f, 2.5f, 3.0f, -2.0f});
}

TEST(Sampler, PenaltiesChangeTheGreedyChoice) {
  SamplingParams params = with([](SamplingParams& p) {
    p.temperature = 0.0f;
    p.repetition_penalty = 2.0f;
  });
  std::vector<float> logits = {4.0f, 3.0f, 0.0f};
  std::vector<int32_t> output = {0};
  EXPECT_EQ(sample_token(logits, params, no_ids, no_ids, no_ids, 0, 0).token, 0);
  auto r = sample_token(logits, params, no_ids, output, no_ids, 0, 1);
  EXPECT_EQ(r.token, 1);  // 4/2 = 2 < 3
  // The reported logprob stays that of the raw logits.
  EXPECT_FLOAT_EQ(r.logprob, token_logprob(logits, 1));
}

TEST(Sampler, MinTokensMasksEosAndStopIdsUntilReached) {
  std::vector<float> logits = {0.0f, 5.0f, 4.0f, 1.0f};  // eos 1, stop id 2
  std::vector<int32_t> eos = {1};
  SamplingParams params = with([](SamplingParams& p) {
    p.temperature = 0.0f;
    p.min_tokens = 2;
    p.stop_token_ids = {2};
  });
  std::vector<int32_t> one = {3}, two = {3, 3};
  EXPECT_EQ(sample_token(logits, params, no_ids, one, eos, 0, 1).token, 3);
  EXPECT_EQ(sample_token(logits, params, no_ids, two, eos, 0, 2).token, 1);
  auto probs = processed_probs(logits, with([](SamplingParams& p) {
                                 p.min_tokens = 1;
                                 p.stop_token_ids = {2};
                               }),
                               no_ids, no_ids, eos);
  EXPECT_EQ(support(probs), (std::set<int32_t>{0, 3}));
  // ignore_eos takes eos out of the stop set (as vLLM), so only the stop id is masked.
  params.ignore_eos = true;
  EXPECT_EQ(sample_token(logits, params, no_ids, one, eos, 0, 1).token, 1);
}

TEST(Sampler, SameSeedAndPositionGiveSameToken) {
  std::vector<float> logits(64);
  for (int i = 0; i < 64; ++i) logits[i] = std::sin(i * 0.37f);
  SamplingParams params;
  std::vector<int32_t> history = {5, 6, 7};
  for (uint64_t position = 0; position < 50; ++position) {
    // Output history does not feed the draw (no penalties here), only (seed, position) does.
    EXPECT_EQ(sample_token(logits, params, no_ids, no_ids, no_ids, 77, position).token,
              sample_token(logits, params, history, history, no_ids, 77, position).token);
  }
}

TEST(Sampler, DifferentPositionsAndSeedsVary) {
  std::vector<float> logits(16, 0.0f);  // uniform over 16 tokens
  SamplingParams params;
  std::set<int32_t> seen;
  std::vector<int32_t> seed_a, seed_b;
  for (uint64_t position = 0; position < 200; ++position) {
    seed_a.push_back(sample_token(logits, params, no_ids, no_ids, no_ids, 1, position).token);
    seed_b.push_back(sample_token(logits, params, no_ids, no_ids, no_ids, 2, position).token);
    seen.insert(seed_a.back());
  }
  EXPECT_EQ(seen.size(), 16u);  // all 16 appear in 200 uniform draws (miss chance ~4e-5)
  EXPECT_NE(seed_a, seed_b);
}

TEST(Sampler, LogprobsAreRawSortedTopK) {
  std::vector<float> logits = {0.2f, -1.0f, 2.5f, 2.5f, 0.9f, -3.0f};
  SamplingParams params = with([](SamplingParams& p) {
    p.logprobs = 4;
    p.temperature = 0.5f;
    p.top_k = 2;
    p.repetition_penalty = 1.5f;
  });
  std::vector<int32_t> output = {2};
  auto r = sample_token(logits, params, no_ids, output, no_ids, 3, 1);
  std::vector<double> raw = softmax(logits);
  ASSERT_EQ(r.top_logprobs.size(), 4u);
  std::vector<int32_t> want_ids = {2, 3, 4, 0};  // 2 and 3 tie: lower id first
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(r.top_logprobs[i].id, want_ids[i]);
    EXPECT_NEAR(r.top_logprobs[i].logprob, std::log(raw[want_ids[i]]), 1e-6);
    if (i > 0) {
      EXPECT_GE(r.top_logprobs[i - 1].logprob, r.top_logprobs[i].logprob);
    }
  }
  EXPECT_NEAR(r.logprob, std::log(raw[r.token]), 1e-6);
  EXPECT_EQ(r.rank, token_rank(logits, r.token));
  // No logprobs requested: none computed.
  EXPECT_TRUE(sample_token(logits, SamplingParams{}, no_ids, no_ids, no_ids, 3, 1)
                  .top_logprobs.empty());
}

TEST(Sampler, SampleFromProbsIsInverseCdf) {
  std::vector<float> probs = {0.0f, 0.25f, 0.0f, 0.5f, 0.25f};
  EXPECT_EQ(sample_from_probs(probs, 0.0), 1);
  EXPECT_EQ(sample_from_probs(probs, 0.2499), 1);
  EXPECT_EQ(sample_from_probs(probs, 0.25), 3);
  EXPECT_EQ(sample_from_probs(probs, 0.7499), 3);
  EXPECT_EQ(sample_from_probs(probs, 0.75), 4);
  EXPECT_EQ(sample_from_probs(probs, std::nextafter(1.0, 0.0)), 4);
  // Unnormalised input is fine.
  std::vector<float> scaled = {0.0f, 1.0f, 0.0f, 2.0f, 1.0f};
  EXPECT_EQ(sample_from_probs(scaled, 0.5), 3);
  EXPECT_THROW(sample_from_probs(std::vector<float>(3, 0.0f), 0.5), Error);
}

TEST(Sampler, SampleTokenAgreesWithProcessedProbs) {
  std::vector<float> logits(32);
  for (int i = 0; i < 32; ++i) logits[i] = std::cos(i * 0.71f) * 2.0f;
  SamplingParams params = with([](SamplingParams& p) {
    p.temperature = 0.8f;
    p.top_k = 10;
    p.top_p = 0.9f;
    p.min_p = 0.05f;
    p.presence_penalty = 0.5f;
  });
  std::vector<int32_t> output = {1, 2, 3};
  auto probs = processed_probs(logits, params, no_ids, output, no_ids);
  for (uint64_t position = 0; position < 100; ++position) {
    int32_t want = sample_from_probs(probs, uniform(11, position, sample_stream));
    EXPECT_EQ(sample_token(logits, params, no_ids, output, no_ids, 11, position).token, want);
  }
}

TEST(Sampler, EverythingMaskedIsAnError) {
  std::vector<float> logits = {-inf, -inf};
  EXPECT_THROW(processed_probs(logits, SamplingParams{}, no_ids, no_ids, no_ids), Error);
}

void expect_invalid(std::function<void(SamplingParams&)> edit, const std::string& field) {
  SamplingParams params = with(edit);
  try {
    params.validate(100);
    ADD_FAILURE() << "validate accepted a bad " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos)
        << "message '" << e.what() << "' does not name " << field;
  }
}

TEST(SamplingParams, DefaultsAreValid) {
  SamplingParams params;
  EXPECT_NO_THROW(params.validate(100));
  EXPECT_FALSE(params.greedy());
  params.temperature = 0.0f;
  EXPECT_TRUE(params.greedy());
  params.top_k = -1;
  params.logprobs = 20;
  params.prompt_logprobs = 0;
  params.stop_token_ids = {0, 99};
  params.repetition_penalty = 0.5f;
  params.presence_penalty = -2.0f;
  params.frequency_penalty = 2.0f;
  EXPECT_NO_THROW(params.validate(100));
}

TEST(SamplingParams, ValidateRejectsEachBadValueNamingTheField) {
  float nan = std::numeric_limits<float>::quiet_NaN();
  expect_invalid([](SamplingParams& p) { p.n = 0; }, "n must");
  expect_invalid([](SamplingParams& p) { p.temperature = -0.1f; }, "temperature");
  expect_invalid([&](SamplingParams& p) { p.temperature = nan; }, "temperature");
  expect_invalid([](SamplingParams& p) { p.top_p = 0.0f; }, "top_p");
  expect_invalid([](SamplingParams& p) { p.top_p = 1.01f; }, "top_p");
  expect_invalid([](SamplingParams& p) { p.top_k = -2; }, "top_k");
  expect_invalid([](SamplingParams& p) { p.min_p = -0.01f; }, "min_p");
  expect_invalid([](SamplingParams& p) { p.min_p = 1.5f; }, "min_p");
  expect_invalid([](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty");
  expect_invalid([](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty");
  expect_invalid([](SamplingParams& p) { p.presence_penalty = -2.5f; }, "presence_penalty");
  expect_invalid([](SamplingParams& p) { p.frequency_penalty = 3.0f; }, "frequency_penalty");
  expect_invalid([&](SamplingParams& p) { p.frequency_penalty = nan; }, "frequency_penalty");
  expect_invalid([](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens");
  expect_invalid([](SamplingParams& p) { p.min_tokens = -1; }, "min_tokens");
  expect_invalid([](SamplingParams& p) { p.min_tokens = 17; }, "min_tokens");
  expect_invalid([](SamplingParams& p) { p.logprobs = -1; }, "logprobs");
  expect_invalid([](SamplingParams& p) { p.logprobs = 21; }, "logprobs");
  expect_invalid([](SamplingParams& p) { p.prompt_logprobs = 21; }, "prompt_logprobs");
  expect_invalid([](SamplingParams& p) { p.stop_token_ids = {100}; }, "stop_token_ids");
  expect_invalid([](SamplingParams& p) { p.stop_token_ids = {-1}; }, "stop_token_ids");
  expect_invalid([](SamplingParams& p) { p.stop = {""}; }, "stop");
}

TEST(SamplingParams, MaxLogprobsIsConfigurable) {
  SamplingParams params;
  params.logprobs = 50;
  EXPECT_THROW(params.validate(100), Error);
  EXPECT_NO_THROW(params.validate(100, 64));
}

}  // namespace
}  // namespace bf
