// Reading a request body: JSON parsing with a nesting limit, and typed access to the fields
// of an object. A field that is absent or null is "not given" (OpenAI clients send null for
// unset options); a field of the wrong type is a 400 naming it. Every field a handler reads is
// remembered, so the ones nobody read can be logged as ignored (vLLM accepts unknown fields
// and warns, it does not reject them).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace bf::server {

// Deepest object/array nesting a request may have: deeper bodies are rejected while parsing,
// before anything recursive (templates, dumps) can walk them.
inline constexpr int max_json_depth = 64;

// Parses a body into JSON; malformed or too deeply nested input is a 400.
nlohmann::json parse_json_body(std::string_view body);

class FieldReader {
 public:
  // `object` must outlive the reader; a non-object body is a 400.
  explicit FieldReader(const nlohmann::json& object);

  // The raw field, or nullptr when absent or null.
  const nlohmann::json* get(const std::string& name);
  bool has(const std::string& name) { return get(name) != nullptr; }

  std::optional<int64_t> get_int(const std::string& name, int64_t min, int64_t max);
  std::optional<int32_t> get_int32(const std::string& name);
  // A finite number that fits a float.
  std::optional<float> get_float(const std::string& name);
  std::optional<bool> get_bool(const std::string& name);
  std::optional<std::string> get_string(const std::string& name);
  // An object (dict) field.
  const nlohmann::json* get_object(const std::string& name);

  // Fields present in the body that no get*() asked for.
  std::vector<std::string> unread_fields() const;

 private:
  const nlohmann::json& object_;
  std::set<std::string, std::less<>> read_;
};

// A JSON value's type as an error message names it ("a string", "an integer", ...).
std::string json_type_name(const nlohmann::json& value);

}  // namespace bf::server
