// Hugging Face tokenizer.json reader for byte-level BPE (Qwen3.5 and GPT-2/Qwen2 styles),
// producing exactly the ids HF `tokenizers` produces: added tokens are split out first
// (leftmost-longest), the rest is NFC-normalized, pre-tokenized (regex split + byte-level
// mapping) and BPE-merged per word. Decoding is the ByteLevel decoder: token bytes
// concatenated, then invalid UTF-8 replaced by U+FFFD (Rust's from_utf8_lossy).
// A Tokenizer is immutable after loading; encode/decode may be called from many threads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"

namespace bf {

class Tokenizer {
 public:
  // Throws bf::Error naming the file and what is wrong (missing, bad JSON, unsupported part).
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  // tokenizer.json plus, if present, tokenizer_config.json for the eos/bos/pad token names.
  static Tokenizer from_model_dir(const std::filesystem::path& dir);
  // The same from tokenizer.json text already in memory.
  static Tokenizer from_json_text(std::string_view json_text);

  // Text to ids. Invalid UTF-8 in `text` is first replaced by U+FFFD. With
  // allow_special=false, special tokens' text (e.g. "<|im_end|>" typed by a user) is encoded
  // as plain text; non-special added tokens (<think>, <tool_call>) still match.
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;

  // Ids to text. Throws bf::Error on an id that is not in the vocabulary.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // The raw bytes one token decodes to (may be part of a UTF-8 character).
  // Throws bf::Error on an unknown id.
  const std::string& token_piece(int32_t id) const;

  // The token's string as written in tokenizer.json (byte-level alphabet for BPE tokens).
  const std::string& token_string(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(pieces_.size()); }  // max id + 1
  bool contains(int32_t id) const { return id >= 0 && id < vocab_size() && known_[id]; }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // True for added tokens marked special (these are what skip_special_tokens drops).
  bool is_special(int32_t id) const { return contains(id) && special_[id]; }
  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }

  // From tokenizer_config.json (from_model_dir only); empty when absent or null.
  std::optional<int32_t> eos_token_id() const { return eos_token_id_; }
  std::optional<int32_t> bos_token_id() const { return bos_token_id_; }
  std::optional<int32_t> pad_token_id() const { return pad_token_id_; }

 private:
  void check_id(int32_t id) const;
  void encode_text(std::string_view text, std::vector<int32_t>& ids) const;

  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  BpeModel model_;
  std::vector<AddedToken> added_tokens_;
  AddedTokenMatcher raw_matcher_;         // added tokens with normalized=false
  AddedTokenMatcher normalized_matcher_;  // added tokens with normalized=true

  // Indexed by id; ids in [0, vocab_size) that no token uses have known_ = false.
  std::vector<std::string> strings_;
  std::vector<std::string> pieces_;
  std::vector<uint8_t> known_;
  std::vector<uint8_t> special_;  // HF skips by content: any id whose string is special

  std::optional<int32_t> eos_token_id_;
  std::optional<int32_t> bos_token_id_;
  std::optional<int32_t> pad_token_id_;
};

}  // namespace bf
