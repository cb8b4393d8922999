// Chat templates: renders a Hugging Face chat template (a Jinja2 text) with the context
// apply_chat_template passes (messages, tools, add_generation_prompt, bos_token, ...),
// byte-exact with transformers. The Jinja subset lives in jinja/; this is its front door.
// Errors (syntax, undefined operations, raise_exception) are bf::Error; template errors
// carry the template line, raise_exception carries exactly the template's message.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace bf {

namespace jinja {
struct Stmt;
}

class ChatTemplate {
 public:
  // Parses once; render() can then run many times, from several threads.
  static ChatTemplate parse(std::string source);

  // `context` keys become template variables; an absent key is Jinja's Undefined.
  // Pass an ordered_json to keep the caller's key order (tojson prints keys in that order,
  // as Python dicts do); a plain json has its keys sorted.
  std::string render(const nlohmann::ordered_json& context) const;
  std::string render(const nlohmann::json& context) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Stmt>>> body_;
};

}  // namespace bf
