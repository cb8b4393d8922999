// OpenAI / vLLM JSON shapes of generation outputs: token texts, the completions logprobs
// object (tokens, token_logprobs, top_logprobs, text_offset), the chat logprobs list
// ({token, logprob, bytes, top_logprobs}), vLLM's prompt_logprobs, stop_reason and usage.
// -inf logprobs are written as -9999.0 (JSON has no infinity), as vLLM does.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine_types.h"
#include "tokenizer/tokenizer.h"

namespace bf::server {

// The text of one token alone ("" for an id the tokenizer does not know).
std::string token_text(const Tokenizer& tokenizer, int32_t id);
double json_logprob(float logprob);

// Accumulates the completions logprobs object; take() returns what was added since the last
// take() (one streaming chunk), offsets continuing across calls.
class CompletionLogprobs {
 public:
  CompletionLogprobs(const Tokenizer& tokenizer, int32_t top_k)
      : tokenizer_(&tokenizer), top_k_(top_k) { clear(); }
  // A prompt token (echo): its logprob, or null for the first prompt token.
  void add_prompt_token(int32_t id, const std::optional<PositionLogprobs>& logprobs);
  void add(const PositionLogprobs& logprobs);
  bool empty() const { return tokens_.empty(); }
  nlohmann::json take();

 private:
  void clear();
  void append_token(int32_t id);
  const Tokenizer* tokenizer_;
  int32_t top_k_;
  size_t offset_ = 0;  // characters (code points) of the token texts so far
  nlohmann::json tokens_, token_logprobs_, top_logprobs_, text_offset_;
};

// Chat: one entry of logprobs.content per token.
nlohmann::json chat_logprobs_entries(const Tokenizer& tokenizer,
                                     const std::vector<PositionLogprobs>& logprobs, int32_t top_k);

// vLLM's prompt_logprobs: [null, {"<id>": {logprob, rank, decoded_token}, ...}, ...] with the
// prompt token itself and the top_k most likely.
nlohmann::json prompt_logprobs_json(const Tokenizer& tokenizer,
                                    const std::vector<std::optional<PositionLogprobs>>& positions,
                                    int32_t top_k);

// stop_reason: null (eos, length), the stop string, or the stop token id as a number.
nlohmann::json stop_reason_json(const SequenceUpdate& update, const std::vector<std::string>& stop);

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

}  // namespace bf::server
