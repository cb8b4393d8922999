// POST /v1/completions: prompts (text or ids, batched) -> one engine request per prompt,
// choices indexed prompt * n + sequence as vLLM does; JSON or SSE chunks.
#include <chrono>

#include "server/api_error.h"
#include "server/output_format.h"
#include "server/request_group.h"
#include "server/request_params.h"
#include "server/server_state.h"

namespace bf::server {
namespace {

struct Choice {
  std::string text;
  int64_t num_tokens = 0;
  std::optional<CompletionLogprobs> logprobs;
  bool finished = false;
  bool started = false;  // streaming: the echo prefix was sent
  std::string finish_reason;
  nlohmann::json stop_reason;
  nlohmann::json prompt_logprobs;
};

struct CompletionJob {
  std::string id = random_id("cmpl-");
  int64_t created = unix_time_seconds();
  std::string model;
  std::vector<PromptInput> prompts;
  SamplingParams params;
  std::optional<int32_t> logprobs;         // the request's "logprobs"
  std::optional<int32_t> prompt_logprobs;  // the request's "prompt_logprobs"
  bool echo = false;
  StreamOptions stream;
  std::shared_ptr<RequestGroup> group;
  std::vector<Choice> choices;
  int64_t num_prompt_tokens = 0;
};

// The echoed prompt: its text and, with logprobs, its tokens (first one without a logprob).
void start_choice(const Tokenizer& tokenizer, CompletionJob& job, Choice& choice, size_t prompt_index,
                  const SequenceUpdate& update) {
  if (choice.started) return;
  choice.started = true;
  const PromptInput& prompt = job.prompts[prompt_index];
  if (job.echo) {
    choice.text = prompt.text ? *prompt.text : tokenizer.decode(prompt.ids, false);
    if (choice.logprobs) {
      for (size_t i = 0; i < prompt.ids.size(); ++i) {
        std::optional<PositionLogprobs> lp;
        if (update.prompt_logprobs && i < update.prompt_logprobs->size()) lp = (*update.prompt_logprobs)[i];
        choice.logprobs->add_prompt_token(prompt.ids[i], i == 0 ? std::nullopt : lp);
      }
    }
  }
}

// Applies one update to its choice; returns the text it added.
std::string apply_update(const Tokenizer& tokenizer, CompletionJob& job, const GroupUpdate& gu,
                         Choice& choice) {
  const SequenceUpdate& u = gu.update;
  size_t text_before = choice.text.size();
  if (!choice.started) start_choice(tokenizer, job, choice, gu.prompt_index, u);
  if (u.prompt_logprobs && job.prompt_logprobs)
    choice.prompt_logprobs = prompt_logprobs_json(tokenizer, *u.prompt_logprobs, *job.prompt_logprobs);
  choice.text += u.new_text;
  choice.num_tokens += static_cast<int64_t>(u.new_token_ids.size());
  if (choice.logprobs)
    for (const PositionLogprobs& lp : u.new_logprobs) choice.logprobs->add(lp);
  if (u.finished) {
    choice.finished = true;
    choice.finish_reason = to_string(u.finish_reason);
    choice.stop_reason = stop_reason_json(u, job.params.stop);
  }
  return choice.text.substr(text_before);
}

// A sequence the engine ended with "abort" that the client did not abort: a request the
// cache can never hold. Its stop_reason carries the engine's message.
bool is_rejection(const SequenceUpdate& u, int64_t num_tokens) {
  return u.finished && u.finish_reason == FinishReason::kAbort && num_tokens == 0 &&
         !u.stop_reason.empty();
}

nlohmann::json choice_json(size_t index, const std::string& text, nlohmann::json logprobs,
                           const Choice& choice, bool with_prompt_logprobs) {
  nlohmann::json out = {{"index", index},
                        {"text", text},
                        {"logprobs", std::move(logprobs)},
                        {"finish_reason", choice.finished ? nlohmann::json(choice.finish_reason) : nlohmann::json()},
                        {"stop_reason", choice.finished ? choice.stop_reason : nlohmann::json()}};
  if (with_prompt_logprobs) out["prompt_logprobs"] = choice.prompt_logprobs;
  return out;
}

HandlerResponse run_blocking(ServerState& state, std::shared_ptr<CompletionJob> job) {
  const Tokenizer& tokenizer = state.tokenizer;
  while (!job->group->done()) {
    check_shutdown(state, *job->group);
    GroupUpdate gu;
    if (!job->group->next(gu, std::chrono::milliseconds(100))) continue;
    size_t index = gu.prompt_index * job->params.n + gu.update.id.index;
    Choice& choice = job->choices.at(index);
    if (is_rejection(gu.update, choice.num_tokens)) bad_request(gu.update.stop_reason);
    apply_update(tokenizer, *job, gu, choice);
  }
  nlohmann::json choices = nlohmann::json::array();
  int64_t completion_tokens = 0;
  for (size_t i = 0; i < job->choices.size(); ++i) {
    Choice& c = job->choices[i];
    completion_tokens += c.num_tokens;
    choices.push_back(choice_json(i, c.text, c.logprobs ? c.logprobs->take() : nlohmann::json(), c, true));
  }
  HandlerResponse response;
  response.body = {{"id", job->id},
                   {"object", "text_completion"},
                   {"created", job->created},
                   {"model", job->model},
                   {"choices", std::move(choices)},
                   {"usage", usage_json(job->num_prompt_tokens, completion_tokens)},
                   {"system_fingerprint", nullptr}};
  return response;
}

void run_streaming(ServerState& state, const std::shared_ptr<CompletionJob>& job, const SseWrite& write) {
  const Tokenizer& tokenizer = state.tokenizer;
  auto chunk = [&](nlohmann::json choices) {
    return nlohmann::json{{"id", job->id},
                          {"object", "text_completion"},
                          {"created", job->created},
                          {"model", job->model},
                          {"choices", std::move(choices)}};
  };
  while (!job->group->done()) {
    check_shutdown(state, *job->group);
    GroupUpdate gu;
    if (!job->group->next(gu, std::chrono::milliseconds(100))) continue;
    size_t index = gu.prompt_index * job->params.n + gu.update.id.index;
    Choice& choice = job->choices.at(index);
    if (is_rejection(gu.update, choice.num_tokens)) {
      job->group->abort();
      write(dump_json(error_json(400, "BadRequestError", gu.update.stop_reason)));
      write("[DONE]");
      return;
    }
    bool first = !choice.started;
    std::string delta = apply_update(tokenizer, *job, gu, choice);
    nlohmann::json logprobs = choice.logprobs && !choice.logprobs->empty() ? choice.logprobs->take() : nlohmann::json();
    bool with_prompt_logprobs = first && job->prompt_logprobs.has_value();
    if (delta.empty() && logprobs.is_null() && !choice.finished && !with_prompt_logprobs) continue;
    nlohmann::json c = choice_json(index, delta, std::move(logprobs), choice, with_prompt_logprobs);
    if (!write(dump_json(chunk(nlohmann::json::array({std::move(c)}))))) {
      job->group->abort();
      return;
    }
  }
  if (job->stream.include_usage) {
    int64_t completion_tokens = 0;
    for (const Choice& c : job->choices) completion_tokens += c.num_tokens;
    nlohmann::json last = chunk(nlohmann::json::array());
    last["usage"] = usage_json(job->num_prompt_tokens, completion_tokens);
    if (!write(dump_json(last))) return;
  }
  write("[DONE]");
}

}  // namespace

HandlerResponse handle_completions(ServerState& state, const nlohmann::json& body) {
  FieldReader f(body);
  auto job = std::make_shared<CompletionJob>();
  state.check_model(f.get_string("model"));
  job->model = state.model_name();
  const nlohmann::json* prompt = f.get("prompt");
  if (!prompt) bad_request("prompt is required", "prompt");
  job->prompts = parse_prompts(*prompt, state.tokenizer);
  job->params = parse_sampling_params(f, state.engine.engine().generation_defaults());
  job->params.max_tokens = f.get_int32("max_tokens").value_or(16);
  job->logprobs = f.get_int32("logprobs");
  job->params.logprobs = job->logprobs;
  job->prompt_logprobs = job->params.prompt_logprobs;
  job->echo = f.get_bool("echo").value_or(false);
  job->stream = parse_stream_options(f);
  reject_unsupported_fields(f, job->params.n);
  log_ignored_fields(f, "/v1/completions");
  if (job->echo && job->logprobs && *job->logprobs >= 0)
    job->params.prompt_logprobs = std::max(job->prompt_logprobs.value_or(0), *job->logprobs);

  std::vector<EngineRequest> requests;
  for (const PromptInput& p : job->prompts) {
    check_context_length(p.ids.size(), job->params.max_tokens, state.max_model_len());
    EngineRequest request;
    request.prompt_token_ids = p.ids;
    request.params = job->params;
    requests.push_back(std::move(request));
    job->num_prompt_tokens += static_cast<int64_t>(p.ids.size());
  }
  job->choices.resize(job->prompts.size() * job->params.n);
  if (job->logprobs)
    for (Choice& c : job->choices) c.logprobs.emplace(state.tokenizer, *job->logprobs);
  job->group = std::make_shared<RequestGroup>(state.engine, state.metrics);
  job->group->submit(std::move(requests));

  if (!job->stream.stream) return run_blocking(state, job);
  HandlerResponse response;
  ServerState* s = &state;
  response.stream = [s, job](const SseWrite& write) { run_streaming(*s, job, write); };
  return response;
}

}  // namespace bf::server
