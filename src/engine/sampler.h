// Host-side sampler for one row of f32 logits (vocabulary V) per sequence, in vLLM v1's order:
//   1. logprobs of the RAW logits (vLLM's default logprobs_mode raw_logprobs);
//   2. min_tokens: stop tokens masked to -inf until min_tokens outputs exist;
//   3. penalties: repetition (prompt + output), then frequency and presence (output only);
//   4. greedy (temperature < 1e-5): argmax, ties to the lowest id;
//      otherwise temperature, min_p, top-k, top-p (vLLM applies min_p before top-k/top-p),
//      then one inverse-CDF draw with uniform(seed, position, sample_stream).
// processed_probs is steps 2-4 as a distribution; sample_token is built on it, so speculative
// rejection sampling sees exactly the distribution that plain decoding samples from.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/logprobs.h"
#include "engine/sampling_params.h"

namespace bf {

struct SampleResult {
  int32_t token;
  float logprob;  // of token under log_softmax of the raw logits
  int32_t rank;  // of token under the raw logits (token_rank), 1 = most likely
  std::vector<TokenLogprob> top_logprobs;  // params.logprobs entries of raw log_softmax,
                                           // sorted descending, ties by lower id
};

// Sets the logits of stop tokens to -inf while output_ids.size() < params.min_tokens.
// Stop tokens: params.stop_token_ids, plus eos_token_ids unless params.ignore_eos (as vLLM,
// where ignore_eos takes eos out of the stop set). eos_token_ids come from the model's
// generation_config (Qwen has several), which is why they are an argument and not a param.
void apply_min_tokens(std::span<float> logits, const SamplingParams& params,
                      std::span<const int32_t> output_ids, std::span<const int32_t> eos_token_ids);

// vLLM's apply_penalties, in place. Repetition: tokens seen in prompt or output get
// logit / p if logit > 0, else logit * p. Then logit -= frequency * count_in_output
// and logit -= presence * (count_in_output > 0).
void apply_penalties(std::span<float> logits, const SamplingParams& params,
                     std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids);

// The distribution sample_token draws from, length V, summing to ~1: after min_tokens,
// penalties, temperature, min_p, top-k, top-p. Greedy gives a one-hot at the argmax (the
// verifier's greedy rule is then "accept iff the draft is the one-hot token").
// Throws bf::Error if no token survives (every logit -inf or NaN).
std::vector<float> processed_probs(std::span<const float> logits, const SamplingParams& params,
                                   std::span<const int32_t> prompt_ids,
                                   std::span<const int32_t> output_ids,
                                   std::span<const int32_t> eos_token_ids);

// Inverse CDF: the first id whose cumulative probability exceeds u * sum(probs), u in [0, 1).
// Never returns an id with zero probability. probs need not be normalised.
int32_t sample_from_probs(std::span<const float> probs, double u);

// The SampleResult of `token` drawn from `logits`: its raw logprob and rank, and the top
// params.logprobs entries (what plain sampling and speculative verification both report).
SampleResult describe_sample(std::span<const float> logits, int32_t token,
                             const SamplingParams& params);

// One token for one sequence. position: index of the output token being drawn
// (output_ids.size() in plain decoding); seed: the request's seed (random.h resolve_seed).
SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> prompt_ids,
                          std::span<const int32_t> output_ids,
                          std::span<const int32_t> eos_token_ids, uint64_t seed,
                          uint64_t position);

}  // namespace bf
