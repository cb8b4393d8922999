// Decoding is "concatenate bytes, then lossy UTF-8" and the lossy rule is local (a maximal
// invalid subpart is decided by the bytes after it, never before), so emitting every settled
// code point or U+FFFD and keeping only a still-completable tail gives the same text.
#include "tokenizer/incremental_detokenizer.h"

#include "tokenizer/utf8.h"

namespace bf {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  // A model may emit ids past the tokenizer's vocabulary (embedding tables are padded, e.g.
  // Qwen3.5's 248320 rows for 248077 tokens); they decode to nothing, as in HF tokenizers.
  if (!tokenizer_->contains(id)) return {};
  const std::string& piece = tokenizer_->token_piece(id);
  if (skip_special_tokens_ && tokenizer_->is_special(id)) return {};
  pending_ += piece;
  std::string out;
  size_t pos = 0;
  while (pos < pending_.size()) {
    const utf8::Scan s = utf8::scan(pending_, pos);
    if (s.kind == utf8::Scan::kIncomplete) break;  // may still complete: hold it
    if (s.kind == utf8::Scan::kValid) {
      out.append(pending_, pos, s.length);
    } else {
      out.append(utf8::kReplacement);
    }
    pos += s.length;
  }
  pending_.erase(0, pos);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out = utf8::lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace bf
