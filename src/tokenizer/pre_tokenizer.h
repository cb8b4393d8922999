// tokenizer.json "pre_tokenizer": cuts normalized text into words and maps them into the
// byte-level alphabet; BPE then runs on each word on its own. Supported: Split (regex or
// literal pattern; behavior Isolated or Removed; invert), ByteLevel (add_prefix_space,
// use_regex with GPT-2's pattern) and Sequences of them -- Qwen3.5 is
// Sequence[Split(regex, Isolated), ByteLevel(use_regex=false)], GPT-2/Qwen2-style files
// are ByteLevel(use_regex=true). Anything else is rejected at load time.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace bf {

class PreTokenizer {
 public:
  // `spec` is the "pre_tokenizer" value (null: the whole text is one word).
  static PreTokenizer from_json(const nlohmann::json& spec);

  // Appends the words of `text` (valid UTF-8) to `words`, in order, none empty.
  void split(std::string_view text, std::vector<std::string>& words) const;

 private:
  struct Step {
    enum Kind { kSplit, kByteLevel } kind;
    // kSplit
    std::vector<Regex> regex = {};  // exactly one (a vector: Regex has no empty state)
    bool remove_matches = false;  // behavior Removed (else Isolated)
    bool invert = false;
    // kByteLevel
    bool add_prefix_space = false;
    bool use_regex = false;
  };

  static void parse_into(const nlohmann::json& spec, std::vector<Step>& steps);
  void apply_split(const Regex& regex, bool remove_matches, bool invert, std::string_view piece,
                   std::vector<std::string>& out) const;

  std::vector<Step> steps_;
  std::vector<Regex> gpt2_regex_;  // compiled once when some ByteLevel step uses it
};

}  // namespace bf
