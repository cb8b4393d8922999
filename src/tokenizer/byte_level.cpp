// The table is GPT-2's: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100 + n in byte order.
#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace bf::byte_level {
namespace {

constexpr char32_t kMaxChar = 0x144;  // one past the largest mapped code point (U+0143)

struct Tables {
  std::array<std::string, 256> byte_to_utf8;
  std::array<int16_t, kMaxChar> char_to_byte;  // -1: not in the alphabet

  Tables() {
    char_to_byte.fill(-1);
    char32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : next_extra++;
      utf8::append(byte_to_utf8[b], cp);
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

std::string_view char_for_byte(uint8_t byte) { return tables().byte_to_utf8[byte]; }

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += t.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

bool decode(std::string_view token, std::string& out) {
  const Tables& t = tables();
  const size_t start = out.size();
  for (size_t pos = 0; pos < token.size();) {
    const utf8::Scan s = utf8::scan(token, pos);
    const int byte = s.kind == utf8::Scan::kValid && s.code_point < kMaxChar
                         ? t.char_to_byte[s.code_point] : -1;
    if (byte < 0) {
      out.resize(start);
      return false;
    }
    out += static_cast<char>(byte);
    pos += s.length;
  }
  return true;
}

}  // namespace bf::byte_level
