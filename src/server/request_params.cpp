#include "server/request_params.h"

#include <limits>

#include "core/log.h"
#include "server/api_error.h"

namespace bf::server {

std::vector<int32_t> parse_token_ids(const nlohmann::json& value, const std::string& field) {
  if (!value.is_array()) bad_request(field + " must be a list of token ids", field);
  std::vector<int32_t> ids;
  ids.reserve(value.size());
  for (const nlohmann::json& id : value) {
    if (!id.is_number_integer())
      bad_request(field + " must be a list of integer token ids, found " + json_type_name(id), field);
    int64_t v = id.is_number_unsigned() && id.get<uint64_t>() > uint64_t{1} << 62
                    ? std::numeric_limits<int64_t>::max()
                    : id.get<int64_t>();
    if (v < 0 || v > std::numeric_limits<int32_t>::max())
      bad_request(field + ": token id " + id.dump() + " is out of range", field);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

std::vector<PromptInput> parse_prompts(const nlohmann::json& prompt, const Tokenizer& tokenizer) {
  auto from_text = [&](const std::string& text) {
    if (text.empty()) bad_request("prompt must not be empty", "prompt");
    return PromptInput{text, tokenizer.encode(text, /*allow_special=*/true)};
  };
  auto from_ids = [&](const nlohmann::json& ids) {
    PromptInput input{std::nullopt, parse_token_ids(ids, "prompt")};
    if (input.ids.empty()) bad_request("prompt must not be empty", "prompt");
    return input;
  };
  std::vector<PromptInput> prompts;
  if (prompt.is_string()) {
    prompts.push_back(from_text(prompt.get<std::string>()));
  } else if (prompt.is_array()) {
    if (prompt.empty()) bad_request("prompt must not be empty", "prompt");
    if (prompt.size() > max_prompts_per_request)
      bad_request("at most " + std::to_string(max_prompts_per_request) +
                  " prompts per request, got " + std::to_string(prompt.size()), "prompt");
    const nlohmann::json& first = prompt.front();
    if (first.is_number()) {
      prompts.push_back(from_ids(prompt));
    } else if (first.is_string()) {
      for (const nlohmann::json& p : prompt) {
        if (!p.is_string()) bad_request("prompt: a list of prompts must all be strings", "prompt");
        prompts.push_back(from_text(p.get<std::string>()));
      }
    } else if (first.is_array()) {
      for (const nlohmann::json& p : prompt) prompts.push_back(from_ids(p));
    } else {
      bad_request("prompt must be a string, a list of token ids, a list of strings or a list of "
                  "token id lists", "prompt");
    }
  } else {
    bad_request("prompt must be a string, a list of token ids, a list of strings or a list of "
                "token id lists, got " + json_type_name(prompt), "prompt");
  }
  return prompts;
}

SamplingParams parse_sampling_params(FieldReader& f, const GenerationDefaults& defaults) {
  SamplingParams p;
  p.n = f.get_int32("n").value_or(1);
  if (p.n > max_choices_per_request)
    bad_request("n must be at most " + std::to_string(max_choices_per_request) + ", got " +
                std::to_string(p.n), "n");
  p.temperature = f.get_float("temperature").value_or(defaults.temperature.value_or(1.0f));
  p.top_p = f.get_float("top_p").value_or(defaults.top_p.value_or(1.0f));
  p.top_k = f.get_int32("top_k").value_or(defaults.top_k.value_or(0));
  p.min_p = f.get_float("min_p").value_or(defaults.min_p.value_or(0.0f));
  p.repetition_penalty =
      f.get_float("repetition_penalty").value_or(defaults.repetition_penalty.value_or(1.0f));
  p.presence_penalty = f.get_float("presence_penalty").value_or(0.0f);
  p.frequency_penalty = f.get_float("frequency_penalty").value_or(0.0f);
  if (auto seed = f.get_int("seed", std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max()))
    p.seed = static_cast<uint64_t>(*seed);
  if (const nlohmann::json* stop = f.get("stop")) {
    if (stop->is_string()) {
      p.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const nlohmann::json& s : *stop) {
        if (!s.is_string()) bad_request("stop must be a string or a list of strings", "stop");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      bad_request("stop must be a string or a list of strings, got " + json_type_name(*stop),
                  "stop");
    }
  }
  if (const nlohmann::json* ids = f.get("stop_token_ids"))
    p.stop_token_ids = parse_token_ids(*ids, "stop_token_ids");
  p.ignore_eos = f.get_bool("ignore_eos").value_or(false);
  p.min_tokens = f.get_int32("min_tokens").value_or(0);
  p.skip_special_tokens = f.get_bool("skip_special_tokens").value_or(true);
  p.include_stop_str_in_output = f.get_bool("include_stop_str_in_output").value_or(false);
  p.prompt_logprobs = f.get_int32("prompt_logprobs");
  // vLLM: -1 means the whole vocabulary; blockflash caps at --max-logprobs instead.
  return p;
}

StreamOptions parse_stream_options(FieldReader& f) {
  StreamOptions options;
  options.stream = f.get_bool("stream").value_or(false);
  if (const nlohmann::json* so = f.get_object("stream_options")) {
    if (!options.stream)
      bad_request("Stream options can only be defined when `stream=True`.", "stream_options");
    FieldReader sf(*so);
    options.include_usage = sf.get_bool("include_usage").value_or(false);
    sf.get_bool("continuous_usage_stats");  // accepted, not implemented
  }
  return options;
}

void reject_unsupported_fields(FieldReader& f, int32_t n) {
  if (f.get_string("suffix")) bad_request("suffix is not currently supported", "suffix");
  if (auto best_of = f.get_int32("best_of"); best_of && *best_of != n)
    bad_request("best_of is not supported (it must equal n)", "best_of");
  if (const nlohmann::json* bias = f.get("logit_bias"); bias && !bias->empty())
    bad_request("logit_bias is not supported by blockflash", "logit_bias");
  if (const nlohmann::json* format = f.get_object("response_format")) {
    auto type = format->find("type");
    if (type == format->end() || !type->is_string() || *type != "text")
      bad_request("response_format: only {\"type\": \"text\"} is supported by blockflash",
                  "response_format");
  }
  for (const char* guided : {"guided_json", "guided_regex", "guided_choice", "guided_grammar",
                             "structured_outputs"})
    if (f.get(guided))
      bad_request(std::string(guided) + ": structured output is not supported by blockflash",
                  guided);
  // Read and ignored, as vLLM does for fields that only matter to OpenAI's service.
  for (const char* ignored : {"user", "service_tier", "store", "metadata", "request_id",
                              "priority", "parallel_tool_calls", "add_special_tokens"})
    f.get(ignored);
}

void log_ignored_fields(const FieldReader& fields, const char* endpoint) {
  std::vector<std::string> unread = fields.unread_fields();
  if (unread.empty()) return;
  std::string list;
  for (const std::string& name : unread) list += (list.empty() ? "" : ", ") + name;
  log_warn(endpoint, ": the following fields were present in the request but ignored: ", list);
}

void check_context_length(size_t num_prompt_tokens, int64_t max_tokens, int32_t max_model_len) {
  int64_t total = static_cast<int64_t>(num_prompt_tokens) + max_tokens;
  if (total > max_model_len)
    bad_request(str_cat("this model's maximum context length is ", max_model_len,
                        " tokens, but the request has ", num_prompt_tokens,
                        " prompt tokens and asks for ", max_tokens, " output tokens (", total,
                        " in total)"));
}

void rethrow_as_bad_request(const std::exception& error) {
  std::string message = error.what();
  std::optional<std::string> param;
  for (const char* field : {"n", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
                            "frequency_penalty", "repetition_penalty", "max_tokens", "min_tokens",
                            "logprobs", "prompt_logprobs", "stop_token_ids", "stop"}) {
    std::string name = field;
    if (message.rfind(name + " ", 0) == 0 || message.rfind(name + ":", 0) == 0) {
      param = name;
      break;
    }
  }
  if (message.rfind("prompt", 0) == 0 || message.rfind("the prompt", 0) == 0) param = "prompt";
  bad_request(message, param);
}

}  // namespace bf::server
