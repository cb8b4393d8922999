// Splits a chat completion's text into reasoning and answer, as vLLM's qwen3 reasoning
// parser does: text before "</think>" is reasoning_content, the rest is content.
// Where the output starts decides the first state: inside reasoning when the prompt left a
// <think> block open (Qwen3.5's generation prompt), otherwise in content unless the output
// itself opens with "<think>" (dropped, with the whitespace before it). With thinking disabled
// (the template emits an empty, closed think block) everything is content.
// Streaming-safe: text that may be the start of a tag is held until it is known not to be;
// pushing the text in any split gives the same result as pushing it whole.
#pragma once

#include <string>
#include <string_view>

namespace bf::server {

class ReasoningParser {
 public:
  explicit ReasoningParser(bool starts_in_reasoning);

  struct Delta {
    std::string reasoning;
    std::string content;
    bool empty() const { return reasoning.empty() && content.empty(); }
  };

  Delta push(std::string_view text);
  // Releases the held-back text at the end of the output.
  Delta finish();

  // True once any text was classified as reasoning (or the output started in reasoning).
  bool has_reasoning() const { return has_reasoning_; }

 private:
  enum class State { kStart, kReasoning, kContent };
  State state_;
  std::string pending_;
  bool has_reasoning_ = false;
};

}  // namespace bf::server
