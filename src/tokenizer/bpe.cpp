// The merge loop is HF's: symbols in a linked list, candidate pairs in a min-heap by
// (rank, position); a popped candidate is stale (and skipped) unless its pair still forms
// the same merged token. Popping the lowest rank, leftmost first, is exactly HF's order.
#include "tokenizer/bpe.h"

#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <shared_mutex>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace bf {
namespace {

constexpr size_t kCacheCapacity = 10000;     // words; HF's default
constexpr size_t kMaxCachedWordBytes = 256;  // longer words are rare and not worth keeping
constexpr char32_t kSmallCharLimit = 0x180;  // covers the byte-level alphabet (< U+0144)

}  // namespace

struct BpeModel::Cache {
  std::shared_mutex mutex;
  StringMap<std::vector<int32_t>> words;
};

BpeModel::BpeModel() : cache_(std::make_unique<Cache>()) {}
BpeModel::~BpeModel() = default;
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;

BpeModel BpeModel::from_json(const nlohmann::json& spec) {
  BF_CHECK(spec.is_object(), "tokenizer.json: \"model\" must be an object");
  const std::string type = spec.value("type", "BPE");
  BF_CHECK(type == "BPE", "tokenizer.json: unsupported model type '", type, "' (supported: BPE)");
  BF_CHECK(spec.contains("vocab") && spec["vocab"].is_object(),
           "tokenizer.json: BPE model needs a \"vocab\" object");
  BF_CHECK(spec.contains("merges") && spec["merges"].is_array(),
           "tokenizer.json: BPE model needs a \"merges\" array");
  const auto string_or_null = [&](const char* key) {
    return spec.contains(key) && !spec[key].is_null() ? spec[key].get<std::string>() : "";
  };
  BF_CHECK(string_or_null("continuing_subword_prefix").empty() &&
               string_or_null("end_of_word_suffix").empty(),
           "tokenizer.json: BPE continuing_subword_prefix/end_of_word_suffix are not supported");
  BF_CHECK(!spec.value("byte_fallback", false), "tokenizer.json: BPE byte_fallback is not supported");
  // "dropout" only matters for training-time sampling; inference is deterministic without it.

  BpeModel m;
  m.vocab_.reserve(spec["vocab"].size());
  for (const auto& [token, id] : spec["vocab"].items()) {
    BF_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX,
             "tokenizer.json: vocab entry '", token, "' has an invalid id");
    m.vocab_.insert_or_assign(token, id.get<int32_t>());
  }

  const auto& merges = spec["merges"];
  m.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {  // "left right"
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      BF_CHECK(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
               "tokenizer.json: merge ", rank, " '", line, "' is not two tokens separated by a space");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail("tokenizer.json: merge ", rank, " must be \"a b\" or [\"a\", \"b\"], got ", merge.dump());
    }
    const auto left_id = m.token_to_id(left);
    const auto right_id = m.token_to_id(right);
    const auto new_id = m.token_to_id(left + right);
    BF_CHECK(left_id && right_id, "tokenizer.json: merge ", rank, " uses a token missing from the vocab: '",
             left_id ? right : left, "'");
    BF_CHECK(new_id, "tokenizer.json: merge ", rank, " result '", left + right, "' is not in the vocab");
    // Later duplicates overwrite earlier ones, as in HF's HashMap collect.
    m.merges_.insert_or_assign(pair_key(*left_id, *right_id),
                               Merge{static_cast<int32_t>(rank), *new_id});
  }

  const std::string unk = string_or_null("unk_token");
  if (!unk.empty()) {
    m.unk_id_ = m.token_to_id(unk);
    BF_CHECK(m.unk_id_, "tokenizer.json: unk_token '", unk, "' is not in the vocab");
  }
  m.fuse_unk_ = spec.value("fuse_unk", false);
  m.ignore_merges_ = spec.value("ignore_merges", false);

  m.small_char_ids_.assign(kSmallCharLimit, -1);
  for (char32_t cp = 0; cp < kSmallCharLimit; ++cp) {
    std::string ch;
    utf8::append(ch, cp);
    if (const auto id = m.token_to_id(ch)) m.small_char_ids_[cp] = *id;
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

int32_t BpeModel::char_id(std::string_view ch) const {
  const utf8::Scan s = utf8::scan(ch, 0);
  if (s.kind == utf8::Scan::kValid && s.code_point < kSmallCharLimit) return small_char_ids_[s.code_point];
  const auto id = token_to_id(ch);
  return id ? *id : -1;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_->mutex);
    const auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::unique_lock lock(cache_->mutex);
    if (cache_->words.size() < kCacheCapacity) {
      cache_->words.try_emplace(std::string(word), out.begin() + first, out.end());
    }
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;  // index of the left symbol
    int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };

  // Initial symbols: one per character. Characters missing from the vocab become the unk
  // token (consecutive ones fused if fuse_unk) or, without unk, are dropped -- HF's rules.
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool last_was_unk = false;
  for (size_t pos = 0; pos < word.size();) {
    const utf8::Scan s = utf8::scan(word, pos);
    const size_t length = s.kind == utf8::Scan::kIncomplete ? word.size() - pos : s.length;
    int32_t id = char_id(word.substr(pos, length));
    pos += length;
    const bool is_unk = id < 0;
    if (is_unk) {
      if (!unk_id_) continue;
      if (fuse_unk_ && last_was_unk) continue;
      id = *unk_id_;
    }
    last_was_unk = is_unk;
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace bf
