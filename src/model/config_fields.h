// Typed reads of config.json fields with messages that name the file and the field, shared
// by the target and drafter config parsers.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

namespace bf {

// An integer in [0, 2^31); `fallback` < 0 means the field is required. `file` prefixes errors.
int32_t config_int(const nlohmann::json& object, const char* key, int64_t fallback,
                   const char* file);
// A number; absent or null gives `fallback`.
double config_number(const nlohmann::json& object, const char* key, double fallback,
                     const char* file);
// true or false; absent or null gives `fallback`.
bool config_bool(const nlohmann::json& object, const char* key, bool fallback, const char* file);

}  // namespace bf
