// Parsing untrusted JSON files (checkpoint headers, index files) into nlohmann::json with
// every failure turned into a bf::Error that names the file. nlohmann's own exceptions
// never escape from here.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace bf {

// Parses `text` as one JSON object. `where` names the source in errors ("file X header").
// Rejects invalid JSON, a non-object top level, and duplicate top-level keys (nlohmann
// would silently keep the last one, hiding a tensor).
nlohmann::json parse_json_object(std::string_view text, const std::string& where);

// The JSON type of `value` in words, for error messages ("string", "array", ...).
std::string json_type_name(const nlohmann::json& value);

}  // namespace bf
