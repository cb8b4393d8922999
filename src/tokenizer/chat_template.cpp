// ChatTemplate: parse with jinja::parse_template, render with jinja::render_template.
// The parsed tree is immutable and shared, so copies of a ChatTemplate are cheap.
#include "tokenizer/chat_template.h"

#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/parser.h"

namespace bf {

ChatTemplate ChatTemplate::parse(std::string source) {
  ChatTemplate t;
  t.body_ = std::make_shared<const jinja::Body>(jinja::parse_template(source));
  t.source_ = std::move(source);
  return t;
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return jinja::render_template(*body_, jinja::from_json(context));
}

std::string ChatTemplate::render(const nlohmann::json& context) const {
  return render(nlohmann::ordered_json::parse(context.dump()));
}

}  // namespace bf
