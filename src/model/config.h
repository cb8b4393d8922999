// ModelConfig: the text-model hyper-parameters of a Qwen3.5 / Qwen3.6 checkpoint, read from
// config.json in either layout: flat (Qwen3_5ForCausalLM, model_type qwen3_5_text) or nested
// multimodal (Qwen3_5ForConditionalGeneration with text_config), dense or MoE (Qwen3_5Moe*).
// Missing optional fields take Hugging Face's defaults; inconsistent ones are errors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bf {

enum class LayerType { kLinearAttention, kFullAttention };

// Sampling defaults a checkpoint ships in generation_config.json (vLLM's
// --generation-config auto uses them when a request leaves a field unset).
struct GenerationDefaults {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int32_t> top_k;
};

struct ModelConfig {
  std::string architecture;      // architectures[0]
  std::string model_type;        // of the text config: qwen3_5_text / qwen3_5_moe_text
  bool nested = false;           // weights under model.language_model.*
  bool is_moe = false;

  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;  // dense MLP
  int32_t num_hidden_layers = 0;
  std::vector<LayerType> layer_types;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  int32_t max_position_embeddings = 0;

  // Gated full attention.
  int32_t num_attention_heads = 0;
  int32_t num_key_value_heads = 0;
  int32_t head_dim = 0;
  bool attn_output_gate = true;
  float rope_theta = 1e7f;
  float partial_rotary_factor = 0.25f;
  int32_t rotary_dim() const { return static_cast<int32_t>(head_dim * partial_rotary_factor); }

  // Gated DeltaNet.
  int32_t linear_num_key_heads = 0;
  int32_t linear_num_value_heads = 0;
  int32_t linear_key_head_dim = 0;
  int32_t linear_value_head_dim = 0;
  int32_t linear_conv_kernel_dim = 4;
  int32_t linear_key_dim() const { return linear_num_key_heads * linear_key_head_dim; }
  int32_t linear_value_dim() const { return linear_num_value_heads * linear_value_head_dim; }
  int32_t linear_conv_dim() const { return 2 * linear_key_dim() + linear_value_dim(); }

  // Mixture of experts (every layer of a Qwen3.5-MoE model).
  int32_t num_experts = 0;
  int32_t num_experts_per_tok = 0;
  int32_t moe_intermediate_size = 0;
  int32_t shared_expert_intermediate_size = 0;
  bool norm_topk_prob = true;

  std::vector<int32_t> eos_token_ids;  // config.json and generation_config.json, merged
  GenerationDefaults generation_defaults;

  int32_t num_full_attention_layers() const;
  int32_t num_linear_attention_layers() const;
  std::string summary() const;
};

// Parses a config.json object (no file access). Throws bf::Error naming the bad field.
ModelConfig parse_model_config(const nlohmann::json& config);
// Reads DIR/config.json and, if present, DIR/generation_config.json.
ModelConfig load_model_config(const std::filesystem::path& model_dir);

nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace bf
