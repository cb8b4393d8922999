// Raw-logit logprobs (see logprobs.h).
#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace bf {
namespace {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// NaN ranks below every real logit so it never displaces one.
float rank_key(float x) { return x == x ? x : neg_inf; }

}  // namespace

double log_sum_exp(std::span<const float> logits) {
  float max_logit = neg_inf;
  for (float x : logits) {
    if (x > max_logit) max_logit = x;  // NaN compares false: skipped
  }
  if (max_logit == neg_inf) return max_logit;
  // Each term is in (0, 1] after the max subtraction, so f32 exp cannot overflow; the double
  // sum keeps a 250k-term accumulation exact to ~1e-12.
  double sum = 0.0;
  for (float x : logits) {
    if (x == x) sum += std::exp(x - max_logit);
  }
  return max_logit + std::log(sum);
}

float token_logprob(std::span<const float> logits, int32_t id) {
  BF_CHECK(id >= 0 && static_cast<size_t>(id) < logits.size(), "token_logprob: id ", id,
           " outside vocabulary of ", logits.size());
  return static_cast<float>(static_cast<double>(logits[id]) - log_sum_exp(logits));
}

int32_t token_rank(std::span<const float> logits, int32_t id) {
  BF_CHECK(id >= 0 && static_cast<size_t>(id) < logits.size(), "token_rank: id ", id,
           " outside vocabulary of ", logits.size());
  float value = logits[id];
  int32_t rank = 0;
  for (float x : logits) rank += x >= value ? 1 : 0;
  return rank;
}

std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int32_t k) {
  if (k <= 0 || logits.empty()) return {};
  return top_logprobs(logits, k, log_sum_exp(logits));
}

std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int32_t k,
                                       double log_sum_exp) {
  size_t count = std::min(static_cast<size_t>(std::max(k, 0)), logits.size());
  if (count == 0) return {};
  // better(a, b): a ranks before b. As a heap comparator it keeps the worst entry at the
  // front, the one a new candidate must beat.
  auto better = [](const TokenLogprob& a, const TokenLogprob& b) {
    return a.logprob != b.logprob ? a.logprob > b.logprob : a.id < b.id;
  };
  std::vector<TokenLogprob> heap;  // holds rank keys (logits) until the end
  heap.reserve(count);
  for (size_t i = 0; i < logits.size(); ++i) {
    TokenLogprob entry{static_cast<int32_t>(i), rank_key(logits[i])};
    if (heap.size() < count) {
      heap.push_back(entry);
      std::push_heap(heap.begin(), heap.end(), better);
    } else if (better(entry, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.back() = entry;
      std::push_heap(heap.begin(), heap.end(), better);
    }
  }
  std::sort_heap(heap.begin(), heap.end(), better);  // best first
  for (TokenLogprob& entry : heap) {
    entry.logprob = static_cast<float>(static_cast<double>(logits[entry.id]) - log_sum_exp);
  }
  return heap;
}

}  // namespace bf
