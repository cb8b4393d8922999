#include "server/api_error.h"

namespace bf::server {

void bad_request(const std::string& message, std::optional<std::string> param) {
  throw ApiError(400, "BadRequestError", message, std::move(param));
}

nlohmann::json error_json(int status, const std::string& type, const std::string& message,
                          const std::optional<std::string>& param) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param ? nlohmann::json(*param) : nlohmann::json()},
            {"code", status}}}};
}

nlohmann::json error_json(const ApiError& error) {
  return error_json(error.status(), error.type(), error.what(), error.param());
}

std::string error_type_for_status(int status) {
  switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 413: return "RequestTooLargeError";
    case 415: return "UnsupportedMediaTypeError";
    case 503: return "ServiceUnavailableError";
    default: break;
  }
  return status >= 500 ? "InternalServerError" : "BadRequestError";
}

std::string dump_json(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace bf::server
