// Unit tests of the server's pieces that need no socket or model: the reasoning parser,
// typed field reading, error JSON, metrics text, chat message normalisation and prompt
// reasoning detection.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/chat_prompt.h"
#include "server/json_fields.h"
#include "server/metrics.h"
#include "server/reasoning_parser.h"

namespace bf::server {
namespace {

ReasoningParser::Delta run_split(bool in_reasoning, const std::string& text, size_t piece) {
  ReasoningParser parser(in_reasoning);
  ReasoningParser::Delta all;
  for (size_t i = 0; i < text.size(); i += piece) {
    auto d = parser.push(text.substr(i, piece));
    all.reasoning += d.reasoning;
    all.content += d.content;
  }
  auto d = parser.finish();
  all.reasoning += d.reasoning;
  all.content += d.content;
  return all;
}

TEST(ReasoningParser, PromptOpenedThinking) {
  for (size_t piece : {1, 2, 3, 7, 100}) {
    auto d = run_split(true, "let me think</think>\n\nThe answer", piece);
    EXPECT_EQ(d.reasoning, "let me think") << piece;
    EXPECT_EQ(d.content, "\n\nThe answer") << piece;
  }
}

TEST(ReasoningParser, GeneratedThinkTagIsDropped) {
  for (size_t piece : {1, 4, 100}) {
    auto d = run_split(false, "\n<think>plan</think>done", piece);
    EXPECT_EQ(d.reasoning, "plan");
    EXPECT_EQ(d.content, "done");
  }
}

TEST(ReasoningParser, NoTagsMeansContentOrReasoningByStart) {
  EXPECT_EQ(run_split(false, "plain <thin answer", 2).content, "plain <thin answer");
  auto truncated = run_split(true, "still thinking </thi", 3);
  EXPECT_EQ(truncated.reasoning, "still thinking </thi");
  EXPECT_EQ(truncated.content, "");
  ReasoningParser p(false);
  EXPECT_FALSE(p.has_reasoning());
}

TEST(ReasoningParser, PromptDetection) {
  EXPECT_TRUE(prompt_opens_reasoning("<|im_start|>assistant\n<think>\n"));
  EXPECT_FALSE(prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(prompt_opens_reasoning("<|im_start|>assistant\n"));
}

TEST(FieldReader, TypesAndNames) {
  nlohmann::json body = {{"max_tokens", "x"}, {"n", 2.0}, {"t", 1.5}, {"big", 1e300},
                         {"neg", -5}, {"nul", nullptr}, {"huge", 18446744073709551615ull}};
  FieldReader f(body);
  try {
    f.get_int32("max_tokens");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.param(), "max_tokens");
    EXPECT_NE(std::string(e.what()).find("must be an integer"), std::string::npos);
  }
  EXPECT_EQ(f.get_int32("n"), 2);
  EXPECT_THROW(f.get_int32("t"), ApiError);
  EXPECT_THROW(f.get_float("big"), ApiError);
  EXPECT_THROW(f.get_int32("huge"), ApiError);
  EXPECT_EQ(f.get_int32("neg"), -5);
  EXPECT_FALSE(f.get_int32("nul").has_value());
  EXPECT_FALSE(f.get_string("absent").has_value());
  nlohmann::json other = {{"unknown_field", 1}};
  FieldReader g(other);
  EXPECT_EQ(g.unread_fields(), std::vector<std::string>{"unknown_field"});
  EXPECT_THROW(FieldReader(nlohmann::json::array()), ApiError);
}

TEST(ParseJsonBody, MalformedAndDeep) {
  EXPECT_THROW(parse_json_body("{\"a\": "), ApiError);
  EXPECT_THROW(parse_json_body(""), ApiError);
  EXPECT_THROW(parse_json_body(std::string(10000, '[')), ApiError);
  EXPECT_EQ(parse_json_body("{\"a\": [1]}")["a"][0], 1);
}

TEST(ErrorJson, Shape) {
  nlohmann::json e = error_json(ApiError(404, "NotFoundError", "The model `x` does not exist.", "model"));
  EXPECT_EQ(e, nlohmann::json::parse(R"({"error": {"message": "The model `x` does not exist.",
      "type": "NotFoundError", "param": "model", "code": 404}})"));
}

TEST(Metrics, PrometheusText) {
  Metrics m;
  m.add_prompt_tokens(7);
  m.add_generation_tokens(3);
  m.observe_time_to_first_token(0.02);
  m.record_finished(0.4, "length");
  EngineStats stats;
  stats.num_running = 2;
  stats.num_blocks = 10;
  stats.num_free_blocks = 4;
  std::string text = m.render(stats, "my\"model");
  EXPECT_NE(text.find("vllm:num_requests_running{model_name=\"my\\\"model\"} 2.0\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:prompt_tokens_total{model_name=\"my\\\"model\"} 7.0\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:request_success_total{model_name=\"my\\\"model\",finished_reason=\"length\"} 1.0"),
            std::string::npos);
  EXPECT_NE(text.find("vllm:time_to_first_token_seconds_bucket{model_name=\"my\\\"model\",le=\"0.02\"} 1.0"),
            std::string::npos);
  EXPECT_NE(text.find("vllm:time_to_first_token_seconds_bucket{model_name=\"my\\\"model\",le=\"0.01\"} 0.0"),
            std::string::npos);
  EXPECT_NE(text.find("blockflash:num_free_kv_blocks{model_name=\"my\\\"model\"} 4.0"), std::string::npos);
  EXPECT_NE(text.find("# TYPE vllm:e2e_request_latency_seconds histogram"), std::string::npos);
}

TEST(ChatMessages, Normalize) {
  auto messages = nlohmann::ordered_json::parse(R"([
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
      "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}])");
  auto joined = normalize_messages(messages, false);
  EXPECT_EQ(joined[0]["content"], "a\nb");
  EXPECT_EQ(joined[1]["tool_calls"][0]["function"]["arguments"]["x"], 1);
  auto parts = normalize_messages(messages, true);
  EXPECT_TRUE(parts[0]["content"].is_array());
  for (const char* bad : {R"([])", R"([{"role": "wizard", "content": "x"}])", R"([{"content": "x"}])",
                          R"([{"role": "user", "content": 5}])",
                          R"([{"role": "user", "content": [{"type": "image_url"}]}])", R"("hi")"}) {
    EXPECT_THROW(normalize_messages(nlohmann::ordered_json::parse(bad), false), ApiError) << bad;
  }
}

TEST(ChatPrompt, RendersAndContinuesFinalMessage) {
  ChatPrompt chat(
      "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
      "{% if add_generation_prompt %}<|assistant|>{% endif %}",
      nlohmann::json::object());
  auto messages = nlohmann::ordered_json::parse(
      R"([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hel"}])");
  ChatRenderOptions options;
  EXPECT_EQ(chat.render(messages, options), "<|user|>hi<|end|><|assistant|>Hel<|end|><|assistant|>");
  options.add_generation_prompt = false;
  options.continue_final_message = true;
  EXPECT_EQ(chat.render(messages, options), "<|user|>hi<|end|><|assistant|>Hel");
  options.add_generation_prompt = true;
  EXPECT_THROW(chat.render(messages, options), ApiError);
}

}  // namespace
}  // namespace bf::server

