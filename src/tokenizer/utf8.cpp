// Maximal-subpart decoding (Unicode 3.9 / WHATWG), as Rust's Utf8Chunks implements it.
#include "tokenizer/utf8.h"

namespace bf::utf8 {

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

Scan scan(std::string_view text, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return {Scan::kValid, 1, lead};
  size_t need;        // total length of the sequence
  uint8_t lo = 0x80;  // allowed range of the second byte (excludes overlongs/surrogates)
  uint8_t hi = 0xBF;
  char32_t cp;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3, cp = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4, cp = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return {Scan::kInvalid, 1, 0};
  }
  for (size_t i = 1; i < need; ++i) {
    if (pos + i >= text.size()) return {Scan::kIncomplete, i, 0};
    const uint8_t b = byte(pos + i);
    const uint8_t min = i == 1 ? lo : 0x80;
    const uint8_t max = i == 1 ? hi : 0xBF;
    if (b < min || b > max) return {Scan::kInvalid, i, 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Scan::kValid, need, cp};
}

bool is_valid(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const Scan s = scan(text, pos);
    if (s.kind != Scan::kValid) return false;
    pos += s.length;
  }
  return true;
}

std::string lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t pos = 0; pos < bytes.size();) {
    const Scan s = scan(bytes, pos);
    if (s.kind == Scan::kValid) {
      out.append(bytes.substr(pos, s.length));
    } else {
      out.append(kReplacement);
    }
    pos += s.length;
  }
  return out;
}

}  // namespace bf::utf8
