#include "server/output_format.h"

#include <algorithm>
#include <cmath>

namespace bf::server {
namespace {

size_t count_code_points(const std::string& text) {
  return static_cast<size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  }));
}

nlohmann::json byte_list(const Tokenizer& tokenizer, int32_t id) {
  nlohmann::json bytes = nlohmann::json::array();
  if (!tokenizer.contains(id)) return bytes;
  for (unsigned char c : tokenizer.token_piece(id)) bytes.push_back(static_cast<int>(c));
  return bytes;
}

}  // namespace

std::string token_text(const Tokenizer& tokenizer, int32_t id) {
  if (!tokenizer.contains(id)) return "";
  try {
    return tokenizer.decode({id}, /*skip_special_tokens=*/false);
  } catch (const std::exception&) {
    return "";
  }
}

double json_logprob(float logprob) {
  if (std::isnan(logprob)) return -9999.0;
  return std::max(static_cast<double>(logprob), -9999.0);
}

void CompletionLogprobs::clear() {
  tokens_ = nlohmann::json::array();
  token_logprobs_ = nlohmann::json::array();
  top_logprobs_ = nlohmann::json::array();
  text_offset_ = nlohmann::json::array();
}

void CompletionLogprobs::append_token(int32_t id) {
  std::string text = token_text(*tokenizer_, id);
  tokens_.push_back(text);
  text_offset_.push_back(offset_);
  offset_ += count_code_points(text);
}

void CompletionLogprobs::add_prompt_token(int32_t id, const std::optional<PositionLogprobs>& lp) {
  append_token(id);
  if (!lp) {
    token_logprobs_.push_back(nullptr);
    top_logprobs_.push_back(nullptr);
    return;
  }
  PositionLogprobs truncated = *lp;
  if (truncated.top.size() > static_cast<size_t>(top_k_)) truncated.top.resize(top_k_);
  token_logprobs_.push_back(json_logprob(lp->logprob));
  nlohmann::json top = nlohmann::json::object();
  for (const TokenLogprob& t : truncated.top) top[token_text(*tokenizer_, t.id)] = json_logprob(t.logprob);
  top[token_text(*tokenizer_, lp->token)] = json_logprob(lp->logprob);
  top_logprobs_.push_back(std::move(top));
}

void CompletionLogprobs::add(const PositionLogprobs& lp) {
  append_token(lp.token);
  token_logprobs_.push_back(json_logprob(lp.logprob));
  // OpenAI: the top `logprobs` tokens, plus the sampled one when it is not among them.
  nlohmann::json top = nlohmann::json::object();
  size_t k = std::min(lp.top.size(), static_cast<size_t>(std::max(top_k_, 0)));
  for (size_t i = 0; i < k; ++i) top[token_text(*tokenizer_, lp.top[i].id)] = json_logprob(lp.top[i].logprob);
  top[token_text(*tokenizer_, lp.token)] = json_logprob(lp.logprob);
  top_logprobs_.push_back(std::move(top));
}

nlohmann::json CompletionLogprobs::take() {
  nlohmann::json out = {{"text_offset", std::move(text_offset_)},
                        {"token_logprobs", std::move(token_logprobs_)},
                        {"tokens", std::move(tokens_)},
                        {"top_logprobs", std::move(top_logprobs_)}};
  clear();
  return out;
}

nlohmann::json chat_logprobs_entries(const Tokenizer& tokenizer,
                                     const std::vector<PositionLogprobs>& logprobs, int32_t top_k) {
  nlohmann::json entries = nlohmann::json::array();
  for (const PositionLogprobs& lp : logprobs) {
    nlohmann::json top = nlohmann::json::array();
    size_t k = std::min(lp.top.size(), static_cast<size_t>(std::max(top_k, 0)));
    for (size_t i = 0; i < k; ++i)
      top.push_back({{"token", token_text(tokenizer, lp.top[i].id)},
                     {"logprob", json_logprob(lp.top[i].logprob)},
                     {"bytes", byte_list(tokenizer, lp.top[i].id)}});
    entries.push_back({{"token", token_text(tokenizer, lp.token)},
                       {"logprob", json_logprob(lp.logprob)},
                       {"bytes", byte_list(tokenizer, lp.token)},
                       {"top_logprobs", std::move(top)}});
  }
  return entries;
}

nlohmann::json prompt_logprobs_json(const Tokenizer& tokenizer,
                                    const std::vector<std::optional<PositionLogprobs>>& positions,
                                    int32_t top_k) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& position : positions) {
    if (!position) {
      out.push_back(nullptr);
      continue;
    }
    nlohmann::json entry = nlohmann::json::object();
    entry[std::to_string(position->token)] = {{"logprob", json_logprob(position->logprob)},
                                              {"rank", position->rank},
                                              {"decoded_token", token_text(tokenizer, position->token)}};
    size_t k = std::min(position->top.size(), static_cast<size_t>(std::max(top_k, 0)));
    for (size_t i = 0; i < k; ++i) {
      const TokenLogprob& t = position->top[i];
      std::string key = std::to_string(t.id);
      if (entry.contains(key)) continue;
      entry[key] = {{"logprob", json_logprob(t.logprob)},
                    {"rank", static_cast<int32_t>(i + 1)},
                    {"decoded_token", token_text(tokenizer, t.id)}};
    }
    out.push_back(std::move(entry));
  }
  return out;
}

nlohmann::json stop_reason_json(const SequenceUpdate& update, const std::vector<std::string>& stop) {
  if (update.stop_reason.empty() || update.finish_reason != FinishReason::kStop) return nullptr;
  if (std::find(stop.begin(), stop.end(), update.stop_reason) != stop.end()) return update.stop_reason;
  try {
    size_t used = 0;
    long long id = std::stoll(update.stop_reason, &used);
    if (used == update.stop_reason.size()) return id;
  } catch (const std::exception&) {
  }
  return update.stop_reason;
}

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"completion_tokens", completion_tokens},
          {"prompt_tokens_details", nullptr}};
}

}  // namespace bf::server
