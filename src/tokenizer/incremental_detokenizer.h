// Streaming detokenization for one sequence: push ids as they are generated, get back the
// text they complete. A token may end in the middle of a UTF-8 character (byte-level BPE),
// so bytes that could still become a valid character are held until they do (or flush()).
// Invariant: concatenating every push() result and flush() equals
// tokenizer.decode(all ids, skip_special_tokens), and each returned string is valid UTF-8.
#pragma once

#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace bf {

class IncrementalDetokenizer {
 public:
  // Keeps a reference: `tokenizer` must outlive this object.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false);

  // Text completed by `id`. Throws bf::Error on an unknown id.
  std::string push(int32_t id);
  // Everything still held back (an unfinished character becomes U+FFFD); resets the state.
  std::string flush();

  // Bytes held back waiting for the rest of a character (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace bf
