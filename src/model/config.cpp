#include "model/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "model/config_fields.h"

namespace bf {
namespace {

using nlohmann::json;

const std::set<std::string>& supported_architectures() {
  static const std::set<std::string> names = {
      "Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForCausalLM",
      "Qwen3_5MoeForConditionalGeneration"};
  return names;
}

int32_t get_int(const json& object, const char* key, int64_t fallback = -1) {
  return config_int(object, key, fallback, "config.json");
}
double get_number(const json& object, const char* key, double fallback) {
  return config_number(object, key, fallback, "config.json");
}
bool get_bool(const json& object, const char* key, bool fallback) {
  return config_bool(object, key, fallback, "config.json");
}

void append_eos_ids(const json& object, std::vector<int32_t>& ids) {
  auto it = object.find("eos_token_id");
  if (it == object.end() || it->is_null()) return;
  auto add = [&](const json& value) {
    BF_CHECK(value.is_number_integer(), "eos_token_id must be an integer or a list of integers");
    int32_t id = value.get<int32_t>();
    for (int32_t existing : ids)
      if (existing == id) return;
    ids.push_back(id);
  };
  if (it->is_array()) {
    for (const json& value : *it) add(value);
  } else {
    add(*it);
  }
}

std::vector<LayerType> parse_layer_types(const json& text, int32_t num_layers) {
  std::vector<LayerType> types;
  auto it = text.find("layer_types");
  if (it != text.end() && !it->is_null()) {
    BF_CHECK(it->is_array(), "config.json: layer_types must be a list");
    for (const json& entry : *it) {
      BF_CHECK(entry.is_string(), "config.json: layer_types entries must be strings");
      std::string name = entry.get<std::string>();
      if (name == "linear_attention") {
        types.push_back(LayerType::kLinearAttention);
      } else if (name == "full_attention") {
        types.push_back(LayerType::kFullAttention);
      } else {
        fail("config.json: unknown layer type '", name,
             "' (expected linear_attention or full_attention)");
      }
    }
    BF_CHECK(static_cast<int32_t>(types.size()) == num_layers, "config.json: layer_types has ",
             types.size(), " entries but num_hidden_layers is ", num_layers);
    return types;
  }
  // Hugging Face's rule: layer i is full attention iff (i + 1) % interval == 0.
  int32_t interval = get_int(text, "full_attention_interval", 4);
  BF_CHECK(interval >= 1, "config.json: full_attention_interval must be >= 1");
  for (int32_t i = 0; i < num_layers; ++i)
    types.push_back((i + 1) % interval == 0 ? LayerType::kFullAttention
                                            : LayerType::kLinearAttention);
  return types;
}

void parse_rope(const json& text, ModelConfig& config) {
  config.rope_theta = static_cast<float>(get_number(text, "rope_theta", 1e7));
  config.partial_rotary_factor =
      static_cast<float>(get_number(text, "partial_rotary_factor", 0.25));
  auto it = text.find("rope_parameters");
  if (it == text.end() || it->is_null()) it = text.find("rope_scaling");
  if (it != text.end() && !it->is_null()) {
    BF_CHECK(it->is_object(), "config.json: rope_parameters must be an object");
    std::string rope_type = it->value("rope_type", it->value("type", std::string("default")));
    // Text-only inputs have equal t/h/w positions, so interleaved M-RoPE reduces to 1-D RoPE.
    BF_CHECK(rope_type == "default" || rope_type == "mrope", "config.json: rope_type '",
             rope_type, "' is not supported (supported: default)");
    config.rope_theta = static_cast<float>(get_number(*it, "rope_theta", config.rope_theta));
    config.partial_rotary_factor = static_cast<float>(
        get_number(*it, "partial_rotary_factor", config.partial_rotary_factor));
  }
  BF_CHECK(config.partial_rotary_factor > 0 && config.partial_rotary_factor <= 1,
           "config.json: partial_rotary_factor must be in (0, 1]");
}

void validate(const ModelConfig& c) {
  BF_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_hidden_layers > 0,
           "config.json: vocab_size, hidden_size and num_hidden_layers must be positive");
  if (c.num_full_attention_layers() > 0) {
    BF_CHECK(c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0,
             "config.json: attention heads and head_dim must be positive");
    BF_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, "config.json: num_attention_heads (",
             c.num_attention_heads, ") must be a multiple of num_key_value_heads (",
             c.num_key_value_heads, ")");
    BF_CHECK(c.rotary_dim() % 2 == 0 && c.rotary_dim() > 0, "config.json: rotary dim ",
             c.rotary_dim(), " (head_dim * partial_rotary_factor) must be even and positive");
  }
  if (c.num_linear_attention_layers() > 0) {
    BF_CHECK(c.linear_num_key_heads > 0 && c.linear_num_value_heads > 0 &&
                 c.linear_key_head_dim > 0 && c.linear_value_head_dim > 0 &&
                 c.linear_conv_kernel_dim > 1,
             "config.json: linear attention dims must be positive");
    BF_CHECK(c.linear_num_value_heads % c.linear_num_key_heads == 0,
             "config.json: linear_num_value_heads (", c.linear_num_value_heads,
             ") must be a multiple of linear_num_key_heads (", c.linear_num_key_heads, ")");
  }
  if (c.is_moe) {
    BF_CHECK(c.num_experts > 0 && c.num_experts_per_tok > 0 &&
                 c.num_experts_per_tok <= c.num_experts && c.moe_intermediate_size > 0,
             "config.json: MoE needs num_experts >= num_experts_per_tok > 0 and "
             "moe_intermediate_size > 0");
  } else {
    BF_CHECK(c.intermediate_size > 0, "config.json: intermediate_size must be positive");
  }
}

