// What every route handler needs: the engine, the tokenizer, the chat template, the metrics
// and the options the server was started with; and the one response type handlers return
// (a JSON body, or an SSE writer the HTTP layer drives). Handlers are plain functions of
// (state, request JSON) so tests can call them without a socket.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/async_engine.h"
#include "server/chat_prompt.h"
#include "server/json_fields.h"
#include "server/metrics.h"

namespace bf::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model_path;                       // as given on the command line
  std::vector<std::string> served_model_names;  // first one is reported; empty: model_path
  std::string api_key;                          // empty: no authentication
  size_t max_body_bytes = size_t{64} << 20;
  // "auto" (on when the chat template mentions <think>), "qwen3" / "deepseek_r1" (on),
  // "none" or "" (off).
  std::string reasoning_parser = "auto";
  std::string chat_template;  // --chat-template: file or text; empty: the model's
  int http_threads = 0;       // 0: sized from max_num_seqs
};

struct ServerState {
  ServerState(AsyncEngine& engine, ServerOptions options);

  AsyncEngine& engine;
  const Tokenizer& tokenizer;
  ServerOptions options;
  Metrics metrics;
  std::optional<ChatPrompt> chat;
  bool reasoning_enabled = false;
  // Set when the server stops: running requests are aborted instead of holding shutdown.
  std::atomic<bool> shutting_down{false};

  const std::string& model_name() const { return options.served_model_names.front(); }
  int32_t max_model_len() const { return engine.engine().config().max_model_len; }
  // A request's "model" must be one of the served names (absent: the first); 404 otherwise.
  void check_model(const std::optional<std::string>& requested) const;
};

// Aborts the group and throws a 503 when the server is shutting down.
void check_shutdown(const ServerState& state, class RequestGroup& group);

// Writes one SSE event ("data: <payload>\n\n"); false once the client is gone.
using SseWrite = std::function<bool(const std::string& payload)>;

struct HandlerResponse {
  int status = 200;
  nlohmann::json body;                          // sent as JSON when stream is empty
  std::function<void(const SseWrite&)> stream;  // set: a text/event-stream response
};

HandlerResponse handle_completions(ServerState& state, const nlohmann::json& body);
HandlerResponse handle_chat_completions(ServerState& state, const nlohmann::json& body,
                                        const std::string& raw_body);
HandlerResponse handle_tokenize(ServerState& state, const nlohmann::json& body,
                                const std::string& raw_body);
HandlerResponse handle_detokenize(ServerState& state, const nlohmann::json& body);
nlohmann::json models_json(const ServerState& state);

// A chat request's messages (+ tools, chat_template_kwargs, add_generation_prompt,
// continue_final_message) rendered with the chat template; shared by chat and /tokenize.
std::string render_chat_prompt(ServerState& state, FieldReader& fields, const std::string& raw_body);

// "cmpl-" / "chatcmpl-" followed by 32 random hex digits.
std::string random_id(const char* prefix);
int64_t unix_time_seconds();

}  // namespace bf::server
