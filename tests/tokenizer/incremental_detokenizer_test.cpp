// Streaming detokenization: output pieces are valid UTF-8 and add up to decode(ids).
#include "tokenizer/incremental_detokenizer.h"

#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace bf {
namespace {

const Tokenizer& qwen() {
  static const Tokenizer tok =
      Tokenizer::from_model_dir(std::filesystem::path(BLOCKFLASH_TEST_DATA_DIR) / "data" / "tokenizer");
  return tok;
}

void check_stream(const std::vector<int32_t>& ids, bool skip_special) {
  IncrementalDetokenizer detok(qwen(), skip_special);
  std::string streamed;
  for (const int32_t id : ids) {
    const std::string out = detok.push(id);
    ASSERT_TRUE(utf8::is_valid(out));
    EXPECT_LE(detok.pending_bytes(), 3u);
    streamed += out;
  }
  const std::string tail = detok.flush();
  ASSERT_TRUE(utf8::is_valid(tail));
  streamed += tail;
  EXPECT_EQ(streamed, qwen().decode(ids, skip_special));
  EXPECT_EQ(detok.pending_bytes(), 0u);
}

TEST(IncrementalDetokenizer, HoldsBackPartialCharacters) {
  // "中" is E4 B8 AD; the byte tokens are the byte-level chars of each byte.
  const Tokenizer& tok = qwen();
  const auto e4 = *tok.token_to_id("\xC3\xA4");  // 'ä' stands for byte 0xE4
  const auto b8 = *tok.token_to_id("\xC2\xB8");  // '¸' stands for byte 0xB8
  const auto ad = *tok.token_to_id("\xC5\x83");  // 'Ń' stands for byte 0xAD
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.push(e4), "");
  EXPECT_EQ(detok.push(b8), "");
  EXPECT_EQ(detok.push(ad), "中");
  EXPECT_EQ(detok.push(e4), "");
  EXPECT_EQ(detok.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.push(e4), "");
  EXPECT_EQ(detok.push(*tok.token_to_id("a")), "\xEF\xBF\xBD" "a");
}

// Ids past the tokenizer (a padded embedding table) decode to nothing and do not disturb
// a character being assembled around them.
TEST(IncrementalDetokenizer, IdsPastTheVocabularyDecodeToNothing) {
  const Tokenizer& tok = qwen();
  const auto e4 = *tok.token_to_id("\xC3\xA4");
  const auto b8 = *tok.token_to_id("\xC2\xB8");
  const auto ad = *tok.token_to_id("\xC5\x83");
  IncrementalDetokenizer detok(tok);
  EXPECT_EQ(detok.push(e4), "");
  EXPECT_EQ(detok.push(tok.vocab_size() + 5), "");
  EXPECT_EQ(detok.push(b8), "");
  EXPECT_EQ(detok.push(ad), "中");
  EXPECT_EQ(detok.flush(), "");
}

TEST(IncrementalDetokenizer, RealTextRoundTrips) {
  const std::string text = "Hello 世界! 👨‍👩‍👧‍👦 café <|im_start|>user\n안녕<|im_end|> e\u0301 \t\n";
  for (const bool skip : {false, true}) check_stream(qwen().encode(text), skip);
}

TEST(IncrementalDetokenizer, RandomIdsMatchDecode) {
  std::mt19937 rng(7);
  const int32_t vocab = qwen().vocab_size();
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int32_t> ids(rng() % 24);
    for (auto& id : ids) {
      // Mostly byte tokens (< 256) so multi-byte characters get split and broken.
      id = rng() % 3 == 0 ? static_cast<int32_t>(rng() % vocab) : static_cast<int32_t>(rng() % 256);
    }
    check_stream(ids, trial % 2 == 1);
  }
}

TEST(IncrementalDetokenizer, ValidCharactersSplitAcrossByteTokens) {
  // Encode text, then re-spell every token as its individual byte tokens.
  const Tokenizer& tok = qwen();
  std::vector<int32_t> byte_ids;
  for (const int32_t id : tok.encode("ÿ中文😀🇫🇷 한국어 مرحبا")) {
    for (const char c : tok.token_piece(id)) {
      std::string one(1, c);
      for (int32_t b = 0; b < 256; ++b) {
        if (tok.token_piece(b) == one) {
          byte_ids.push_back(b);
          break;
        }
      }
    }
  }
  check_stream(byte_ids, false);
  EXPECT_EQ(tok.decode(byte_ids), "ÿ中文😀🇫🇷 한국어 مرحبا");
}

}  // namespace
}  // namespace bf
