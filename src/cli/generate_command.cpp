// `blockflash generate`: one request through the engine, text streamed to stdout as it is
// produced, or (--json) one JSON object on the last line of stdout.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_setup.h"

namespace bf::cli {
namespace {

nlohmann::json top_list(const std::vector<TokenLogprob>& top) {
  nlohmann::json list = nlohmann::json::array();
  for (const TokenLogprob& entry : top) list.push_back({{"id", entry.id}, {"logprob", entry.logprob}});
  return list;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  struct Options {
    EngineOptions engine;
    std::string prompt, prompt_ids;
    int32_t max_tokens = 16;
    SamplingOverrides sampling;
    std::optional<uint64_t> seed;
    std::optional<int32_t> logprobs, prompt_logprobs;
    bool ignore_eos = false, json = false;
  };
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("generate", "Generate a completion for one prompt");
  sub->add_option("--model", o->engine.model, "Model directory (Hugging Face checkpoint)")
      ->required();
  auto* prompt = sub->add_option("--prompt", o->prompt, "Prompt text");
  auto* ids = sub->add_option("--prompt-ids", o->prompt_ids, "Prompt as token ids: 1,2,3");
  prompt->excludes(ids);
  sub->add_option("--max-tokens", o->max_tokens, "Tokens to generate")->capture_default_str();
  sub->add_option("--temperature", o->sampling.temperature, "0 = greedy");
  sub->add_option("--top-p", o->sampling.top_p);
  sub->add_option("--top-k", o->sampling.top_k);
  sub->add_option("--min-p", o->sampling.min_p);
  sub->add_option("--repetition-penalty", o->sampling.repetition_penalty);
  sub->add_option("--seed", o->seed);
  sub->add_option("--logprobs", o->logprobs, "Top-K logprobs per output token");
  sub->add_option("--prompt-logprobs", o->prompt_logprobs, "Top-K logprobs per prompt token");
  sub->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-sequence tokens");
  sub->add_flag("--json", o->json, "Print one JSON object (last line of stdout)");
  add_engine_flags(sub, o->engine);

  return [o]() {
    BF_CHECK(!o->prompt.empty() || !o->prompt_ids.empty(),
             "give the prompt with --prompt TEXT or --prompt-ids 1,2,3");
    std::unique_ptr<Backend> backend;
    EngineOptions engine_options = o->engine;
    std::unique_ptr<Engine> engine = load_engine(engine_options, backend);

    EngineRequest request;
    request.request_id = 0;
    request.prompt_token_ids = o->prompt_ids.empty() ? engine->tokenizer().encode(o->prompt)
                                                     : parse_id_list(o->prompt_ids);
    SamplingParams& params = request.params;
    apply_generation_defaults(params, o->sampling, engine->generation_defaults());
    params.max_tokens = o->max_tokens;
    params.seed = o->seed;
    params.logprobs = o->logprobs;
    params.prompt_logprobs = o->prompt_logprobs;
    params.ignore_eos = o->ignore_eos;

    std::vector<int32_t> output_ids;
    std::string text;
    std::string finish_reason;
    nlohmann::json logprobs = nlohmann::json::array();
    nlohmann::json prompt_logprobs = nlohmann::json::array();
    nlohmann::json spec_steps = nlohmann::json::array();
    double committed_per_step = 0;
    const bool stream = !o->json;
    engine->add_request(request, [&](const SequenceUpdate& update) {
      output_ids.insert(output_ids.end(), update.new_token_ids.begin(), update.new_token_ids.end());
      text += update.new_text;
      for (const PositionLogprobs& lp : update.new_logprobs) logprobs.push_back(top_list(lp.top));
      if (update.prompt_logprobs)
        for (const auto& position : *update.prompt_logprobs)
          prompt_logprobs.push_back(position ? top_list(position->top) : nlohmann::json());
      if (update.finished) finish_reason = to_string(update.finish_reason);
      for (const SpecStep& step : update.spec_steps) {
        spec_steps.push_back({{"draft_ids", step.draft_ids}, {"accepted", step.accepted}});
        committed_per_step += step.accepted + 1;
      }
      if (stream && !update.new_text.empty()) {
        std::fwrite(update.new_text.data(), 1, update.new_text.size(), stdout);
        std::fflush(stdout);
      }
    });
    while (engine->has_work()) engine->step();
    if (stream) {
      std::printf("\n");
      return 0;
    }
    nlohmann::json out{{"prompt_ids", request.prompt_token_ids},
                       {"output_ids", output_ids},
                       {"text", text},
                       {"finish_reason", finish_reason},
                       {"prompt_logprobs", o->prompt_logprobs ? prompt_logprobs : nlohmann::json()},
                       {"logprobs", o->logprobs ? logprobs : nlohmann::json()}};
    if (!o->engine.speculative_config.empty()) {
      // accepted counts draft tokens; the mean acceptance length adds the target's own token.
      out["spec"] = {{"steps", spec_steps},
                     {"mean_acceptance_length",
                      spec_steps.empty() ? 0.0 : committed_per_step / spec_steps.size()}};
    }
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return 0;
  };
}

}  // namespace bf::cli