namespace bf::server {
namespace {

class ChatPromptLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bf_chat_load_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::string render(const std::optional<ChatPrompt>& chat) {
    return chat->render(nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])"),
                        ChatRenderOptions{});
  }
  std::filesystem::path dir_;
};

TEST_F(ChatPromptLoad, JinjaFileWinsOverConfig) {
  write("tokenizer_config.json", R"({"chat_template": "config", "eos_token": "<e>"})");
  write("chat_template.jinja", "file {{ eos_token }}");
  EXPECT_EQ(render(ChatPrompt::load(dir_, "")), "file <e>");
}

TEST_F(ChatPromptLoad, ConfigStringListAndNone) {
  EXPECT_FALSE(ChatPrompt::load(dir_, "").has_value());
  write("tokenizer_config.json", R"({"chat_template": "str {{ messages[0].content }}"})");
  EXPECT_EQ(render(ChatPrompt::load(dir_, "")), "str hi");
  write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "tools"},
      {"name": "default", "template": "default"}], "bos_token": {"content": "<b>"}})");
  EXPECT_EQ(render(ChatPrompt::load(dir_, "")), "default");
}

TEST_F(ChatPromptLoad, OverrideFileOrText) {
  write("other.jinja", "override file");
  EXPECT_EQ(render(ChatPrompt::load(dir_, (dir_ / "other.jinja").string())), "override file");
  EXPECT_EQ(render(ChatPrompt::load(dir_, "inline {{ 1 + 1 }}")), "inline 2");
  EXPECT_THROW(ChatPrompt::load(dir_, "/no/such/file.jinja"), Error);
}

}  // namespace
}  // namespace bf::server
