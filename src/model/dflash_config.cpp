#include "model/dflash_config.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "model/config_fields.h"

namespace bf {
namespace {

using nlohmann::json;

constexpr const char* kFile = "drafter config.json";

int32_t get_int(const json& object, const char* key, int64_t fallback = -1) {
  return config_int(object, key, fallback, kFile);
}
double get_number(const json& object, const char* key, double fallback) {
  return config_number(object, key, fallback, kFile);
}

std::vector<bool> parse_layer_types(const json& config, int32_t num_layers) {
  std::vector<bool> sliding(num_layers, false);
  auto it = config.find("layer_types");
  if (it == config.end() || it->is_null()) return sliding;
  BF_CHECK(it->is_array() && static_cast<int32_t>(it->size()) == num_layers,
           "drafter config.json: layer_types must list ", num_layers, " layers, got ", it->dump());
  for (int32_t i = 0; i < num_layers; ++i) {
    const json& type = (*it)[i];
    BF_CHECK(type.is_string(), "drafter config.json: layer_types[", i, "] must be a string");
    const std::string name = type.get<std::string>();
    BF_CHECK(name == "full_attention" || name == "sliding_attention",
             "drafter config.json: layer_types[", i, "] is '", name,
             "' (expected full_attention or sliding_attention)");
    sliding[i] = name == "sliding_attention";
  }
  return sliding;
}

}  // namespace

std::vector<int32_t> default_target_layer_ids(int32_t num_target_layers, int32_t num_draft_layers) {
  if (num_draft_layers == 1) return {num_target_layers / 2};
  const int32_t start = 1, end = num_target_layers - 3, span = end - start;
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < num_draft_layers; ++i)
    ids.push_back(static_cast<int32_t>(
        std::lround(start + static_cast<double>(i) * span / (num_draft_layers - 1))));
  return ids;
}

