// Chat prompts: the model's chat template, found as Hugging Face finds it (chat_template.jinja
// in the model directory, else tokenizer_config.json "chat_template": a string, or a list of
// {name, template} from which "default" is taken), or given with --chat-template (a file or
// the template text, as vLLM's flag). Rendering checks the messages first (roles, text-only
// content) so the template only ever sees well-formed input, then applies
// add_generation_prompt / continue_final_message exactly as transformers does.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "tokenizer/chat_template.h"

namespace bf::server {

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  const nlohmann::ordered_json* tools = nullptr;   // passed to the template when set
  const nlohmann::ordered_json* kwargs = nullptr;  // chat_template_kwargs: extra variables
};

class ChatPrompt {
 public:
  // nullopt when the model has no template and none was given. `template_override` is a
  // path to a file, or (when no such file exists) the template text itself.
  static std::optional<ChatPrompt> load(const std::filesystem::path& model_dir,
                                        const std::string& template_override);
  // From template text plus tokenizer_config.json's special token strings (may be null).
  ChatPrompt(std::string source, const nlohmann::json& tokenizer_config);

  // Renders `messages` (a JSON array, checked here: ApiError 400 on a bad message or a
  // template error such as raise_exception).
  std::string render(const nlohmann::ordered_json& messages, const ChatRenderOptions& options) const;

  // True when the template mentions <think>: reasoning models (Qwen3, Qwen3.5).
  bool mentions_think() const;
  const std::string& source() const { return template_.source(); }

 private:
  ChatTemplate template_;
  nlohmann::ordered_json special_tokens_;  // bos_token, eos_token, pad_token, unk_token
  bool openai_content_format_ = false;     // the template iterates over content parts itself
};

// The messages as the template sees them: roles checked, text parts validated (joined into
// one string unless the template handles lists), tool-call arguments given as JSON strings
// parsed into objects (as vLLM does). Throws ApiError 400.
nlohmann::ordered_json normalize_messages(const nlohmann::ordered_json& messages,
                                          bool openai_content_format);

// True when the rendered prompt ends inside an open <think> block: the model's output then
// starts with reasoning (Qwen3.5's generation prompt ends in "<think>\n").
bool prompt_opens_reasoning(const std::string& prompt);

}  // namespace bf::server
