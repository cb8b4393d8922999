// Speculative verification of one sequence's draft (DFlash: drafts are the drafter's argmax,
// i.e. one-hot draft distributions). Lossless by construction: the committed tokens follow
// exactly the distribution plain decoding samples from (sampler.h processed_probs, with the
// same min_tokens / penalties / temperature / top-k / top-p / min-p applied at every position
// as if the earlier draft tokens had been generated).
//   row i of the verify logits predicts output position first_position + i;
//   draft token d_i (i < k) is accepted with probability p_i(d_i) (greedy: iff it is the
//   argmax), drawn with uniform(seed, position, accept_stream);
//   at the first rejection the token is drawn from p_i without d_i (residual_stream);
//   after k acceptances a bonus token is drawn from p_k (sample_stream, as plain decoding).
// Standard rejection sampling with q = one-hot(d): accept min(1, p(d)/q(d)) = p(d); residual
// max(0, p - q) = p with d removed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampler.h"
#include "engine/sampling_params.h"

namespace bf {

struct VerifyResult {
  int32_t num_accepted = 0;          // accepted draft tokens, 0..k
  std::vector<SampleResult> tokens;  // num_accepted + 1 committed tokens, with raw logprobs
};

// logits: (k + 1) rows of `vocab` raw logits; draft: the k draft tokens.
VerifyResult verify_draft(std::span<const float> logits, int32_t vocab,
                          std::span<const int32_t> draft, const SamplingParams& params,
                          std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids,
                          std::span<const int32_t> eos_token_ids, uint64_t seed,
                          uint64_t first_position);

// Greedy verification from the target's argmax of each of the k + 1 rows alone (requests
// for which the argmax is the whole distribution: see Engine's argmax path). Tokens carry
// no logprobs.
VerifyResult verify_greedy(std::span<const int32_t> argmax, std::span<const int32_t> draft);

// Acceptance statistics, vLLM's spec-decode counters.
struct SpecDecodeStats {
  int64_t num_drafts = 0;
  int64_t num_draft_tokens = 0;
  int64_t num_accepted_tokens = 0;
  std::vector<int64_t> accepted_per_position;  // [k]: drafts whose position i was accepted

  void record(int32_t num_draft_tokens, int32_t num_accepted);
  // Tokens committed per verify step (accepted + 1), averaged over drafts.
  double mean_acceptance_length() const;
};

}  // namespace bf
