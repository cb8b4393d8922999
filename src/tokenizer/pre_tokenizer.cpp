// Mirrors HF's PreTokenizedString: each step rewrites every current piece into new pieces;
// Split with Isolated keeps matches and the gaps between them as separate pieces, dropping
// empty ones. The ByteLevel step maps bytes to the GPT-2 alphabet last, per piece.
#include "tokenizer/pre_tokenizer.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace bf {
namespace {

// GPT-2's pattern, as HF's ByteLevel pre-tokenizer uses it when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A literal Split pattern as a regex: escape ASCII punctuation, keep the rest.
std::string escape_literal(std::string_view literal) {
  std::string out;
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

void PreTokenizer::parse_into(const nlohmann::json& spec, std::vector<Step>& steps) {
  if (spec.is_null()) return;
  BF_CHECK(spec.is_object() && spec.contains("type") && spec["type"].is_string(),
           "tokenizer.json: pre_tokenizer must be an object with a \"type\"");
  const std::string type = spec["type"];
  if (type == "Sequence") {
    BF_CHECK(spec.contains("pretokenizers") && spec["pretokenizers"].is_array(),
             "tokenizer.json: Sequence pre_tokenizer needs a \"pretokenizers\" array");
    for (const auto& item : spec["pretokenizers"]) parse_into(item, steps);
  } else if (type == "Split") {
    Step step{.kind = Step::kSplit};
    const auto& pattern = spec.value("pattern", nlohmann::json());
    if (pattern.contains("Regex")) {
      step.regex.emplace_back(pattern["Regex"].get<std::string>());
    } else if (pattern.contains("String")) {
      step.regex.emplace_back(escape_literal(pattern["String"].get<std::string>()));
    } else {
      fail("tokenizer.json: Split pre_tokenizer needs pattern {\"Regex\": ...} or {\"String\": ...}");
    }
    const std::string behavior = spec.value("behavior", "");
    BF_CHECK(behavior == "Isolated" || behavior == "Removed",
             "tokenizer.json: unsupported Split behavior '", behavior,
             "' (supported: Isolated, Removed)");
    step.remove_matches = behavior == "Removed";
    step.invert = spec.value("invert", false);
    steps.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    steps.push_back(Step{.kind = Step::kByteLevel,
                         .add_prefix_space = spec.value("add_prefix_space", true),
                         .use_regex = spec.value("use_regex", true)});
  } else {
    fail("tokenizer.json: unsupported pre_tokenizer type '", type,
         "' (supported: Split, ByteLevel, Sequence)");
  }
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& spec) {
  PreTokenizer p;
  parse_into(spec, p.steps_);
  for (const Step& step : p.steps_) {
    if (step.kind == Step::kByteLevel && step.use_regex && p.gpt2_regex_.empty()) {
      p.gpt2_regex_.emplace_back(kGpt2Pattern);
    }
  }
  return p;
}

void PreTokenizer::apply_split(const Regex& regex, bool remove_matches, bool invert,
                               std::string_view piece, std::vector<std::string>& out) const {
  std::vector<Regex::Match> matches;
  regex.find_all(piece, matches);
  // Each region is (begin, end, is_match); `invert` swaps which regions count as matches.
  const auto emit = [&](size_t begin, size_t end, bool is_match) {
    if (end <= begin) return;
    if (remove_matches && is_match != invert) return;
    out.emplace_back(piece.substr(begin, end - begin));
  };
  size_t prev = 0;
  for (const Regex::Match& m : matches) {
    emit(prev, m.begin, false);
    emit(m.begin, m.end, true);
    prev = m.end;
  }
  emit(prev, piece.size(), false);
}

void PreTokenizer::split(std::string_view text, std::vector<std::string>& words) const {
  if (text.empty()) return;
  std::vector<std::string> pieces{std::string(text)};
  std::vector<std::string> next;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string& piece : pieces) {
      if (step.kind == Step::kSplit) {
        apply_split(step.regex.front(), step.remove_matches, step.invert, piece, next);
        continue;
      }
      if (step.add_prefix_space && (piece.empty() || piece.front() != ' ')) piece.insert(0, " ");
      if (step.use_regex) {
        const size_t first = next.size();
        apply_split(gpt2_regex_.front(), false, false, piece, next);
        for (size_t i = first; i < next.size(); ++i) next[i] = byte_level::encode(next[i]);
      } else if (!piece.empty()) {
        next.push_back(byte_level::encode(piece));
      }
    }
    pieces.swap(next);
  }
  for (std::string& piece : pieces) {
    if (!piece.empty()) words.push_back(std::move(piece));
  }
}

}  // namespace bf
