#include "model/config_fields.h"

#include "core/error.h"

namespace bf {

int32_t config_int(const nlohmann::json& object, const char* key, int64_t fallback,
                   const char* file) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) {
    BF_CHECK(fallback >= 0, file, ": missing required field '", key, "'");
    return static_cast<int32_t>(fallback);
  }
  BF_CHECK(it->is_number_integer(), file, ": field '", key, "' must be an integer, got ",
           it->dump());
  const int64_t value = it->get<int64_t>();
  BF_CHECK(value >= 0 && value < (int64_t{1} << 31), file, ": field '", key,
           "' out of range: ", value);
  return static_cast<int32_t>(value);
}

double config_number(const nlohmann::json& object, const char* key, double fallback,
                     const char* file) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  BF_CHECK(it->is_number(), file, ": field '", key, "' must be a number, got ", it->dump());
  return it->get<double>();
}

bool config_bool(const nlohmann::json& object, const char* key, bool fallback, const char* file) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  BF_CHECK(it->is_boolean(), file, ": field '", key, "' must be true or false, got ",
           it->dump());
  return it->get<bool>();
}

}  // namespace bf
