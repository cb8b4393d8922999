// The small pieces: lossy UTF-8 (Rust from_utf8_lossy rules), the byte-level table, and the
// Oniguruma-compatible \s rewrite.
#include <gtest/gtest.h>

#include "tokenizer/byte_level.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace bf {
namespace {

constexpr const char* R = "\xEF\xBF\xBD";

TEST(Utf8, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(utf8::lossy("abc"), "abc");
  EXPECT_EQ(utf8::lossy("\xE4\xB8"), R);  // truncated 3-byte char: one U+FFFD
  EXPECT_EQ(utf8::lossy("\xE4\xB8" "A"), std::string(R) + "A");
  EXPECT_EQ(utf8::lossy("\xF0\x80"), std::string(R) + R);  // F0 80 is never valid
  EXPECT_EQ(utf8::lossy("\xED\xA0\x80"), std::string(R) + R + R);  // surrogate
  EXPECT_EQ(utf8::lossy("\xC0\xAF"), std::string(R) + R);  // overlong
  EXPECT_EQ(utf8::lossy("\xFF"), R);
  EXPECT_EQ(utf8::lossy("\xF4\x90\x80\x80"), std::string(R) + R + R + R);  // > U+10FFFF
  EXPECT_TRUE(utf8::is_valid("中😀"));
  EXPECT_FALSE(utf8::is_valid("\xE4\xB8"));
}

TEST(ByteLevel, RoundTripsEveryByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const std::string mapped = byte_level::encode(all);
  std::string back;
  ASSERT_TRUE(byte_level::decode(mapped, back));
  EXPECT_EQ(back, all);
  EXPECT_EQ(byte_level::char_for_byte(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(byte_level::char_for_byte('\n'), "\xC4\x8A");  // Ċ
  EXPECT_EQ(byte_level::char_for_byte('a'), "a");
  std::string out;
  EXPECT_FALSE(byte_level::decode("中", out));
  EXPECT_TRUE(out.empty());
}

TEST(Regex, WhiteSpaceRewrite) {
  EXPECT_EQ(onig_compatible_pattern(R"(\p{L}+)"), R"(\p{L}+)");
  EXPECT_NE(onig_compatible_pattern(R"([^\s\p{L}])").find("[^\\x{9}"), std::string::npos);
  EXPECT_EQ(onig_compatible_pattern(R"(\\s)"), R"(\\s)");  // an escaped backslash, then 's'
  std::vector<Regex::Match> matches;
  Regex(R"(\s+)").find_all("a \xE1\xA0\x8E b\xE3\x80\x80", matches);  // U+180E is not White_Space
  ASSERT_EQ(matches.size(), 3u);
  EXPECT_EQ(matches[0].begin, 1u);
  EXPECT_EQ(matches[0].end, 2u);
  EXPECT_EQ(matches[1].begin, 5u);
  EXPECT_EQ(matches[2].end, 10u);
}

}  // namespace
}  // namespace bf