GenerationDefaults parse_generation_defaults(const json& generation) {
  GenerationDefaults defaults;
  auto number = [&](const char* key) -> std::optional<float> {
    auto it = generation.find(key);
    if (it == generation.end() || !it->is_number()) return std::nullopt;
    return it->get<float>();
  };
  defaults.temperature = number("temperature");
  defaults.top_p = number("top_p");
  defaults.min_p = number("min_p");
  defaults.repetition_penalty = number("repetition_penalty");
  auto top_k = generation.find("top_k");
  if (top_k != generation.end() && top_k->is_number_integer()) defaults.top_k = top_k->get<int32_t>();
  return defaults;
}

}  // namespace

int32_t ModelConfig::num_full_attention_layers() const {
  int32_t count = 0;
  for (LayerType type : layer_types) count += type == LayerType::kFullAttention;
  return count;
}

int32_t ModelConfig::num_linear_attention_layers() const {
  return static_cast<int32_t>(layer_types.size()) - num_full_attention_layers();
}

std::string ModelConfig::summary() const {
  std::ostringstream out;
  out << architecture << ": " << num_hidden_layers << " layers (" << num_linear_attention_layers()
      << " Gated DeltaNet, " << num_full_attention_layers() << " gated attention), hidden "
      << hidden_size << ", vocab " << vocab_size << ", attention " << num_attention_heads << "/"
      << num_key_value_heads << " heads x " << head_dim << ", GDN " << linear_num_key_heads << "/"
      << linear_num_value_heads << " heads x " << linear_key_head_dim << "/"
      << linear_value_head_dim;
  if (is_moe)
    out << ", MoE " << num_experts << " experts top-" << num_experts_per_tok << " (+shared "
        << shared_expert_intermediate_size << ")";
  else
    out << ", MLP " << intermediate_size;
  out << (tie_word_embeddings ? ", tied embeddings" : ", untied embeddings");
  return out.str();
}

