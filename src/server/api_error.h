// ApiError: a failure the HTTP layer reports to the client as OpenAI's error JSON,
//   {"error": {"message", "type", "param", "code"}}
// with the HTTP status it names. Types follow vLLM's (BadRequestError, NotFoundError, ...),
// so clients that switch on them keep working. Anything else a handler throws is turned into
// a 400 (bf::Error: the user's input was bad) or a 500 (a bug) by the server, never a crash.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace bf::server {

class ApiError : public Error {
 public:
  ApiError(int status, std::string type, const std::string& message,
           std::optional<std::string> param = std::nullopt)
      : Error(message), status_(status), type_(std::move(type)), param_(std::move(param)) {}

  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::optional<std::string>& param() const { return param_; }

 private:
  int status_;
  std::string type_;
  std::optional<std::string> param_;
};

// 400 BadRequestError, optionally naming the offending field.
[[noreturn]] void bad_request(const std::string& message,
                              std::optional<std::string> param = std::nullopt);

// The OpenAI error object for a status, type, message and param.
nlohmann::json error_json(int status, const std::string& type, const std::string& message,
                          const std::optional<std::string>& param = std::nullopt);
nlohmann::json error_json(const ApiError& error);

// The error type name vLLM uses for an HTTP status (400 -> "BadRequestError", ...).
std::string error_type_for_status(int status);

// Serialises JSON for the wire: invalid UTF-8 (from a byte-level token) becomes U+FFFD
// instead of an exception.
std::string dump_json(const nlohmann::json& value);

}  // namespace bf::server
