#include "cli/engine_setup.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "cli/device_options.h"
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
  add_device_flags(sub);
  sub->add_option("--speculative-config", o.speculative_config,
                  "Speculative decoding as JSON, as vLLM's: "
                  "'{\"method\":\"dflash\",\"model\":DRAFT_DIR,\"num_speculative_tokens\":15}'");
}

SpeculativeOptions parse_speculative_config(const std::string& text) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("--speculative-config is not valid JSON: ", e.what());
  }
  BF_CHECK(config.is_object(), "--speculative-config must be a JSON object");
  SpeculativeOptions options;
  for (const auto& [key, value] : config.items()) {
    if (key == "method") {
      BF_CHECK(value.is_string(), "--speculative-config: method must be a string");
      options.method = value.get<std::string>();
    } else if (key == "model") {
      BF_CHECK(value.is_string(), "--speculative-config: model must be a string (a directory)");
      options.model = value.get<std::string>();
    } else if (key == "num_speculative_tokens") {
      BF_CHECK(value.is_number_integer() && value.get<int64_t>() >= 1 &&
                   value.get<int64_t>() <= 1024,
               "--speculative-config: num_speculative_tokens must be a positive integer, got ",
               value.dump());
      options.num_speculative_tokens = value.get<int32_t>();
    } else {
      log_warn("--speculative-config: ignoring '", key, "' (blockflash reads method, model and "
               "num_speculative_tokens)");
    }
  }
  for (char& c : options.method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  BF_CHECK(options.method == "dflash", "--speculative-config: method '", options.method,
           "' is not supported (blockflash implements \"dflash\")");
  BF_CHECK(!options.model.empty(), "--speculative-config: \"model\" (the DFlash drafter "
           "directory) is required");
  BF_CHECK(std::filesystem::is_directory(options.model), "--speculative-config: model '",
           options.model, "' is not a directory");
  return options;
}

namespace {

// vLLM's profiling run: one step as large as the scheduler can build, over throwaway caches,
// measuring the backend allocator's peak: the activation memory the KV cache must leave free.
// The step: max_num_batched_tokens new tokens; as many logits rows as one LM-head pass can
// hold (Model::kLogitsRowsPerPass, or a row per sequence for device sampling); with a drafter,
// the target's tap layers captured and the drafter's context written for every token. 0 on
// backends that do not track memory (the CPU).
size_t profile_activation_bytes(const Model& model, const DFlashDrafter* drafter, Backend& be,
                                const EngineConfig& config) {
  if (be.device() == Device::kCPU) return 0;
  be.reset_peak_memory();
  const ModelConfig& c = model.config();
  const int32_t T = std::max(1, config.max_num_batched_tokens), bs = config.block_size;
  const int32_t rows = static_cast<int32_t>(std::min<int64_t>(
      T, std::max<int64_t>(Model::kLogitsRowsPerPass, config.max_num_seqs)));
  ForwardBatch batch;
  BatchSequence seq;
  seq.query_len = T;
  seq.state_slot = 0;
  for (int32_t b = 0; b < (T + bs - 1) / bs; ++b) seq.block_table.push_back(b);
  for (int32_t t = 0; t < T; ++t) {
    batch.token_ids.push_back(t % c.vocab_size);
    batch.positions.push_back(t);
    batch.slot_mapping.push_back(t);
  }
  for (int32_t r = T - rows; r < T; ++r) batch.logits_rows.push_back(r);
  batch.seqs.push_back(seq);
  const auto t0 = std::chrono::steady_clock::now();
  size_t activations = 0;
  {
    CacheSizes sizes{.num_blocks = static_cast<int32_t>(seq.block_table.size()),
                     .block_size = bs, .num_state_slots = 1};
    ModelCache cache = ModelCache::allocate(be, c, sizes);
    DraftCache draft_cache;
    if (drafter != nullptr)
      draft_cache = DraftCache::allocate(be, drafter->config(), sizes.num_blocks, bs);
    const size_t with_caches = be.peak_memory_bytes();
    const std::vector<int32_t> taps = drafter ? drafter->tap_layers() : std::vector<int32_t>{};
    ForwardOutput out = model.forward(batch, cache, taps, LogitsOutput::kArgmax);  // synchronises
    if (drafter != nullptr) {
      ContextRows context;
      for (int32_t t = 0; t < T; ++t) {
        context.rows.push_back(t);
        context.positions.push_back(t);
        context.slots.push_back(t);
      }
      drafter->write_context(out.captured_hidden, context, draft_cache);
    }
    activations = be.peak_memory_bytes() - with_caches;
  }
  be.release_cached_memory();  // the weights alone stay in use
  log_info("profiling run: ", T, " tokens, ", rows, " logits rows: ",
           activations / double(size_t{1} << 30), " GiB of activations at the peak (",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s)");
  return activations;
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& device) {
  return make_device_backend(device);  // cli/device_options.h: cpu, cuda or auto
}

std::unique_ptr<Engine> load_engine(EngineOptions options, std::unique_ptr<Backend>& backend) {
  BF_CHECK(!options.model.empty(), "no model directory given");
  BF_CHECK(options.cache_memory_gib > 0, "--kv-cache-memory-gib must be positive");
  backend = make_backend(options.device);
  auto tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_model_dir(options.model));
  const LoadFormat format =
      device_options().load_format == "dummy" ? LoadFormat::kDummy : LoadFormat::kSafetensors;
  auto model = Model::load(options.model, *backend, format);
  BF_CHECK(tokenizer->vocab_size() <= model->config().vocab_size, "tokenizer has ",
           tokenizer->vocab_size(), " tokens but the model's vocab_size is ",
           model->config().vocab_size);
  options.engine.enforce_eager = device_options().enforce_eager;
  std::unique_ptr<DFlashDrafter> drafter;
  if (!options.speculative_config.empty()) {
    SpeculativeOptions spec = parse_speculative_config(options.speculative_config);
    drafter = DFlashDrafter::load(spec.model, *model, format);
    options.engine.num_speculative_tokens = spec.num_speculative_tokens;
  }
  options.engine.cache_memory_bytes =
      static_cast<size_t>(options.cache_memory_gib * static_cast<double>(size_t{1} << 30));
  // On CUDA: --gpu-memory-utilization of the device, less the weights (target and drafter),
  // the profiled activation peak and a margin for cuBLASLt plans, graphs and fragmentation.
  const size_t activations =
      profile_activation_bytes(*model, drafter.get(), *backend, options.engine);
  options.engine.cache_memory_bytes = device_cache_bytes(
      *backend, options.engine.cache_memory_bytes, activations + (size_t{1} << 30));
  return std::make_unique<Engine>(std::move(model), tokenizer, options.engine,
                                  std::move(drafter));
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
