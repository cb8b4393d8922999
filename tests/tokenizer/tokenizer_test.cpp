// Tokenizer vs HF `tokenizers`: the fixture tokenizers and their cases come from
// tools/make_tokenizer_fixture.py, so every expectation here is what HF produced.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"

namespace bf {
namespace {

const std::filesystem::path kDataDir = std::filesystem::path(BLOCKFLASH_TEST_DATA_DIR) / "data" / "tokenizer";

nlohmann::json load_json(const std::string& name) {
  std::ifstream in(kDataDir / name);
  EXPECT_TRUE(in) << name;
  return nlohmann::json::parse(in);
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const Tokenizer& qwen() {
  static const Tokenizer tok = Tokenizer::from_model_dir(kDataDir);
  return tok;
}

void check_cases(const Tokenizer& tok, const nlohmann::json& cases) {
  ASSERT_GT(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const bool allow_special = c.value("allow_special", true);
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, allow_special), expected) << "text: " << text;
    EXPECT_EQ(tok.decode(expected), c["decoded"].get<std::string>()) << "text: " << text;
  }
}

TEST(Tokenizer, QwenCasesMatchHf) { check_cases(qwen(), load_json("cases.json")); }

TEST(Tokenizer, Gpt2RegexCasesMatchHf) {
  const Tokenizer tok = Tokenizer::from_file(kDataDir / "tokenizer_gpt2.json");
  check_cases(tok, load_json("cases_gpt2.json"));
}

TEST(Tokenizer, DecodeCasesMatchHf) {
  for (const auto& c : load_json("decode_cases.json")) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(qwen().decode(ids), c["decoded"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(qwen().decode(ids, true), c["decoded_skip_special"].get<std::string>()) << c["ids"].dump();
  }
}

TEST(Tokenizer, MergesAsStringsEqualPairs) {
  auto root = nlohmann::json::parse(read_text(kDataDir / "tokenizer.json"));
  ASSERT_TRUE(root["model"]["merges"][0].is_array());
  for (auto& merge : root["model"]["merges"]) merge = merge[0].get<std::string>() + " " + merge[1].get<std::string>();
  const Tokenizer tok = Tokenizer::from_json_text(root.dump());
  for (const auto& c : load_json("cases.json")) {
    EXPECT_EQ(tok.encode(c["text"].get<std::string>(), c.value("allow_special", true)),
              c["ids"].get<std::vector<int32_t>>());
  }
}

TEST(Tokenizer, VocabAndSpecialTokens) {
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.vocab_size(), 926);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 900);
  EXPECT_EQ(tok.token_to_id("<|im_end|>"), 902);
  EXPECT_EQ(tok.token_to_id("</think>"), 925);
  EXPECT_EQ(tok.token_to_id("no such token"), std::nullopt);
  EXPECT_TRUE(tok.is_special(902));
  EXPECT_FALSE(tok.is_special(925));  // <think> tokens are added but not special, as in Qwen
  EXPECT_FALSE(tok.is_special(5));
  EXPECT_FALSE(tok.is_special(5000));
  EXPECT_EQ(tok.eos_token_id(), 902);
  EXPECT_EQ(tok.pad_token_id(), 900);
  EXPECT_EQ(tok.bos_token_id(), std::nullopt);
  EXPECT_EQ(tok.token_piece(902), "<|im_end|>");
  EXPECT_EQ(tok.token_piece(*tok.token_to_id("\xC4\xA0")), " ");  // "Ġ" is the space byte
}

TEST(Tokenizer, SkipSpecialKeepsNonSpecialAdded) {
  const Tokenizer& tok = qwen();
  const auto ids = tok.encode("<|im_start|>a<think>b</think><|im_end|>");
  EXPECT_EQ(tok.decode(ids), "<|im_start|>a<think>b</think><|im_end|>");
  EXPECT_EQ(tok.decode(ids, true), "a<think>b</think>");
}

TEST(Tokenizer, InvalidUtf8InputIsReplaced) {
  EXPECT_EQ(qwen().encode("a\xFF" "b"), qwen().encode("a\xEF\xBF\xBD" "b"));
}

TEST(Tokenizer, UnknownIdIsAnError) {
  try {
    qwen().decode({1, 2, 4242});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4242"), std::string::npos) << e.what();
  }
  EXPECT_THROW(qwen().decode({-1}), Error);
  EXPECT_THROW(qwen().token_piece(926), Error);
}

void expect_load_error(const std::string& json_text, const std::string& needle) {
  try {
    Tokenizer::from_json_text(json_text);
    FAIL() << "no error for " << json_text;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, MalformedFilesGiveClearErrors) {
  expect_load_error("{\"model\": ", "invalid JSON");
  expect_load_error("{}", "no \"model\"");
  auto root = nlohmann::json::parse(read_text(kDataDir / "tokenizer.json"));
  auto edit = [&](auto fn) {
    auto copy = root;
    fn(copy);
    return copy.dump();
  };
  expect_load_error(edit([](auto& j) { j["normalizer"] = {{"type", "Lowercase"}}; }), "Lowercase");
  expect_load_error(edit([](auto& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }), "Whitespace");
  expect_load_error(edit([](auto& j) { j["model"]["type"] = "WordPiece"; }), "WordPiece");
  expect_load_error(edit([](auto& j) { j["decoder"] = nullptr; }), "decoder");
  expect_load_error(edit([](auto& j) { j["model"]["merges"][0] = "x"; }), "merge 0");
  expect_load_error(edit([](auto& j) { j["model"]["merges"][3] = {"zzzz", "q"}; }), "zzzz");
  expect_load_error(edit([](auto& j) { j["model"].erase("vocab"); }), "vocab");
  expect_load_error(edit([](auto& j) {
    j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  }), "(unclosed");
  EXPECT_THROW(Tokenizer::from_file(kDataDir / "missing.json"), Error);
}

TEST(Tokenizer, ConcurrentEncodeSharesTheWordCache) {
  const Tokenizer tok = Tokenizer::from_file(kDataDir / "tokenizer.json");  // cold cache
  const auto cases = load_json("cases.json");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (const auto& c : cases) {
          if (tok.encode(c["text"].get<std::string>(), c.value("allow_special", true)) !=
              c["ids"].get<std::vector<int32_t>>()) {
            ++mismatches[t];
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(Tokenizer, LongTextEncodesFast) {
  std::string text;
  for (const auto& c : load_json("cases.json")) text += c["text"].get<std::string>();
  while (text.size() < 10000) text += text;
  const auto start = std::chrono::steady_clock::now();
  const auto ids = qwen().encode(text);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(qwen().decode(ids), qwen().decode(qwen().encode(text)));
  // A single pathological word (a long whitespace or letter run) must not be quadratic.
  const auto start_runs = std::chrono::steady_clock::now();
  qwen().encode(std::string(20000, ' ') + std::string(20000, 'a'));
  const double ms_runs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_runs).count();
  std::printf("encode %zu bytes: %.2f ms (%zu ids); 40k-byte runs: %.2f ms\n", text.size(), ms, ids.size(), ms_runs);
  EXPECT_LT(ms, 200.0);  // loose: a debug build on a busy machine
  EXPECT_LT(ms_runs, 1000.0);
}

}  // namespace
}  // namespace bf
