// UTF-8 helpers shared by the tokenizer and the detokenizer. Invalid input is replaced the
// way Rust's String::from_utf8_lossy does (one U+FFFD per maximal invalid subpart), because
// HF `tokenizers` decodes with it and our output must match byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bf::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Appends code point `cp` (must be a valid scalar value) to `out`.
void append(std::string& out, char32_t cp);

// What starts at `text[pos]`: a valid code point of `length` bytes, an invalid subpart of
// `length` bytes (to become one U+FFFD), or an incomplete but so-far-valid prefix that runs
// to the end of `text` (more bytes could still complete it).
struct Scan {
  enum Kind { kValid, kInvalid, kIncomplete } kind;
  size_t length;
  char32_t code_point;  // for kValid
};
Scan scan(std::string_view text, size_t pos);

bool is_valid(std::string_view text);

// from_utf8_lossy: valid text is returned unchanged.
std::string lossy(std::string_view bytes);

}  // namespace bf::utf8
