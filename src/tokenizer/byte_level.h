// GPT-2's byte-level alphabet (bytes_to_unicode): every byte maps to one printable code point
// (U+0021..U+0143), so a BPE over "characters" is really a BPE over bytes. The pre-tokenizer
// maps text bytes into this alphabet; the ByteLevel decoder maps token strings back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace bf::byte_level {

// The UTF-8 encoding of the code point that stands for `byte`.
std::string_view char_for_byte(uint8_t byte);

// Maps raw bytes to their byte-level string.
std::string encode(std::string_view bytes);

// Maps a byte-level token string back to bytes, appending to `out`. Returns false (and
// appends nothing) when some character is not in the alphabet: HF then uses the token's
// own UTF-8 bytes, which the caller does.
bool decode(std::string_view token, std::string& out);

}  // namespace bf::byte_level