ModelConfig parse_model_config(const json& root) {
  BF_CHECK(root.is_object(), "config.json: top level must be an object");
  ModelConfig config;
  auto arch = root.find("architectures");
  BF_CHECK(arch != root.end() && arch->is_array() && !arch->empty() && (*arch)[0].is_string(),
           "config.json: missing 'architectures' (a list naming the model class)");
  config.architecture = (*arch)[0].get<std::string>();
  if (!supported_architectures().count(config.architecture)) {
    std::string known;
    for (const auto& name : supported_architectures()) known += (known.empty() ? "" : ", ") + name;
    fail("config.json: architecture '", config.architecture, "' is not supported (supported: ",
         known, ")");
  }
  config.is_moe = config.architecture.find("Moe") != std::string::npos;

  auto text_it = root.find("text_config");
  config.nested = text_it != root.end() && text_it->is_object();
  const json& text = config.nested ? *text_it : root;
  config.model_type = text.value("model_type", root.value("model_type", std::string()));

  config.vocab_size = get_int(text, "vocab_size");
  config.hidden_size = get_int(text, "hidden_size");
  config.num_hidden_layers = get_int(text, "num_hidden_layers");
  config.layer_types = parse_layer_types(text, config.num_hidden_layers);
  config.rms_norm_eps = static_cast<float>(get_number(text, "rms_norm_eps", 1e-6));
  config.max_position_embeddings = get_int(text, "max_position_embeddings", 262144);
  // The nested layout keeps tie_word_embeddings at the top level (HF Qwen3_5Config).
  config.tie_word_embeddings =
      get_bool(root, "tie_word_embeddings", get_bool(text, "tie_word_embeddings", false));

  config.num_attention_heads = get_int(text, "num_attention_heads");
  config.num_key_value_heads = get_int(text, "num_key_value_heads", config.num_attention_heads);
  config.head_dim = get_int(text, "head_dim",
                            config.num_attention_heads ? config.hidden_size / config.num_attention_heads : 0);
  config.attn_output_gate = get_bool(text, "attn_output_gate", true);
  BF_CHECK(config.attn_output_gate, "config.json: attn_output_gate=false is not supported");
  BF_CHECK(!get_bool(text, "attention_bias", false), "config.json: attention_bias is not supported");
  parse_rope(text, config);

  config.linear_num_key_heads = get_int(text, "linear_num_key_heads", 16);
  config.linear_num_value_heads = get_int(text, "linear_num_value_heads", 32);
  config.linear_key_head_dim = get_int(text, "linear_key_head_dim", 128);
  config.linear_value_head_dim = get_int(text, "linear_value_head_dim", 128);
  config.linear_conv_kernel_dim = get_int(text, "linear_conv_kernel_dim", 4);

  if (config.is_moe) {
    config.num_experts = get_int(text, "num_experts");
    config.num_experts_per_tok = get_int(text, "num_experts_per_tok");
    config.moe_intermediate_size = get_int(text, "moe_intermediate_size");
    config.shared_expert_intermediate_size = get_int(text, "shared_expert_intermediate_size", 0);
    config.norm_topk_prob = get_bool(text, "norm_topk_prob", true);
    BF_CHECK(get_int(text, "decoder_sparse_step", 1) == 1,
             "config.json: decoder_sparse_step != 1 is not supported (Qwen3.5-MoE uses 1)");
  } else {
    config.intermediate_size = get_int(text, "intermediate_size");
  }
  std::string act = text.value("hidden_act", std::string("silu"));
  BF_CHECK(act == "silu", "config.json: hidden_act '", act, "' is not supported (silu)");

  append_eos_ids(text, config.eos_token_ids);
  append_eos_ids(root, config.eos_token_ids);
  validate(config);
  return config;
}

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  BF_CHECK(in.good(), "cannot open ", path.string());
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail(path.string(), ": invalid JSON: ", e.what());
  }
}

ModelConfig load_model_config(const std::filesystem::path& model_dir) {
  // A bare config file (bench/configs/*.json) describes shapes only: --load-format dummy.
  const bool bare_file = std::filesystem::is_regular_file(model_dir);
  auto config_path = bare_file ? model_dir : model_dir / "config.json";
  BF_CHECK(std::filesystem::exists(config_path), "model directory ", model_dir.string(),
           " has no config.json");
  ModelConfig config;
  try {
    config = parse_model_config(read_json_file(config_path));
  } catch (const Error& e) {
    fail(config_path.string(), ": ", e.what());
  }
  auto generation_path = model_dir / "generation_config.json";
  if (!bare_file && std::filesystem::exists(generation_path)) {
    std::vector<int32_t> ids;
    append_eos_ids(read_json_file(generation_path), ids);
    // generation_config.json is what HF generate() stops on; keep config.json's too.
    for (int32_t id : config.eos_token_ids) {
      bool seen = false;
      for (int32_t existing : ids) seen |= existing == id;
      if (!seen) ids.push_back(id);
    }
    config.eos_token_ids = ids;
    config.generation_defaults = parse_generation_defaults(read_json_file(generation_path));
  }
  return config;
}

}  // namespace bf
