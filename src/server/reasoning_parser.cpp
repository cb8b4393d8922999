#include "server/reasoning_parser.h"

namespace bf::server {
namespace {

constexpr std::string_view kThinkStart = "<think>";
constexpr std::string_view kThinkEnd = "</think>";

// Length of the longest suffix of `text` that is a proper prefix of `tag`.
size_t partial_tag_suffix(std::string_view text, std::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

ReasoningParser::ReasoningParser(bool starts_in_reasoning)
    : state_(starts_in_reasoning ? State::kReasoning : State::kStart),
      has_reasoning_(starts_in_reasoning) {}

ReasoningParser::Delta ReasoningParser::push(std::string_view text) {
  pending_ += text;
  Delta delta;
  for (;;) {
    if (state_ == State::kStart) {
      size_t first = pending_.find_first_not_of(" \t\r\n");
      if (first == std::string::npos) return delta;  // only whitespace so far
      std::string_view rest = std::string_view(pending_).substr(first);
      if (rest.substr(0, kThinkStart.size()) == kThinkStart) {
        pending_.erase(0, first + kThinkStart.size());
        state_ = State::kReasoning;
        has_reasoning_ = true;
        continue;
      }
      if (rest.size() < kThinkStart.size() && kThinkStart.substr(0, rest.size()) == rest)
        return delta;  // may still become "<think>"
      state_ = State::kContent;
      continue;
    }
    if (state_ == State::kReasoning) {
      size_t end = pending_.find(kThinkEnd);
      if (end != std::string::npos) {
        delta.reasoning += pending_.substr(0, end);
        pending_.erase(0, end + kThinkEnd.size());
        state_ = State::kContent;
        continue;
      }
      size_t hold = partial_tag_suffix(pending_, kThinkEnd);
      delta.reasoning += pending_.substr(0, pending_.size() - hold);
      pending_.erase(0, pending_.size() - hold);
      return delta;
    }
    delta.content += pending_;
    pending_.clear();
    return delta;
  }
}

ReasoningParser::Delta ReasoningParser::finish() {
  Delta delta;
  if (state_ == State::kReasoning) delta.reasoning = std::move(pending_);
  else delta.content = std::move(pending_);
  pending_.clear();
  return delta;
}

}  // namespace bf::server
