// Config parsing: both layouts, defaults, layer_types vs full_attention_interval, and clear
// errors for what we cannot run.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/config.h"

namespace bf {
namespace {

using nlohmann::json;

json flat_dense() {
  return json{{"architectures", {"Qwen3_5ForCausalLM"}},
              {"model_type", "qwen3_5_text"},
              {"vocab_size", 1024},
              {"hidden_size", 64},
              {"intermediate_size", 128},
              {"num_hidden_layers", 4},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"head_dim", 32},
              {"linear_num_key_heads", 2},
              {"linear_num_value_heads", 4},
              {"linear_key_head_dim", 16},
              {"linear_value_head_dim", 16},
              {"tie_word_embeddings", true},
              {"eos_token_id", 7},
              {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1e7},
                                   {"partial_rotary_factor", 0.25}}}};
}

TEST(ConfigTest, FlatDenseDefaultsToInterval4) {
  ModelConfig c = parse_model_config(flat_dense());
  EXPECT_FALSE(c.nested);
  EXPECT_FALSE(c.is_moe);
  ASSERT_EQ(c.layer_types.size(), 4u);
  EXPECT_EQ(c.layer_types[3], LayerType::kFullAttention);
  EXPECT_EQ(c.layer_types[0], LayerType::kLinearAttention);
  EXPECT_EQ(c.rotary_dim(), 8);
  EXPECT_EQ(c.linear_conv_dim(), 2 * 32 + 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{7});
}

TEST(ConfigTest, NestedMoeReadsTextConfigAndTopLevelTie) {
  json text = flat_dense();
  text.erase("architectures");
  text.erase("intermediate_size");
  text.erase("tie_word_embeddings");
  text["model_type"] = "qwen3_5_moe_text";
  text["num_experts"] = 8;
  text["num_experts_per_tok"] = 2;
  text["moe_intermediate_size"] = 32;
  text["shared_expert_intermediate_size"] = 32;
  text["layer_types"] = {"linear_attention", "full_attention", "linear_attention",
                         "full_attention"};
  json root{{"architectures", {"Qwen3_5MoeForConditionalGeneration"}},
            {"model_type", "qwen3_5_moe"},
            {"tie_word_embeddings", false},
            {"text_config", text}};
  ModelConfig c = parse_model_config(root);
  EXPECT_TRUE(c.nested);
  EXPECT_TRUE(c.is_moe);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.layer_types[1], LayerType::kFullAttention);
  EXPECT_EQ(c.num_full_attention_layers(), 2);
}

void expect_error(const json& config, const std::string& fragment) {
  try {
    parse_model_config(config);
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ConfigTest, ErrorsNameTheProblem) {
  json bad = flat_dense();
  bad["architectures"] = {"LlamaForCausalLM"};
  expect_error(bad, "LlamaForCausalLM");
  bad = flat_dense();
  bad.erase("hidden_size");
  expect_error(bad, "hidden_size");
  bad = flat_dense();
  bad["layer_types"] = {"linear_attention"};
  expect_error(bad, "layer_types has 1 entries");
  bad = flat_dense();
  bad["layer_types"] = {"linear_attention", "sliding_attention", "x", "y"};
  expect_error(bad, "sliding_attention");
  bad = flat_dense();
  bad["num_key_value_heads"] = 3;
  expect_error(bad, "multiple of num_key_value_heads");
  bad = flat_dense();
  bad["vocab_size"] = "big";
  expect_error(bad, "vocab_size");
  bad = flat_dense();
  bad["rope_parameters"]["rope_type"] = "yarn";
  expect_error(bad, "yarn");
}

}  // namespace
}  // namespace bf
