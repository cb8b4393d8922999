// Logprobs of one row of raw logits: natural-log softmax, as vLLM's default logprobs_mode
// (raw_logprobs), i.e. before penalties, temperature and truncation. Used for each sampled
// token and for prompt_logprobs. The sum of exponentials is accumulated in double after
// subtracting the max, so a 250k vocabulary loses no precision and never overflows.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace bf {

struct TokenLogprob {
  int32_t id;
  float logprob;
};

// log(sum(exp(logits))): f32 exponentials of max-subtracted logits, summed in double;
// -inf if every logit is -inf. NaN logits are skipped.
double log_sum_exp(std::span<const float> logits);

// log_softmax(logits)[id].
float token_logprob(std::span<const float> logits, int32_t id);

// vLLM's rank of id: the number of tokens whose logit is >= logits[id] (1 = most likely;
// ties share the worse rank). NaN logits never count.
int32_t token_rank(std::span<const float> logits, int32_t id);

// The k largest entries of log_softmax(logits), sorted descending, ties by lower id;
// k is clamped to the vocabulary size, k <= 0 gives an empty vector.
// One pass with a k-entry heap: O(V log k), no V-sized scratch.
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int32_t k);
// The same with log_sum_exp(logits) already known (the sampler computes it once per token).
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, int32_t k,
                                       double log_sum_exp);

}  // namespace bf
