// Unicode normal forms through utf8proc (length-based, so embedded NULs survive).
#include "tokenizer/normalizer.h"

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <utf8proc.h>

#include "core/error.h"

namespace bf {
namespace {

void parse_into(const nlohmann::json& spec, std::vector<Normalizer::Form>& forms) {
  if (spec.is_null()) return;
  BF_CHECK(spec.is_object() && spec.contains("type") && spec["type"].is_string(),
           "tokenizer.json: normalizer must be an object with a \"type\"");
  const std::string type = spec["type"];
  if (type == "NFC") {
    forms.push_back(Normalizer::Form::kNfc);
  } else if (type == "NFD") {
    forms.push_back(Normalizer::Form::kNfd);
  } else if (type == "NFKC") {
    forms.push_back(Normalizer::Form::kNfkc);
  } else if (type == "NFKD") {
    forms.push_back(Normalizer::Form::kNfkd);
  } else if (type == "Sequence") {
    BF_CHECK(spec.contains("normalizers") && spec["normalizers"].is_array(),
             "tokenizer.json: Sequence normalizer needs a \"normalizers\" array");
    for (const auto& item : spec["normalizers"]) parse_into(item, forms);
  } else {
    fail("tokenizer.json: unsupported normalizer type '", type,
         "' (supported: NFC, NFD, NFKC, NFKD, Sequence)");
  }
}

bool is_ascii(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

}  // namespace

Normalizer Normalizer::from_json(const nlohmann::json& spec) {
  Normalizer n;
  parse_into(spec, n.forms_);
  return n;
}

std::string Normalizer::apply(std::string_view text) const {
  // ASCII is invariant under every normal form; most text takes this path.
  if (forms_.empty() || is_ascii(text)) return std::string(text);
  std::string current(text);
  for (const Form form : forms_) {
    int options = UTF8PROC_STABLE;
    switch (form) {
      case Form::kNfc: options |= UTF8PROC_COMPOSE; break;
      case Form::kNfd: options |= UTF8PROC_DECOMPOSE; break;
      case Form::kNfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
      case Form::kNfkd: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t length =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(current.data()),
                     static_cast<utf8proc_ssize_t>(current.size()), &out,
                     static_cast<utf8proc_option_t>(options));
    BF_CHECK(length >= 0, "normalizer: utf8proc failed: ", utf8proc_errmsg(length));
    current.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(length));
    std::free(out);
  }
  return current;
}

}  // namespace bf
