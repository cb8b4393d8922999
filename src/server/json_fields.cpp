#include "server/json_fields.h"

#include <cmath>
#include <limits>

#include "server/api_error.h"

namespace bf::server {

nlohmann::json parse_json_body(std::string_view body) {
  if (body.empty()) bad_request("the request body is empty; expected a JSON object");
  auto limit_depth = [](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if (depth > max_json_depth &&
        (event == nlohmann::json::parse_event_t::object_start ||
         event == nlohmann::json::parse_event_t::array_start))
      bad_request("the request JSON is nested more than " + std::to_string(max_json_depth) +
                  " levels deep");
    return true;
  };
  try {
    return nlohmann::json::parse(body.begin(), body.end(), limit_depth);
  } catch (const nlohmann::json::exception& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, ...".
    std::string what = e.what();
    size_t bracket = what.find("] ");
    bad_request("invalid JSON in the request body: " +
                (bracket == std::string::npos ? what : what.substr(bracket + 2)));
  }
}

FieldReader::FieldReader(const nlohmann::json& object) : object_(object) {
  if (!object.is_object())
    bad_request("the request body must be a JSON object, got " + json_type_name(object));
}

const nlohmann::json* FieldReader::get(const std::string& name) {
  read_.insert(name);
  auto it = object_.find(name);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<int64_t> FieldReader::get_int(const std::string& name, int64_t min, int64_t max) {
  const nlohmann::json* value = get(name);
  if (!value) return std::nullopt;
  int64_t result = 0;
  if (value->is_number_unsigned()) {
    uint64_t u = value->get<uint64_t>();
    if (u > static_cast<uint64_t>(max))
      bad_request(name + " must be at most " + std::to_string(max) + ", got " + value->dump(),
                  name);
    result = static_cast<int64_t>(u);
  } else if (value->is_number_integer()) {
    result = value->get<int64_t>();
  } else if (value->is_number_float()) {
    // Pydantic (vLLM) accepts 16.0 for an integer field, not 16.5.
    double d = value->get<double>();
    if (!(std::floor(d) == d && std::fabs(d) < 9.0e15))
      bad_request(name + " must be an integer, got " + value->dump(), name);
    result = static_cast<int64_t>(d);
  } else {
    bad_request(name + " must be an integer, got " + json_type_name(*value), name);
  }
  if (result < min || result > max)
    bad_request(name + " must be in [" + std::to_string(min) + ", " + std::to_string(max) +
                    "], got " + std::to_string(result),
                name);
  return result;
}

std::optional<int32_t> FieldReader::get_int32(const std::string& name) {
  auto v = get_int(name, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max());
  if (!v) return std::nullopt;
  return static_cast<int32_t>(*v);
}

std::optional<float> FieldReader::get_float(const std::string& name) {
  const nlohmann::json* value = get(name);
  if (!value) return std::nullopt;
  if (!value->is_number()) bad_request(name + " must be a number, got " + json_type_name(*value), name);
  double d = value->get<double>();
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max())
    bad_request(name + " must be a finite number, got " + value->dump(), name);
  return static_cast<float>(d);
}

std::optional<bool> FieldReader::get_bool(const std::string& name) {
  const nlohmann::json* value = get(name);
  if (!value) return std::nullopt;
  if (!value->is_boolean())
    bad_request(name + " must be a boolean, got " + json_type_name(*value), name);
  return value->get<bool>();
}

std::optional<std::string> FieldReader::get_string(const std::string& name) {
  const nlohmann::json* value = get(name);
  if (!value) return std::nullopt;
  if (!value->is_string())
    bad_request(name + " must be a string, got " + json_type_name(*value), name);
  return value->get<std::string>();
}

const nlohmann::json* FieldReader::get_object(const std::string& name) {
  const nlohmann::json* value = get(name);
  if (value && !value->is_object())
    bad_request(name + " must be an object, got " + json_type_name(*value), name);
  return value;
}

std::vector<std::string> FieldReader::unread_fields() const {
  std::vector<std::string> unread;
  for (auto it = object_.begin(); it != object_.end(); ++it)
    if (!read_.count(it.key())) unread.push_back(it.key());
  return unread;
}

std::string json_type_name(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a number";
    default: break;
  }
  return "an unsupported value";
}

}  // namespace bf::server
