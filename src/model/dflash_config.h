// Configuration of a DFlash drafter checkpoint (architectures ["DFlashDraftModel"],
// model_type qwen3): a small Qwen3-style decoder stack that drafts a block of tokens in one
// non-causal forward, conditioned on the target's hidden states at target_layer_ids.
// research/dflash.md §1 has the fields and where they come from.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace bf {

struct DraftConfig {
  std::string architecture;  // DFlashDraftModel
  int32_t hidden_size = 0;
  int32_t num_hidden_layers = 0;
  int32_t num_attention_heads = 0;
  int32_t num_key_value_heads = 0;
  int32_t head_dim = 0;
  int32_t intermediate_size = 0;
  int32_t vocab_size = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 1e6f;
  int32_t max_position_embeddings = 0;

  int32_t block_size = 16;          // anchor + block_size-1 masks per draft
  int32_t num_target_layers = 0;    // layers of the target it was trained on
  std::vector<int32_t> target_layer_ids;  // target decoder layers whose OUTPUT is tapped
  int32_t mask_token_id = -1;       // embedded with the target's table for masked slots
  // Per layer: true = sliding_attention (causal in the block, windowed over context), false =
  // full_attention (bidirectional over context + block).
  std::vector<bool> sliding_layers;
  int32_t sliding_window = 0;

  int32_t q_dim() const { return num_attention_heads * head_dim; }
  int32_t kv_dim() const { return num_key_value_heads * head_dim; }
  std::string summary() const;
};

// z-lab's default tap layers when dflash_config.target_layer_ids is absent: evenly spread over
// [1, num_target_layers - 3], one per draft layer (one draft layer: the middle layer).
std::vector<int32_t> default_target_layer_ids(int32_t num_target_layers, int32_t num_draft_layers);

// Parses a drafter config.json object. Throws bf::Error naming the bad field.
DraftConfig parse_draft_config(const nlohmann::json& config);
DraftConfig load_draft_config(const std::filesystem::path& draft_dir);

// Throws bf::Error with a clear message when the drafter cannot serve this target: hidden
// size or vocabulary that do not fit, tap layers that do not exist, mask id out of range.
void check_draft_fits_target(const DraftConfig& draft, const ModelConfig& target);

}  // namespace bf
