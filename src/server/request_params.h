// The parts of the OpenAI request bodies that /v1/completions and /v1/chat/completions share:
// sampling fields (vLLM's names, ranges and defaults, generation_config.json filling the
// unset ones as vLLM's --generation-config auto does), stop conditions, stream options and
// prompts given as text or token ids. Everything here throws ApiError 400 naming the field.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampling_params.h"
#include "model/config.h"
#include "server/json_fields.h"
#include "tokenizer/tokenizer.h"

namespace bf::server {

// Most choices one request may ask for (n): each is a sequence with its own state slot.
inline constexpr int32_t max_choices_per_request = 128;
// Most prompts in one batched /v1/completions request.
inline constexpr size_t max_prompts_per_request = 1024;

// One prompt of a completions request: the ids, and the text when it was given as text.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

// "prompt": a string, a list of ids, a list of strings or a list of id lists.
std::vector<PromptInput> parse_prompts(const nlohmann::json& prompt, const Tokenizer& tokenizer);

// A list of token ids (field names the error).
std::vector<int32_t> parse_token_ids(const nlohmann::json& value, const std::string& field);

// Sampling fields shared by both endpoints: n, temperature, top_p, top_k, min_p, penalties,
// seed, stop, stop_token_ids, ignore_eos, min_tokens, skip_special_tokens,
// include_stop_str_in_output, prompt_logprobs. max_tokens and logprobs are the caller's.
SamplingParams parse_sampling_params(FieldReader& fields, const GenerationDefaults& defaults);

struct StreamOptions {
  bool stream = false;
  bool include_usage = false;
};
StreamOptions parse_stream_options(FieldReader& fields);

// Fields blockflash does not implement and that change the output (suffix, logit_bias,
// best_of > n, response_format other than text, guided decoding): a 400 rather than
// silently different results. Fields that change nothing (user, ...) are read and ignored.
void reject_unsupported_fields(FieldReader& fields, int32_t n);

// Logs the fields of the body nobody read (vLLM: "fields were present but ignored").
void log_ignored_fields(const FieldReader& fields, const char* endpoint);

// Checks prompt + max_tokens against max_model_len in 64-bit arithmetic with the engine's
// message, before the engine's own (32-bit) check sees a huge max_tokens.
void check_context_length(size_t num_prompt_tokens, int64_t max_tokens, int32_t max_model_len);

// bf::Error from SamplingParams::validate or Engine::validate_request as a 400; the field
// is taken from the message when it starts with one.
[[noreturn]] void rethrow_as_bad_request(const std::exception& error);

}  // namespace bf::server
