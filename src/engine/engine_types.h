// What goes into the engine (a request: prompt ids + sampling parameters) and what comes
// out (per-sequence updates: new tokens, their logprobs, new text, finish). Plain data, no
// JSON: the server and the CLI turn these into their own formats.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/logprobs.h"
#include "engine/sampling_params.h"
#include "engine/sequence.h"

namespace bf {

struct EngineRequest {
  int64_t request_id = 0;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
};

// Logprob information of one position: the token there, its logprob and rank under the
// raw distribution that predicted it, and the top-k of that distribution.
struct PositionLogprobs {
  int32_t token = 0;
  float logprob = 0.0f;
  int32_t rank = 0;  // 1 = most likely
  std::vector<TokenLogprob> top;
};

// One speculative step of a sequence: the drafter's proposal and how many of it the target
// accepted (excluding the target's own token, which is always committed too).
struct SpecStep {
  std::vector<int32_t> draft_ids;
  int32_t accepted = 0;
};

struct SequenceUpdate {
  SeqId id;
  std::vector<int32_t> new_token_ids;
  std::vector<PositionLogprobs> new_logprobs;  // one per new token when params.logprobs is set
  std::string new_text;                        // detokenized, stop strings removed
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_reason;  // the stop string or token id that ended it, as text
  int32_t num_prompt_tokens = 0;
  int32_t num_output_tokens = 0;
  // Sent once, with the first update, when params.prompt_logprobs is set: entry 0 is empty
  // (nothing predicts the first token), entry i the distribution predicting prompt token i.
  std::optional<std::vector<std::optional<PositionLogprobs>>> prompt_logprobs;
  std::vector<SpecStep> spec_steps;  // speculative steps since the last update
};

// Called on the engine thread for every update; must not call back into the engine.
using UpdateCallback = std::function<void(const SequenceUpdate&)>;

}  // namespace bf
