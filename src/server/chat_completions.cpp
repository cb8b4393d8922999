// POST /v1/chat/completions: messages -> chat template -> one engine request with n
// sequences; the output split into reasoning_content and content by the qwen3 reasoning
// parser when it is enabled; JSON or SSE chunks (first chunk of each choice carries the role).
#include <chrono>

#include "server/api_error.h"
#include "server/output_format.h"
#include "server/reasoning_parser.h"
#include "server/request_group.h"
#include "server/request_params.h"
#include "server/server_state.h"

namespace bf::server {
namespace {

struct ChatChoice {
  std::string text;
  std::string reasoning;
  std::string content;
  std::optional<ReasoningParser> parser;
  int64_t num_tokens = 0;
  nlohmann::json logprobs = nlohmann::json::array();
  bool finished = false;
  std::string finish_reason;
  nlohmann::json stop_reason;
};

struct ChatJob {
  std::string id = random_id("chatcmpl-");
  int64_t created = unix_time_seconds();
  std::string model;
  SamplingParams params;
  bool logprobs = false;
  int32_t top_logprobs = 0;
  StreamOptions stream;
  std::shared_ptr<RequestGroup> group;
  std::vector<ChatChoice> choices;
  int64_t num_prompt_tokens = 0;
  std::optional<int32_t> prompt_logprobs;  // vLLM extension: top-k per prompt token
  nlohmann::json prompt_logprobs_json;     // filled from the first update that has them
};

// Applies an update; returns the delta it produced (reasoning / content) and its logprobs.
ReasoningParser::Delta apply_update(const Tokenizer& tokenizer, ChatJob& job, const SequenceUpdate& u,
                                    ChatChoice& choice, nlohmann::json& logprobs) {
  ReasoningParser::Delta delta;
  if (u.prompt_logprobs && job.prompt_logprobs)
    job.prompt_logprobs_json = prompt_logprobs_json(tokenizer, *u.prompt_logprobs, *job.prompt_logprobs);
  choice.text += u.new_text;
  if (choice.parser) {
    delta = choice.parser->push(u.new_text);
    if (u.finished) {
      ReasoningParser::Delta rest = choice.parser->finish();
      delta.reasoning += rest.reasoning;
      delta.content += rest.content;
    }
  } else {
    delta.content = u.new_text;
  }
  choice.reasoning += delta.reasoning;
  choice.content += delta.content;
  choice.num_tokens += static_cast<int64_t>(u.new_token_ids.size());
  logprobs = job.logprobs ? chat_logprobs_entries(tokenizer, u.new_logprobs, job.top_logprobs)
                          : nlohmann::json();
  if (job.logprobs)
    for (auto& entry : logprobs) choice.logprobs.push_back(entry);
  if (u.finished) {
    choice.finished = true;
    choice.finish_reason = to_string(u.finish_reason);
    choice.stop_reason = stop_reason_json(u, job.params.stop);
  }
  return delta;
}

bool is_rejection(const SequenceUpdate& u, int64_t num_tokens) {
  return u.finished && u.finish_reason == FinishReason::kAbort && num_tokens == 0 &&
         !u.stop_reason.empty();
}

HandlerResponse run_blocking(ServerState& state, const std::shared_ptr<ChatJob>& job) {
  while (!job->group->done()) {
    check_shutdown(state, *job->group);
    GroupUpdate gu;
    if (!job->group->next(gu, std::chrono::milliseconds(100))) continue;
    ChatChoice& choice = job->choices.at(gu.update.id.index);
    if (is_rejection(gu.update, choice.num_tokens)) bad_request(gu.update.stop_reason);
    nlohmann::json logprobs;
    apply_update(state.tokenizer, *job, gu.update, choice, logprobs);
  }
  nlohmann::json choices = nlohmann::json::array();
  int64_t completion_tokens = 0;
  for (size_t i = 0; i < job->choices.size(); ++i) {
    ChatChoice& c = job->choices[i];
    completion_tokens += c.num_tokens;
    nlohmann::json message = {{"role", "assistant"}};
    if (c.parser) {
      message["content"] = c.content.empty() ? nlohmann::json() : nlohmann::json(c.content);
      message["reasoning_content"] = c.parser->has_reasoning() ? nlohmann::json(c.reasoning) : nlohmann::json();
    } else {
      message["content"] = c.text;
      message["reasoning_content"] = nullptr;
    }
    message["tool_calls"] = nlohmann::json::array();
    choices.push_back({{"index", i},
                       {"message", std::move(message)},
                       {"logprobs", job->logprobs ? nlohmann::json{{"content", c.logprobs}} : nlohmann::json()},
                       {"finish_reason", c.finish_reason},
                       {"stop_reason", c.stop_reason}});
  }
  HandlerResponse response;
  response.body = {{"id", job->id},
                   {"object", "chat.completion"},
                   {"created", job->created},
                   {"model", job->model},
                   {"choices", std::move(choices)},
                   {"usage", usage_json(job->num_prompt_tokens, completion_tokens)},
                   {"system_fingerprint", nullptr},
                   {"prompt_logprobs", job->prompt_logprobs_json}};
  return response;
}

void run_streaming(ServerState& state, const std::shared_ptr<ChatJob>& job, const SseWrite& write) {
  auto chunk = [&](nlohmann::json choices) {
    return nlohmann::json{{"id", job->id},
                          {"object", "chat.completion.chunk"},
                          {"created", job->created},
                          {"model", job->model},
                          {"choices", std::move(choices)}};
  };
  auto choice_json = [](size_t index, nlohmann::json delta, nlohmann::json logprobs,
                        const ChatChoice* finished) {
    return nlohmann::json{{"index", index},
                          {"delta", std::move(delta)},
                          {"logprobs", std::move(logprobs)},
                          {"finish_reason", finished ? nlohmann::json(finished->finish_reason) : nlohmann::json()},
                          {"stop_reason", finished ? finished->stop_reason : nlohmann::json()}};
  };
  for (size_t i = 0; i < job->choices.size(); ++i) {
    nlohmann::json delta = {{"role", "assistant"}, {"content", ""}};
    if (!write(dump_json(chunk(nlohmann::json::array({choice_json(i, delta, nullptr, nullptr)}))))) {
      job->group->abort();
      return;
    }
  }
  while (!job->group->done()) {
    check_shutdown(state, *job->group);
    GroupUpdate gu;
    if (!job->group->next(gu, std::chrono::milliseconds(100))) continue;
    size_t index = gu.update.id.index;
    ChatChoice& choice = job->choices.at(index);
    if (is_rejection(gu.update, choice.num_tokens)) {
      job->group->abort();
      write(dump_json(error_json(400, "BadRequestError", gu.update.stop_reason)));
      write("[DONE]");
      return;
    }
    nlohmann::json logprobs;
    ReasoningParser::Delta d = apply_update(state.tokenizer, *job, gu.update, choice, logprobs);
    nlohmann::json delta = nlohmann::json::object();
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    if (!d.content.empty()) delta["content"] = d.content;
    bool has_logprobs = job->logprobs && !logprobs.empty();
    if (delta.empty() && !has_logprobs && !choice.finished) continue;
    nlohmann::json lp = has_logprobs ? nlohmann::json{{"content", std::move(logprobs)}} : nlohmann::json();
    nlohmann::json c = choice_json(index, std::move(delta), std::move(lp), choice.finished ? &choice : nullptr);
    if (!write(dump_json(chunk(nlohmann::json::array({std::move(c)}))))) {
      job->group->abort();
      return;
    }
  }
  if (job->stream.include_usage) {
    int64_t completion_tokens = 0;
    for (const ChatChoice& c : job->choices) completion_tokens += c.num_tokens;
    nlohmann::json last = chunk(nlohmann::json::array());
    last["usage"] = usage_json(job->num_prompt_tokens, completion_tokens);
    if (!write(dump_json(last))) return;
  }
  write("[DONE]");
}

}  // namespace

// Renders a chat request's messages into the prompt text (shared with /tokenize).
std::string render_chat_prompt(ServerState& state, FieldReader& f, const std::string& raw_body) {
  const nlohmann::json* messages = f.get("messages");
  if (!messages) bad_request("messages is required", "messages");
  if (!messages->is_array()) bad_request("messages must be a list of message objects", "messages");
  if (!state.chat)
    bad_request("As of transformers v4.44, default chat template is no longer allowed, so you "
                "must provide a chat template if the tokenizer does not define one.");
  if (f.get("chat_template"))
    bad_request("a chat_template in the request is not supported; start the server with "
                "--chat-template", "chat_template");
  ChatRenderOptions options;
  options.add_generation_prompt = f.get_bool("add_generation_prompt").value_or(true);
  options.continue_final_message = f.get_bool("continue_final_message").value_or(false);
  const nlohmann::json* kwargs = f.get_object("chat_template_kwargs");
  const nlohmann::json* tools = f.get("tools");
  if (tools && !tools->is_array()) bad_request("tools must be a list", "tools");
  f.get("tool_choice");
  f.get("documents");
  // Re-read the parts the template prints in the client's key order (tojson keeps it).
  nlohmann::ordered_json ordered = nlohmann::ordered_json::parse(raw_body);
  nlohmann::ordered_json ordered_tools, ordered_kwargs;
  if (tools) {
    ordered_tools = ordered["tools"];
    options.tools = &ordered_tools;
  }
  if (kwargs) {
    ordered_kwargs = ordered["chat_template_kwargs"];
    options.kwargs = &ordered_kwargs;
  }
  return state.chat->render(ordered["messages"], options);
}

HandlerResponse handle_chat_completions(ServerState& state, const nlohmann::json& body,
                                        const std::string& raw_body) {
  FieldReader f(body);
  auto job = std::make_shared<ChatJob>();
  state.check_model(f.get_string("model"));
  job->model = state.model_name();
  std::string prompt = render_chat_prompt(state, f, raw_body);
  job->params = parse_sampling_params(f, state.engine.engine().generation_defaults());
  job->prompt_logprobs = job->params.prompt_logprobs;
  auto max_completion_tokens = f.get_int32("max_completion_tokens");
  auto max_tokens = f.get_int32("max_tokens");
  job->logprobs = f.get_bool("logprobs").value_or(false);
  auto top_logprobs = f.get_int32("top_logprobs");
  if (top_logprobs && !job->logprobs)
    bad_request("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs");
  job->top_logprobs = top_logprobs.value_or(0);
  if (job->logprobs) job->params.logprobs = job->top_logprobs;
  if (job->logprobs && (job->top_logprobs < 0 || job->top_logprobs > state.engine.engine().config().max_logprobs))
    bad_request("top_logprobs must be in [0, " + std::to_string(state.engine.engine().config().max_logprobs) +
                "], got " + std::to_string(job->top_logprobs), "top_logprobs");
  job->stream = parse_stream_options(f);
  reject_unsupported_fields(f, job->params.n);
  f.get("echo");
  log_ignored_fields(f, "/v1/chat/completions");

  std::vector<int32_t> ids = state.tokenizer.encode(prompt, /*allow_special=*/true);
  if (ids.empty()) bad_request("the rendered chat prompt is empty", "messages");
  const int32_t max_model_len = state.max_model_len();
  if (auto given = max_completion_tokens ? max_completion_tokens : max_tokens) {
    job->params.max_tokens = *given;
  } else {
    // vLLM: without max_tokens a chat request may use the rest of the context.
    if (static_cast<int64_t>(ids.size()) >= max_model_len) check_context_length(ids.size(), 1, max_model_len);
    job->params.max_tokens = max_model_len - static_cast<int32_t>(ids.size());
  }
  check_context_length(ids.size(), job->params.max_tokens, max_model_len);
  job->num_prompt_tokens = static_cast<int64_t>(ids.size());

  job->choices.resize(job->params.n);
  if (state.reasoning_enabled) {
    bool in_reasoning = prompt_opens_reasoning(prompt);
    for (ChatChoice& c : job->choices) c.parser.emplace(in_reasoning);
  }
  EngineRequest request;
  request.prompt_token_ids = std::move(ids);
  request.params = job->params;
  std::vector<EngineRequest> requests;
  requests.push_back(std::move(request));
  job->group = std::make_shared<RequestGroup>(state.engine, state.metrics);
  job->group->submit(std::move(requests));

  if (!job->stream.stream) return run_blocking(state, job);
  HandlerResponse response;
  ServerState* s = &state;
  response.stream = [s, job](const SseWrite& write) { run_streaming(*s, job, write); };
  return response;
}

}  // namespace bf::server
