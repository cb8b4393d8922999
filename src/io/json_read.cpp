#include "io/json_read.h"

#include <unordered_set>

#include "core/error.h"

namespace bf {

nlohmann::json parse_json_object(std::string_view text, const std::string& where) {
  std::unordered_set<std::string> top_level_keys;
  std::string duplicate;
  // Depth 1 is a key of the top-level object (the callback sees depth before descent).
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        parsed.is_string() && !top_level_keys.insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text.begin(), text.end(), on_event);
  } catch (const nlohmann::json::exception& error) {
    fail(where, " is not valid JSON: ", error.what());
  }
  BF_CHECK(root.is_object(), where, " must be a JSON object, found ", json_type_name(root));
  BF_CHECK(duplicate.empty(), where, " has the key \"", duplicate, "\" more than once");
  return root;
}

std::string json_type_name(const nlohmann::json& value) {
  if (value.is_number_unsigned() || value.is_number_integer()) return "integer";
  if (value.is_number_float()) return "float";
  return value.type_name();  // "null", "object", "array", "string", "boolean", "discarded"
}

}  // namespace bf
