// Loading (JSON -> parts) and the encode/decode pipelines.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace bf {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  BF_CHECK(in, "tokenizer: cannot open ", path.string());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

nlohmann::json parse_json(std::string_view text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(what, ": invalid JSON: ", e.what());
  }
}

// Only the ByteLevel decoder is supported: token_piece() and the incremental detokenizer
// rely on decode() being "concatenate token bytes, then lossy UTF-8".
void check_decoder(const nlohmann::json& spec) {
  BF_CHECK(spec.is_object() && spec.value("type", "") == "ByteLevel",
           "tokenizer.json: unsupported decoder ", spec.is_null() ? "null" : spec.dump(),
           " (supported: ByteLevel)");
}

void check_post_processor(const nlohmann::json& spec) {
  // ByteLevel's post-processor only adjusts offsets; anything that adds tokens is not ours.
  BF_CHECK(spec.is_null() || (spec.is_object() && spec.value("type", "") == "ByteLevel"),
           "tokenizer.json: unsupported post_processor type '",
           spec.is_object() ? spec.value("type", "?") : spec.dump(), "' (supported: null, ByteLevel)");
}

// tokenizer_config.json names a token as "text" or {"content": "text", ...} or null.
std::optional<std::string> config_token_name(const nlohmann::json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const auto& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::filesystem::path& tokenizer_json) {
  const std::string text = read_file(tokenizer_json);
  try {
    return from_json_text(text);
  } catch (const Error& e) {
    fail(tokenizer_json.string(), ": ", e.what());
  }
}

Tokenizer Tokenizer::from_model_dir(const std::filesystem::path& dir) {
  Tokenizer tok = from_file(dir / "tokenizer.json");
  const auto config_path = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(config_path)) return tok;
  const nlohmann::json config = parse_json(read_file(config_path), config_path.string());
  const auto lookup = [&](const char* key) -> std::optional<int32_t> {
    const auto name = config_token_name(config, key);
    if (!name) return std::nullopt;
    const auto id = tok.token_to_id(*name);
    BF_CHECK(id, config_path.string(), ": ", key, " '", *name, "' is not in the vocabulary");
    return id;
  };
  tok.eos_token_id_ = lookup("eos_token");
  tok.bos_token_id_ = lookup("bos_token");
  tok.pad_token_id_ = lookup("pad_token");
  return tok;
}

Tokenizer Tokenizer::from_json_text(std::string_view json_text) {
  const nlohmann::json root = parse_json(json_text, "tokenizer.json");
  BF_CHECK(root.is_object() && root.contains("model"), "tokenizer.json: no \"model\" section");
  const auto section = [&](const char* key) { return root.value(key, nlohmann::json()); };

  Tokenizer tok;
  tok.normalizer_ = Normalizer::from_json(section("normalizer"));
  tok.pre_tokenizer_ = PreTokenizer::from_json(section("pre_tokenizer"));
  tok.model_ = BpeModel::from_json(root["model"]);
  check_decoder(section("decoder"));
  check_post_processor(section("post_processor"));

  const auto added = section("added_tokens");
  BF_CHECK(added.is_null() || added.is_array(), "tokenizer.json: \"added_tokens\" must be an array");
  for (const auto& spec : added) tok.added_tokens_.push_back(AddedToken::from_json(spec));

  // Id tables: model vocab first, then added tokens (which win, as in HF's id_to_token).
  int32_t max_id = -1;
  for (const auto& [token, id] : tok.model_.vocab()) max_id = std::max(max_id, id);
  for (const AddedToken& t : tok.added_tokens_) max_id = std::max(max_id, t.id);
  const size_t size = static_cast<size_t>(max_id + 1);
  tok.strings_.assign(size, "");
  tok.known_.assign(size, 0);
  tok.special_.assign(size, 0);
  for (const auto& [token, id] : tok.model_.vocab()) {
    tok.strings_[id] = token;
    tok.known_[id] = 1;
  }
  std::unordered_set<std::string> special_contents;
  for (const AddedToken& t : tok.added_tokens_) {
    tok.strings_[t.id] = t.content;
    tok.known_[t.id] = 1;
    if (t.special) special_contents.insert(t.content);
  }
  tok.pieces_.resize(size);
  for (size_t id = 0; id < size; ++id) {
    if (!tok.known_[id]) continue;
    // ByteLevel decoder: the token's byte-level chars mapped back to bytes, or, for a token
    // with characters outside the alphabet (added tokens), its own UTF-8 bytes.
    if (!byte_level::decode(tok.strings_[id], tok.pieces_[id])) tok.pieces_[id] = tok.strings_[id];
    tok.special_[id] = special_contents.contains(tok.strings_[id]) ? 1 : 0;
  }

  std::vector<std::string> raw_contents, normalized_contents;
  for (const AddedToken& t : tok.added_tokens_) {
    raw_contents.push_back(t.content);
    normalized_contents.push_back(t.normalized ? tok.normalizer_.apply(utf8::lossy(t.content)) : "");
  }
  tok.raw_matcher_ = AddedTokenMatcher(tok.added_tokens_, raw_contents, false);
  tok.normalized_matcher_ = AddedTokenMatcher(tok.added_tokens_, normalized_contents, true);
  return tok;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& t : added_tokens_) {
    if (t.content == token) return t.id;
  }
  return model_.token_to_id(token);
}

void Tokenizer::check_id(int32_t id) const {
  BF_CHECK(contains(id), "tokenizer: unknown token id ", id, " (vocab_size ", vocab_size(), ")");
}

const std::string& Tokenizer::token_piece(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

const std::string& Tokenizer::token_string(int32_t id) const {
  check_id(id);
  return strings_[id];
}

// Normalized text (no raw added tokens inside) -> words -> BPE ids.
void Tokenizer::encode_text(std::string_view text, std::vector<int32_t>& ids) const {
  std::vector<std::string> words;
  pre_tokenizer_.split(text, words);
  for (const std::string& word : words) model_.encode_word(word, ids);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  std::string valid;
  if (!utf8::is_valid(text)) {
    valid = utf8::lossy(text);
    text = valid;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<AddedTokenMatcher::Segment> segments, inner;
  raw_matcher_.split(text, allow_special, segments);
  for (const auto& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    const std::string normalized = normalizer_.apply(text.substr(seg.begin, seg.end - seg.begin));
    if (normalized_matcher_.empty()) {
      encode_text(normalized, ids);
      continue;
    }
    inner.clear();
    normalized_matcher_.split(normalized, allow_special, inner);
    for (const auto& part : inner) {
      if (part.id >= 0) {
        ids.push_back(part.id);
      } else {
        encode_text(std::string_view(normalized).substr(part.begin, part.end - part.begin), ids);
      }
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const int32_t id : ids) {
    check_id(id);
    if (skip_special_tokens && special_[id]) continue;
    bytes += pieces_[id];
  }
  return utf8::lossy(bytes);
}

}  // namespace bf
