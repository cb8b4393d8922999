// Logging to stderr with a level and a timestamp. Level from BLOCKFLASH_LOG_LEVEL
// (debug|info|warn|error, default info). Thread-safe: one line per call.
#pragma once

#include <string>

#include "core/error.h"

namespace bf {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void log_line(LogLevel level, const std::string& message);
bool log_enabled(LogLevel level);
void set_log_level(LogLevel level);

template <typename... Args>
void log_debug(const Args&... args) {
  if (log_enabled(LogLevel::kDebug)) log_line(LogLevel::kDebug, str_cat(args...));
}
template <typename... Args>
void log_info(const Args&... args) {
  if (log_enabled(LogLevel::kInfo)) log_line(LogLevel::kInfo, str_cat(args...));
}
template <typename... Args>
void log_warn(const Args&... args) {
  if (log_enabled(LogLevel::kWarn)) log_line(LogLevel::kWarn, str_cat(args...));
}
template <typename... Args>
void log_error(const Args&... args) {
  log_line(LogLevel::kError, str_cat(args...));
}

}  // namespace bf
