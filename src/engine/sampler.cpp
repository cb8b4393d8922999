// Sampler (see sampler.h). Probabilities are computed in double from max-subtracted logits and
// stored as float only at the end, so truncation decisions (top-p's cumulative mass, min_p's
// ratio) are not perturbed by float rounding over a 250k vocabulary.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "core/error.h"
#include "engine/random.h"

namespace bf {
namespace {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

void check_ids(std::span<const int32_t> ids, size_t vocab_size, const char* what) {
  for (int32_t id : ids) {
    BF_CHECK(id >= 0 && static_cast<size_t>(id) < vocab_size, "sampler: ", what, " id ", id,
             " outside vocabulary of ", vocab_size);
  }
}

// Lowest id among the largest finite-or-inf logits; NaN is never chosen.
int32_t argmax(std::span<const float> logits) {
  int32_t best = -1;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (logits[i] > neg_inf && (best < 0 || logits[i] > logits[best])) {
      best = static_cast<int32_t>(i);
    }
  }
  BF_CHECK(best >= 0, "sampler: no token can be sampled (every logit is -inf or NaN)");
  return best;
}

// Truncation ranks tokens by their logit x, not by p: f32 exp maps logits a few ulps apart to
// the same probability, which would let ties-by-id reorder tokens the logits order strictly.
// p holds unnormalised probabilities (the max token has 1), 0 for removed tokens.

// Keeps the tokens whose logit is at least the k-th largest surviving one; like vLLM, tokens
// tied with the k-th are all kept.
void apply_top_k(std::vector<double>& p, std::span<const float> x, int32_t top_k) {
  std::vector<float> alive;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] > 0.0) alive.push_back(x[i]);
  }
  if (static_cast<size_t>(top_k) >= alive.size()) return;
  std::nth_element(alive.begin(), alive.begin() + (top_k - 1), alive.end(), std::greater<>());
  float kth = alive[top_k - 1];
  for (size_t i = 0; i < p.size(); ++i) {
    if (x[i] < kth) p[i] = 0.0;
  }
}

// Keeps the smallest prefix (descending logit, ties by lower id) whose mass reaches top_p of
// the surviving mass: token i stays iff the mass strictly before it is < top_p * total.
// The first token always stays. Sorting all 250k tokens costs tens of milliseconds, so only
// candidates with p >= threshold are sorted, lowering the threshold until their mass reaches
// the limit: p is monotonic in x, so every candidate outranks every non-candidate and the
// prefix lies among them.
void apply_top_p(std::vector<double>& p, std::span<const float> x, float top_p) {
  double total = 0.0;
  for (double v : p) total += v;
  double limit = static_cast<double>(top_p) * total;
  std::vector<int32_t> candidates;
  // The first threshold (1e-2 of the max) already settles peaked rows.
  for (double threshold = 1e-2;; threshold = threshold > 1e-30 ? threshold * 1e-4 : 0.0) {
    candidates.clear();
    double mass = 0.0;
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] > 0.0 && p[i] >= threshold) {
        candidates.push_back(static_cast<int32_t>(i));
        mass += p[i];
      }
    }
    if (mass >= limit || threshold == 0.0) break;
  }
  std::sort(candidates.begin(), candidates.end(),
            [&](int32_t a, int32_t b) { return x[a] != x[b] ? x[a] > x[b] : a < b; });
  std::vector<double> kept(p.size(), 0.0);
  double before = 0.0;
  for (int32_t id : candidates) {
    if (before >= limit) break;
    kept[id] = p[id];
    before += p[id];
  }
  p.swap(kept);
}

}  // namespace

void apply_min_tokens(std::span<float> logits, const SamplingParams& params,
                      std::span<const int32_t> output_ids,
                      std::span<const int32_t> eos_token_ids) {
  if (output_ids.size() >= static_cast<size_t>(std::max(params.min_tokens, 0))) return;
  check_ids(params.stop_token_ids, logits.size(), "stop_token_ids");
  for (int32_t id : params.stop_token_ids) logits[id] = neg_inf;
  if (params.ignore_eos) return;
  check_ids(eos_token_ids, logits.size(), "eos");
  for (int32_t id : eos_token_ids) logits[id] = neg_inf;
}

