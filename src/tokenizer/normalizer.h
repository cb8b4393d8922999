// tokenizer.json "normalizer": the Unicode normal forms (NFC for Qwen) and Sequences of
// them, applied to the text between added tokens before pre-tokenization. Any other
// normalizer type is rejected at load time with its name, never silently skipped.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace bf {

class Normalizer {
 public:
  enum class Form { kNfc, kNfd, kNfkc, kNfkd };

  // `spec` is the "normalizer" value (may be null: no normalization).
  static Normalizer from_json(const nlohmann::json& spec);

  // `text` must be valid UTF-8.
  std::string apply(std::string_view text) const;
  bool empty() const { return forms_.empty(); }

 private:
  std::vector<Form> forms_;  // applied in order
};

}  // namespace bf
