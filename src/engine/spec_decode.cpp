#include "engine/spec_decode.h"

#include "core/error.h"
#include "engine/random.h"

namespace bf {

VerifyResult verify_draft(std::span<const float> logits, int32_t vocab,
                          std::span<const int32_t> draft, const SamplingParams& params,
                          std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids,
                          std::span<const int32_t> eos_token_ids, uint64_t seed,
                          uint64_t first_position) {
  const size_t k = draft.size();
  BF_CHECK(logits.size() == (k + 1) * static_cast<size_t>(vocab), "verify_draft: ",
           logits.size(), " logits for ", k, " draft tokens of vocabulary ", vocab);
  std::vector<int32_t> history(output_ids.begin(), output_ids.end());
  VerifyResult result;
  for (size_t i = 0; i <= k; ++i) {
    std::span<const float> row = logits.subspan(i * vocab, vocab);
    const uint64_t position = first_position + i;
    if (i == k) {  // every draft accepted: the bonus token, drawn as plain decoding draws it
      result.tokens.push_back(
          sample_token(row, params, prompt_ids, history, eos_token_ids, seed, position));
      break;
    }
    std::vector<float> probs = processed_probs(row, params, prompt_ids, history, eos_token_ids);
    const int32_t proposed = draft[i];
    BF_CHECK(proposed >= 0 && proposed < vocab, "verify_draft: draft token ", proposed,
             " outside the vocabulary");
    double total = 0.0;
    for (float p : probs) total += p;
    const double p_proposed = total > 0 ? probs[proposed] / total : 0.0;
    const bool accept = params.greedy()
                            ? probs[proposed] > 0.0f
                            : uniform(seed, position, accept_stream) < p_proposed;
    if (accept) {
      result.tokens.push_back(describe_sample(row, proposed, params));
      history.push_back(proposed);
      ++result.num_accepted;
      continue;
    }
    probs[proposed] = 0.0f;  // the residual max(0, p - onehot(d))
    const double u = params.greedy() ? 0.0 : uniform(seed, position, residual_stream);
    result.tokens.push_back(describe_sample(row, sample_from_probs(probs, u), params));
    break;
  }
  return result;
}

VerifyResult verify_greedy(std::span<const int32_t> argmax, std::span<const int32_t> draft) {
  BF_CHECK(argmax.size() == draft.size() + 1, "verify_greedy: ", argmax.size(),
           " target tokens for ", draft.size(), " draft tokens");
  VerifyResult result;
  for (size_t i = 0; i <= draft.size(); ++i) {
    result.tokens.push_back(SampleResult{.token = argmax[i], .logprob = 0.0f, .rank = 0, .top_logprobs = {}});
    if (i == draft.size() || draft[i] != argmax[i]) break;
    ++result.num_accepted;
  }
  return result;
}

void SpecDecodeStats::record(int32_t num_draft_tokens_in_step, int32_t num_accepted) {
  ++num_drafts;
  num_draft_tokens += num_draft_tokens_in_step;
  num_accepted_tokens += num_accepted;
  if (static_cast<int32_t>(accepted_per_position.size()) < num_draft_tokens_in_step)
    accepted_per_position.resize(num_draft_tokens_in_step, 0);
  for (int32_t i = 0; i < num_accepted; ++i) ++accepted_per_position[i];
}

double SpecDecodeStats::mean_acceptance_length() const {
  return num_drafts == 0 ? 0.0
                         : 1.0 + static_cast<double>(num_accepted_tokens) / num_drafts;
}

}  // namespace bf
