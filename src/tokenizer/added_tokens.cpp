// Added-token splitting, following HF AddedVocabulary::find_matches (single_word, lstrip,
// rstrip included). Word and whitespace tests use Unicode properties via utf8proc.
#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace bf {
namespace {

// Rust char::is_whitespace: the White_Space property.
bool is_white_space(char32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// HF's word character: alphanumeric or '_'.
bool is_word_char(char32_t cp) {
  if (cp == '_') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// The code point that ends just before `end` (text is valid UTF-8, end > 0).
char32_t code_point_before(std::string_view text, size_t end, size_t* start) {
  size_t pos = end - 1;
  while (pos > 0 && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) --pos;
  *start = pos;
  return utf8::scan(text, pos).code_point;
}

}  // namespace

AddedToken AddedToken::from_json(const nlohmann::json& spec) {
  BF_CHECK(spec.is_object() && spec.contains("id") && spec["id"].is_number_integer() &&
               spec.contains("content") && spec["content"].is_string(),
           "tokenizer.json: each added_tokens entry needs an integer \"id\" and a string \"content\"");
  AddedToken t;
  t.id = spec["id"].get<int32_t>();
  t.content = spec["content"].get<std::string>();
  BF_CHECK(t.id >= 0 && !t.content.empty(), "tokenizer.json: bad added token '", t.content, "'");
  t.special = spec.value("special", false);
  t.lstrip = spec.value("lstrip", false);
  t.rstrip = spec.value("rstrip", false);
  t.single_word = spec.value("single_word", false);
  t.normalized = spec.value("normalized", !t.special);
  return t;
}

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens,
                                     const std::vector<std::string>& contents,
                                     bool normalized_tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    const AddedToken& t = tokens[i];
    if (t.normalized != normalized_tokens || contents[i].empty()) continue;
    entries_.push_back({contents[i], t.id, t.special, t.lstrip, t.rstrip, t.single_word});
  }
  for (uint32_t i = 0; i < entries_.size(); ++i) {
    by_first_byte_[static_cast<uint8_t>(entries_[i].content[0])].push_back(i);
  }
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](uint32_t a, uint32_t b) {
      return entries_[a].content.size() > entries_[b].content.size();
    });
  }
}

void AddedTokenMatcher::split(std::string_view text, bool allow_special,
                              std::vector<Segment>& out) const {
  size_t emitted = 0;  // everything before this offset is in `out`
  size_t pos = 0;
  while (pos < text.size()) {
    // Leftmost-longest: the first position where some token matches, its longest token.
    const Entry* match = nullptr;
    for (const uint32_t index : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      if (text.substr(pos).starts_with(entries_[index].content)) {
        match = &entries_[index];
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + match->content.size();
    pos = stop;  // matching resumes after this match whether or not it is used
    if (match->special && !allow_special) continue;
    if (match->single_word) {
      size_t unused;
      const bool start_ok = start == 0 || !is_word_char(code_point_before(text, start, &unused));
      const bool stop_ok = stop == text.size() || !is_word_char(utf8::scan(text, stop).code_point);
      if (!start_ok || !stop_ok) continue;
    }
    if (match->lstrip) {
      size_t before = start;
      while (before > emitted) {
        size_t cp_start;
        if (!is_white_space(code_point_before(text, before, &cp_start))) break;
        before = cp_start;
      }
      start = before;
    }
    if (match->rstrip) {
      while (stop < text.size()) {
        const utf8::Scan s = utf8::scan(text, stop);
        if (!is_white_space(s.code_point)) break;
        stop += s.length;
      }
      pos = stop;
    }
    if (emitted < start) out.push_back({-1, emitted, start});
    out.push_back({match->id, start, stop});
    emitted = stop;
  }
  if (emitted < text.size()) out.push_back({-1, emitted, text.size()});
}

}  // namespace bf