void apply_penalties(std::span<float> logits, const SamplingParams& params,
                     std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids) {
  bool repetition = params.repetition_penalty != 1.0f;
  bool additive = params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f;
  if (!repetition && !additive) return;
  check_ids(prompt_ids, logits.size(), "prompt");
  check_ids(output_ids, logits.size(), "output");
  // Sorted copies instead of V-sized count arrays: cost follows the sequence, not the vocab.
  std::vector<int32_t> output_sorted(output_ids.begin(), output_ids.end());
  std::sort(output_sorted.begin(), output_sorted.end());
  if (repetition) {
    std::vector<int32_t> seen(prompt_ids.begin(), prompt_ids.end());
    seen.insert(seen.end(), output_sorted.begin(), output_sorted.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    float penalty = params.repetition_penalty;
    for (int32_t id : seen) {
      logits[id] = logits[id] > 0.0f ? logits[id] / penalty : logits[id] * penalty;
    }
  }
  if (additive) {
    for (size_t i = 0; i < output_sorted.size();) {
      int32_t id = output_sorted[i];
      size_t count = 0;
      for (; i < output_sorted.size() && output_sorted[i] == id; ++i) ++count;
      logits[id] -= params.frequency_penalty * static_cast<float>(count);
      logits[id] -= params.presence_penalty;
    }
  }
}

std::vector<float> processed_probs(std::span<const float> logits, const SamplingParams& params,
                                   std::span<const int32_t> prompt_ids,
                                   std::span<const int32_t> output_ids,
                                   std::span<const int32_t> eos_token_ids) {
  std::vector<float> x(logits.begin(), logits.end());
  apply_min_tokens(x, params, output_ids, eos_token_ids);
  apply_penalties(x, params, prompt_ids, output_ids);
  std::vector<float> probs(x.size(), 0.0f);
  if (params.greedy()) {
    probs[argmax(x)] = 1.0f;
    return probs;
  }
  // Softmax of x / T. The max logit gives exp(0) = 1, so min_p's p_max is 1 unnormalised.
  // f32 exponent (each in (0, 1], no overflow), kept in double for the truncation sums.
  float max_logit = x[argmax(x)];
  float inv_temperature = 1.0f / params.temperature;
  std::vector<double> p(x.size(), 0.0);
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] > neg_inf) p[i] = std::exp((x[i] - max_logit) * inv_temperature);
  }
  if (params.min_p > 0.0f) {
    double threshold = static_cast<double>(params.min_p);  // min_p * p_max, p_max = 1
    for (double& v : p) {
      if (v < threshold) v = 0.0;
    }
  }
  if (params.top_k > 0) apply_top_k(p, x, params.top_k);
  if (params.top_p < 1.0f) apply_top_p(p, x, params.top_p);
  double total = 0.0;
  for (double v : p) total += v;
  for (size_t i = 0; i < p.size(); ++i) probs[i] = static_cast<float>(p[i] / total);
  return probs;
}

int32_t sample_from_probs(std::span<const float> probs, double u) {
  BF_CHECK(u >= 0.0 && u < 1.0, "sample_from_probs: u must be in [0, 1), got ", u);
  double total = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] > 0.0f) {
      total += probs[i];
      last = static_cast<int32_t>(i);
    }
  }
  BF_CHECK(last >= 0, "sample_from_probs: every probability is zero");
  double target = u * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (!(probs[i] > 0.0f)) continue;
    cumulative += probs[i];
    if (cumulative > target) return static_cast<int32_t>(i);
  }
  return last;  // rounding left the cumulative sum a hair below target
}

SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> prompt_ids,
                          std::span<const int32_t> output_ids,
                          std::span<const int32_t> eos_token_ids, uint64_t seed,
                          uint64_t position) {
  std::vector<float> probs =
      processed_probs(logits, params, prompt_ids, output_ids, eos_token_ids);
  // Greedy is one-hot, so any u picks the argmax; skip the draw.
  double u = params.greedy() ? 0.0 : uniform(seed, position, sample_stream);
  return describe_sample(logits, sample_from_probs(probs, u), params);
}

SampleResult describe_sample(std::span<const float> logits, int32_t token,
                             const SamplingParams& params) {
  SampleResult result;
  result.token = token;
  const double lse = log_sum_exp(logits);
  result.logprob = static_cast<float>(static_cast<double>(logits[token]) - lse);
  result.rank = token_rank(logits, token);
  if (params.logprobs) result.top_logprobs = top_logprobs(logits, *params.logprobs, lse);
  return result;
}

}  // namespace bf
