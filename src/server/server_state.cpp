#include "server/server_state.h"

#include <chrono>
#include <random>

#include "core/log.h"
#include "server/api_error.h"
#include "server/output_format.h"
#include "server/request_group.h"
#include "server/request_params.h"

namespace bf::server {

ServerState::ServerState(AsyncEngine& engine_, ServerOptions options_)
    : engine(engine_), tokenizer(engine_.engine().tokenizer()), options(std::move(options_)) {
  if (options.served_model_names.empty()) options.served_model_names.push_back(options.model_path);
  chat = ChatPrompt::load(options.model_path, options.chat_template);
  const std::string& parser = options.reasoning_parser;
  if (parser == "auto") {
    reasoning_enabled = chat && chat->mentions_think();
  } else if (parser == "qwen3" || parser == "deepseek_r1") {
    reasoning_enabled = true;
  } else {
    BF_CHECK(parser.empty() || parser == "none", "unknown --reasoning-parser '", parser,
             "' (expected auto, qwen3, deepseek_r1 or none)");
  }
  if (!chat) log_warn("no chat template found: /v1/chat/completions will answer 400");
  log_info("reasoning parser: ", reasoning_enabled ? "qwen3" : "off");
}

void ServerState::check_model(const std::optional<std::string>& requested) const {
  if (!requested) return;
  for (const std::string& name : options.served_model_names)
    if (*requested == name) return;
  throw ApiError(404, "NotFoundError", "The model `" + *requested + "` does not exist.", "model");
}

void check_shutdown(const ServerState& state, RequestGroup& group) {
  if (!state.shutting_down.load()) return;
  group.abort();
  throw ApiError(503, "ServiceUnavailableError", "the server is shutting down");
}

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* hex = "0123456789abcdef";
  std::string id = prefix;
  for (int i = 0; i < 32; ++i) id += hex[rng() & 15];
  return id;
}

int64_t unix_time_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

nlohmann::json models_json(const ServerState& state) {
  nlohmann::json data = nlohmann::json::array();
  for (const std::string& name : state.options.served_model_names)
    data.push_back({{"id", name},
                    {"object", "model"},
                    {"created", unix_time_seconds()},
                    {"owned_by", "blockflash"},
                    {"root", state.options.model_path},
                    {"parent", nullptr},
                    {"max_model_len", state.max_model_len()}});
  return {{"object", "list"}, {"data", std::move(data)}};
}

// POST /tokenize: {prompt} or {messages, add_generation_prompt, ...} as vLLM's.
HandlerResponse handle_tokenize(ServerState& state, const nlohmann::json& body,
                                const std::string& raw_body) {
  FieldReader f(body);
  state.check_model(f.get_string("model"));
  f.get_bool("add_special_tokens");  // Qwen tokenizers add no BOS/EOS either way
  bool return_token_strs = f.get_bool("return_token_strs").value_or(false);
  std::vector<int32_t> ids;
  if (f.has("messages")) {
    ids = state.tokenizer.encode(render_chat_prompt(state, f, raw_body), true);
  } else if (auto prompt = f.get_string("prompt")) {
    ids = state.tokenizer.encode(*prompt, true);
  } else {
    bad_request("either prompt (a string) or messages is required", "prompt");
  }
  log_ignored_fields(f, "/tokenize");
  nlohmann::json strs = nullptr;
  if (return_token_strs) {
    strs = nlohmann::json::array();
    for (int32_t id : ids) strs.push_back(state.tokenizer.token_string(id));
  }
  HandlerResponse response;
  response.body = {{"count", ids.size()},
                   {"max_model_len", state.max_model_len()},
                   {"tokens", ids},
                   {"token_strs", strs}};
  return response;
}

// POST /detokenize: {tokens} -> {prompt}.
HandlerResponse handle_detokenize(ServerState& state, const nlohmann::json& body) {
  FieldReader f(body);
  state.check_model(f.get_string("model"));
  const nlohmann::json* tokens = f.get("tokens");
  if (!tokens) bad_request("tokens is required", "tokens");
  std::vector<int32_t> ids = parse_token_ids(*tokens, "tokens");
  for (int32_t id : ids)
    if (!state.tokenizer.contains(id))
      bad_request("token id " + std::to_string(id) + " is not in the vocabulary", "tokens");
  log_ignored_fields(f, "/detokenize");
  HandlerResponse response;
  response.body = {{"prompt", state.tokenizer.decode(ids, false)}};
  return response;
}

}  // namespace bf::server
