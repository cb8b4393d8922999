// tokenizer.json "added_tokens": strings matched verbatim in the input before any
// normalization or BPE (HF's AddedVocabulary). Matching is leftmost-longest over all added
// tokens, like HF's Aho-Corasick; non-normalized tokens match the raw text, normalized ones
// match the normalized text between them. A special token whose text is not allowed
// (allow_special=false) is skipped where it matches, so its text goes to BPE as plain text.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace bf {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool single_word = false;  // only matches when not inside a word
  bool normalized = false;   // matched against normalized text (else raw text)

  static AddedToken from_json(const nlohmann::json& spec);
};

class AddedTokenMatcher {
 public:
  // A piece of the input: an added token (`id` >= 0) or text to tokenize (`id` == -1).
  struct Segment {
    int32_t id;
    size_t begin;
    size_t end;
  };

  AddedTokenMatcher() = default;
  // Keeps the tokens with `normalized` equal to `normalized_tokens`; `contents` are the
  // strings to match (for normalized tokens: their normalized form).
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, const std::vector<std::string>& contents,
                    bool normalized_tokens);

  bool empty() const { return entries_.empty(); }

  // Splits `text` into segments covering it in order (text segments are never empty).
  void split(std::string_view text, bool allow_special, std::vector<Segment>& out) const;

 private:
  struct Entry {
    std::string content;
    int32_t id;
    bool special, lstrip, rstrip, single_word;
  };
  std::vector<Entry> entries_;
  std::array<std::vector<uint32_t>, 256> by_first_byte_;  // entry indices, longest first
};

}  // namespace bf