DraftConfig parse_draft_config(const json& config) {
  BF_CHECK(config.is_object(), "drafter config.json must be a JSON object");
  DraftConfig c;
  if (auto it = config.find("architectures"); it != config.end() && it->is_array() && !it->empty())
    c.architecture = (*it)[0].is_string() ? (*it)[0].get<std::string>() : "";
  BF_CHECK(c.architecture == "DFlashDraftModel", "drafter config.json: architectures[0] is '",
           c.architecture, "', expected DFlashDraftModel (a DFlash drafter checkpoint)");
  c.hidden_size = get_int(config, "hidden_size");
  c.num_hidden_layers = get_int(config, "num_hidden_layers");
  c.num_attention_heads = get_int(config, "num_attention_heads");
  c.num_key_value_heads = get_int(config, "num_key_value_heads", c.num_attention_heads);
  BF_CHECK(c.num_attention_heads > 0, "drafter config.json: num_attention_heads must be > 0");
  c.head_dim = get_int(config, "head_dim", c.hidden_size / c.num_attention_heads);
  c.intermediate_size = get_int(config, "intermediate_size");
  c.vocab_size = get_int(config, "vocab_size", 0);
  c.rms_norm_eps = static_cast<float>(get_number(config, "rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(get_number(config, "rope_theta", 1e6));
  if (auto it = config.find("rope_parameters"); it != config.end() && it->is_object())
    c.rope_theta = static_cast<float>(get_number(*it, "rope_theta", c.rope_theta));
  if (auto it = config.find("rope_scaling"); it != config.end() && !it->is_null())
    log_warn("drafter config.json: rope_scaling ", it->dump(),
             " is not applied (plain RoPE); acceptance may drop at long context");
  BF_CHECK(!config.value("attention_bias", false),
           "drafter config.json: attention_bias=true is not supported");
  c.max_position_embeddings = get_int(config, "max_position_embeddings", 0);
  c.block_size = get_int(config, "block_size", 16);
  BF_CHECK(c.block_size >= 2, "drafter config.json: block_size must be >= 2, got ", c.block_size);
  c.num_target_layers = get_int(config, "num_target_layers", 0);
  BF_CHECK(c.num_hidden_layers > 0 && c.hidden_size > 0 && c.head_dim > 0 &&
               c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
           "drafter config.json: bad shape (layers ", c.num_hidden_layers, ", hidden ",
           c.hidden_size, ", heads ", c.num_attention_heads, "/", c.num_key_value_heads, ")");

  const json dflash = config.value("dflash_config", json::object());
  BF_CHECK(dflash.is_object(), "drafter config.json: dflash_config must be an object");
  if (auto it = dflash.find("target_layer_ids"); it != dflash.end() && !it->is_null()) {
    BF_CHECK(it->is_array() && !it->empty(),
             "drafter config.json: dflash_config.target_layer_ids must be a non-empty list");
    for (const json& id : *it) {
      BF_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0,
               "drafter config.json: target_layer_ids entries must be non-negative integers");
      c.target_layer_ids.push_back(id.get<int32_t>());
    }
  } else {
    BF_CHECK(c.num_target_layers > 0,
             "drafter config.json: neither dflash_config.target_layer_ids nor num_target_layers "
             "is given, so the tapped target layers are unknown");
    c.target_layer_ids = default_target_layer_ids(c.num_target_layers, c.num_hidden_layers);
  }
  if (auto it = dflash.find("mask_token_id"); it != dflash.end() && !it->is_null()) {
    c.mask_token_id = get_int(dflash, "mask_token_id");
  } else {
    c.mask_token_id = get_int(config, "mask_token_id", 0);
    BF_CHECK(config.contains("mask_token_id"),
             "drafter config.json: dflash_config.mask_token_id is missing");
  }
  c.sliding_layers = parse_layer_types(config, c.num_hidden_layers);
  bool any_sliding = false;
  for (bool s : c.sliding_layers) any_sliding |= s;
  if (any_sliding) {
    c.sliding_window = get_int(config, "sliding_window", 0);
    BF_CHECK(c.sliding_window > 0, "drafter config.json: sliding_attention layers need a positive "
             "sliding_window");
  }
  return c;
}

DraftConfig load_draft_config(const std::filesystem::path& draft_dir) {
  const std::filesystem::path path =
      std::filesystem::is_regular_file(draft_dir) ? draft_dir : draft_dir / "config.json";
  BF_CHECK(std::filesystem::exists(path), "speculative model: no config.json in ", draft_dir);
  return parse_draft_config(read_json_file(path));
}

void check_draft_fits_target(const DraftConfig& d, const ModelConfig& t) {
  BF_CHECK(d.hidden_size == t.hidden_size, "the DFlash drafter's hidden_size is ", d.hidden_size,
           " but the target's is ", t.hidden_size, ": this drafter was made for another model");
  BF_CHECK(d.vocab_size == 0 || d.vocab_size == t.vocab_size, "the DFlash drafter's vocab_size is ",
           d.vocab_size, " but the target's is ", t.vocab_size,
           ": it drafts with the target's embedding and LM head, so they must match");
  BF_CHECK(d.mask_token_id >= 0 && d.mask_token_id < t.vocab_size, "the DFlash drafter's "
           "mask_token_id ", d.mask_token_id, " is outside the target's vocabulary [0, ",
           t.vocab_size, ")");
  for (int32_t id : d.target_layer_ids)
    BF_CHECK(id < t.num_hidden_layers, "the DFlash drafter taps target layer ", id,
             " but the target has ", t.num_hidden_layers, " layers");
  if (d.num_target_layers > 0 && d.num_target_layers != t.num_hidden_layers)
    log_warn("the DFlash drafter was trained on a target with ", d.num_target_layers,
             " layers; this target has ", t.num_hidden_layers);
}

std::string DraftConfig::summary() const {
  std::ostringstream out;
  int32_t sliding = 0;
  for (bool s : sliding_layers) sliding += s;
  out << "DFlash drafter: " << num_hidden_layers << " layers (" << sliding
      << " sliding, window " << sliding_window << "), hidden " << hidden_size << ", attention "
      << num_attention_heads << "/" << num_key_value_heads << " heads x " << head_dim << ", MLP "
      << intermediate_size << ", block " << block_size << ", mask id " << mask_token_id
      << ", target layers [";
  for (size_t i = 0; i < target_layer_ids.size(); ++i)
    out << (i ? "," : "") << target_layer_ids[i];
  out << "]";
  return out.str();
}

}  // namespace bf
