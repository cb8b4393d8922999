// A PCRE2 (UTF + UCP, JIT) regex that behaves like the Oniguruma regexes HF `tokenizers`
// compiles for pre-tokenizer patterns. The one real difference is `\s`: PCRE2 also matches
// U+180E there, Oniguruma matches exactly Unicode White_Space, so `\s`/`\S` are rewritten to
// an explicit White_Space class before compiling.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bf {

class Regex {
 public:
  struct Match {
    size_t begin;
    size_t end;
  };

  // Throws bf::Error naming the pattern and the PCRE2 message on a bad pattern.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // All non-overlapping matches left to right (empty ones too, like onig's find_iter).
  // `text` must be valid UTF-8 (it is not re-checked, for speed).
  void find_all(std::string_view text, std::vector<Match>& matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

// The `\s` -> White_Space rewrite, exposed for tests.
std::string onig_compatible_pattern(std::string_view pattern);

}  // namespace bf
