// SamplingParams: the per-request sampling knobs, with vLLM's names, defaults and meaning.
// The server fills one from the OpenAI request and calls validate() before submission, so
// the engine and the sampler may assume every field is in range. Greedy is decided here
// (temperature below vLLM's epsilon) so every component agrees on which path a request takes.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"

namespace bf {

// vLLM's default --max-logprobs: the most top-k logprobs a request may ask for.
inline constexpr int32_t default_max_logprobs = 20;

struct SamplingParams {
  int32_t n = 1;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;  // 0 or -1: off
  float min_p = 0.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  std::optional<uint64_t> seed;  // absent: the engine draws one at submission (random.h)
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;  // eos/stop token ids are masked until this many outputs exist
  bool ignore_eos = false;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  std::optional<int32_t> logprobs;  // top-k logprobs per output token
  std::optional<int32_t> prompt_logprobs;  // top-k logprobs per prompt token
  bool skip_special_tokens = true;
  bool include_stop_str_in_output = false;

  // Throws bf::Error naming the first bad field and its value.
  void validate(int32_t vocab_size, int32_t max_logprobs = default_max_logprobs) const;

  // vLLM's _SAMPLING_EPS: below it, dividing logits by the temperature is unstable and the
  // result is argmax anyway.
  bool greedy() const { return temperature < 1e-5f; }
};

inline void SamplingParams::validate(int32_t vocab_size, int32_t max_logprobs) const {
  // Written as !(x ok) so NaN fails every check.
  BF_CHECK(n >= 1, "n must be at least 1, got ", n);
  BF_CHECK(std::isfinite(temperature) && temperature >= 0.0f,
           "temperature must be non-negative, got ", temperature);
  BF_CHECK(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got ", top_p);
  BF_CHECK(top_k >= -1, "top_k must be -1 (disable) or at least 1, got ", top_k);
  BF_CHECK(min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got ", min_p);
  BF_CHECK(presence_penalty >= -2.0f && presence_penalty <= 2.0f,
           "presence_penalty must be in [-2, 2], got ", presence_penalty);
  BF_CHECK(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
           "frequency_penalty must be in [-2, 2], got ", frequency_penalty);
  BF_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
           "repetition_penalty must be greater than 0, got ", repetition_penalty);
  BF_CHECK(max_tokens >= 1, "max_tokens must be at least 1, got ", max_tokens);
  BF_CHECK(min_tokens >= 0, "min_tokens must be non-negative, got ", min_tokens);
  BF_CHECK(min_tokens <= max_tokens, "min_tokens must be at most max_tokens (", max_tokens,
           "), got ", min_tokens);
  if (logprobs) {
    BF_CHECK(*logprobs >= 0 && *logprobs <= max_logprobs, "logprobs must be in [0, ",
             max_logprobs, "], got ", *logprobs);
  }
  if (prompt_logprobs) {
    BF_CHECK(*prompt_logprobs >= 0 && *prompt_logprobs <= max_logprobs,
             "prompt_logprobs must be in [0, ", max_logprobs, "], got ", *prompt_logprobs);
  }
  for (int32_t id : stop_token_ids) {
    BF_CHECK(id >= 0 && id < vocab_size, "stop_token_ids: ", id,
             " is outside the vocabulary [0, ", vocab_size, ")");
  }
  for (const std::string& s : stop) {
    BF_CHECK(!s.empty(), "stop strings must not be empty");
  }
}

}  // namespace bf
