#include "cli/engine_setup.h"

#include "core/log.h"

namespace bf::cli {

void add_engine_flags(CLI::App* sub, EngineOptions& o) {
  sub->add_option("--device", o.device, "cpu, cuda or auto (cuda when built with it and a GPU is present)")
      ->capture_default_str();
  sub->add_option("--max-model-len", o.engine.max_model_len,
                  "Longest prompt + output (default: the model's max_position_embeddings)");
  sub->add_option("--max-num-seqs", o.engine.max_num_seqs, "Most sequences running at once")
      ->capture_default_str();
  sub->add_option("--max-num-batched-tokens", o.engine.max_num_batched_tokens,
                  "Most new tokens per step (chunked prefill splits longer prompts)")
      ->capture_default_str();
  sub->add_option("--block-size", o.engine.block_size, "Tokens per KV cache block")
      ->capture_default_str();
  sub->add_option("--kv-cache-memory-gib", o.cache_memory_gib,
                  "Memory for the KV cache and Gated DeltaNet states on the CPU backend")
      ->capture_default_str();
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu" || device == "auto") return make_cpu_backend();
  if (device == "cuda")
    fail("--device cuda: this build has no CUDA backend yet (use --device cpu)");
  fail("unknown --device '", device, "' (expected cpu, cuda or auto)");
}

std::unique_ptr<Engine> load_engine(EngineOptions options, std::unique_ptr<Backend>& backend) {
  BF_CHECK(!options.model.empty(), "no model directory given");
  BF_CHECK(options.cache_memory_gib > 0, "--kv-cache-memory-gib must be positive");
  backend = make_backend(options.device);
  auto tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_model_dir(options.model));
  auto model = Model::load(options.model, *backend);
  BF_CHECK(tokenizer->vocab_size() <= model->config().vocab_size, "tokenizer has ",
           tokenizer->vocab_size(), " tokens but the model's vocab_size is ",
           model->config().vocab_size);
  options.engine.cache_memory_bytes =
      static_cast<size_t>(options.cache_memory_gib * static_cast<double>(size_t{1} << 30));
  return std::make_unique<Engine>(std::move(model), tokenizer, options.engine);
}

void apply_generation_defaults(SamplingParams& p, const SamplingOverrides& given,
                               const GenerationDefaults& d) {
  p.temperature = given.temperature.value_or(d.temperature.value_or(1.0f));
  p.top_p = given.top_p.value_or(d.top_p.value_or(1.0f));
  p.top_k = given.top_k.value_or(d.top_k.value_or(0));
  p.min_p = given.min_p.value_or(d.min_p.value_or(0.0f));
  p.repetition_penalty = given.repetition_penalty.value_or(d.repetition_penalty.value_or(1.0f));
}

}  // namespace bf::cli
