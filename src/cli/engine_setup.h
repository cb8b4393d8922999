// Shared by the subcommands that run a model: flags for the engine (named as vllm serve's)
// and loading model + tokenizer onto the chosen device.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/engine.h"

namespace bf::cli {

struct EngineOptions {
  std::string model;
  std::string device = "auto";
  EngineConfig engine;
  double cache_memory_gib = 2.0;
  // vLLM's --speculative-config JSON: {"method":"dflash","model":DIR,"num_speculative_tokens":K}.
  std::string speculative_config;
};

struct SpeculativeOptions {
  std::string method;  // "dflash"
  std::string model;   // drafter checkpoint directory
  int32_t num_speculative_tokens = 0;  // 0: the drafter's block_size - 1
};
// Parses --speculative-config; bf::Error naming what is wrong.
SpeculativeOptions parse_speculative_config(const std::string& text);

// Registers --device, --max-model-len, --max-num-seqs, --max-num-batched-tokens,
// --block-size, --kv-cache-memory-gib on `sub` (the model flag is the caller's).
void add_engine_flags(CLI::App* sub, EngineOptions& options);

std::unique_ptr<Backend> make_backend(const std::string& device);
std::unique_ptr<Engine> load_engine(EngineOptions options, std::unique_ptr<Backend>& backend);

// Fills fields the user left unset from the checkpoint's generation_config.json.
struct SamplingOverrides {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int32_t> top_k;
};
void apply_generation_defaults(SamplingParams& params, const SamplingOverrides& given,
                               const GenerationDefaults& defaults);

}  // namespace bf::cli
