#include "server/chat_prompt.h"

#include <fstream>
#include <sstream>

#include "core/log.h"
#include "server/api_error.h"
#include "server/json_fields.h"

namespace bf::server {
namespace {

std::optional<std::string> read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// tokenizer_config.json "chat_template": a string, or [{name, template}, ...].
std::optional<std::string> template_from_config(const nlohmann::json& config) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const nlohmann::json& entry : *it)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return entry["template"].get<std::string>();
  }
  fail("tokenizer_config.json: chat_template must be a string or a list with a \"default\" entry");
}

// A special token in tokenizer_config.json: a string or an AddedToken dict {content: ...}.
nlohmann::ordered_json token_string(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return nullptr;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return nullptr;
}

// Text of a content-parts list (only text parts are allowed).
std::string join_text_parts(const nlohmann::ordered_json& parts) {
  std::string text;
  bool first = true;
  for (const auto& part : parts) {
    if (!first) text += "\n";
    text += part["text"].get<std::string>();
    first = false;
  }
  return text;
}

}  // namespace

std::optional<ChatPrompt> ChatPrompt::load(const std::filesystem::path& model_dir,
                                           const std::string& template_override) {
  nlohmann::json config = nlohmann::json::object();
  if (auto text = read_text_file(model_dir / "tokenizer_config.json")) {
    try {
      config = nlohmann::json::parse(*text);
    } catch (const nlohmann::json::exception& e) {
      fail("tokenizer_config.json: ", e.what());
    }
  }
  std::optional<std::string> source;
  if (!template_override.empty()) {
    source = read_text_file(template_override);
    if (!source) {
      BF_CHECK(template_override.find("{%") != std::string::npos ||
                   template_override.find("{{") != std::string::npos,
               "--chat-template: '", template_override,
               "' is neither a readable file nor a Jinja template");
      source = template_override;
    }
  } else if (auto file = read_text_file(model_dir / "chat_template.jinja")) {
    source = file;
  } else {
    source = template_from_config(config);
  }
  if (!source) return std::nullopt;
  return ChatPrompt(std::move(*source), config);
}

ChatPrompt::ChatPrompt(std::string source, const nlohmann::json& config)
    : template_(ChatTemplate::parse(std::move(source))) {
  special_tokens_ = nlohmann::ordered_json::object();
  for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"})
    special_tokens_[key] = token_string(config, key);
  // vLLM's content-format detection, simplified: a template that loops over a message's
  // content takes OpenAI's list of parts; others get the parts joined into one string.
  const std::string& s = template_.source();
  openai_content_format_ = s.find("in content") != std::string::npos ||
                           s.find("in message.content") != std::string::npos ||
                           s.find("in message['content']") != std::string::npos ||
                           s.find("in message[\"content\"]") != std::string::npos;
}

bool ChatPrompt::mentions_think() const {
  return template_.source().find("<think>") != std::string::npos;
}

nlohmann::ordered_json normalize_messages(const nlohmann::ordered_json& messages,
                                          bool openai_content_format) {
  if (!messages.is_array()) bad_request("messages must be a list of message objects", "messages");
  if (messages.empty()) bad_request("messages must not be empty", "messages");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& message = messages[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!message.is_object()) bad_request(where + " must be an object", "messages");
    auto role = message.find("role");
    if (role == message.end() || !role->is_string())
      bad_request(where + ".role must be a string", "messages");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer")
      bad_request(where + ".role must be one of system, user, assistant, tool, developer; got '" +
                  r + "'", "messages");
    nlohmann::ordered_json m = message;
    auto content = message.find("content");
    if (content == message.end() || content->is_null()) {
      if (r != "assistant") bad_request(where + ".content is required", "messages");
      m["content"] = nullptr;
    } else if (content->is_array()) {
      for (const auto& part : *content) {
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          bad_request(where + ".content parts must be objects with a type", "messages");
        if (part["type"] != "text")
          bad_request(where + ".content: only text parts are supported, got type '" +
                      part["type"].get<std::string>() + "'", "messages");
        if (!part.contains("text") || !part["text"].is_string())
          bad_request(where + ".content: a text part needs a string 'text'", "messages");
      }
      m["content"] = openai_content_format ? *content : nlohmann::ordered_json(join_text_parts(*content));
    } else if (!content->is_string()) {
      bad_request(where + ".content must be a string or a list of content parts, got " +
                  std::string("a ") + content->type_name(), "messages");
    }
    if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
      if (!calls->is_array()) bad_request(where + ".tool_calls must be a list", "messages");
      for (auto& call : *calls) {
        if (!call.is_object()) bad_request(where + ".tool_calls entries must be objects", "messages");
        auto fn = call.find("function");
        if (fn == call.end() || !fn->is_object())
          bad_request(where + ".tool_calls entries need a function object", "messages");
        auto args = fn->find("arguments");
        if (args != fn->end() && args->is_string()) {
          try {
            *args = nlohmann::ordered_json::parse(args->get<std::string>());
          } catch (const nlohmann::json::exception&) {
            // Left as the string: the template prints it as given.
          }
        }
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

std::string ChatPrompt::render(const nlohmann::ordered_json& messages,
                               const ChatRenderOptions& options) const {
  if (options.add_generation_prompt && options.continue_final_message)
    bad_request("Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                "continue_final_message");
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  if (options.kwargs)
    for (auto it = options.kwargs->begin(); it != options.kwargs->end(); ++it)
      context[it.key()] = it.value();
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it)
    if (!context.contains(it.key())) context[it.key()] = it.value();
  nlohmann::ordered_json normalized = normalize_messages(messages, openai_content_format_);
  context["messages"] = normalized;
  context["add_generation_prompt"] = options.add_generation_prompt;
  if (options.tools) context["tools"] = *options.tools;
  std::string rendered;
  try {
    rendered = template_.render(context);
  } catch (const Error& e) {
    bad_request(std::string("chat template error: ") + e.what(), "messages");
  }
  if (!options.continue_final_message) return rendered;
  // transformers' continue_final_message: cut the render right after the final message's
  // content, so the model continues it.
  const auto& last = normalized.back();
  std::string final_text;
  if (last["content"].is_string()) final_text = last["content"].get<std::string>();
  else if (last["content"].is_array() && !last["content"].empty())
    final_text = last["content"].back().value("text", "");
  auto strip = [](std::string_view s, bool left, bool right) {
    const char* ws = " \t\n\r\f\v";
    size_t b = left ? s.find_first_not_of(ws) : 0;
    if (b == std::string_view::npos) return std::string();
    size_t e = right ? s.find_last_not_of(ws) + 1 : s.size();
    return std::string(s.substr(b, e - b));
  };
  std::string stripped = strip(final_text, true, true);
  size_t at = stripped.empty() ? std::string::npos : rendered.rfind(stripped);
  if (at == std::string::npos)
    bad_request("continue_final_message is set but the final message does not appear in the chat "
                "after applying the chat template", "continue_final_message");
  std::string lstripped = strip(final_text, true, false);
  if (rendered.compare(at, lstripped.size(), lstripped) == 0)
    return rendered.substr(0, at + lstripped.size());
  return rendered.substr(0, at + stripped.size());
}

bool prompt_opens_reasoning(const std::string& prompt) {
  size_t open = prompt.rfind("<think>");
  if (open == std::string::npos) return false;
  size_t close = prompt.rfind("</think>");
  return close == std::string::npos || close < open;
}

}  // namespace bf::server
