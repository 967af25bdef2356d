// The errors the server answers with: an HTTP status and OpenAI's error object
// {"error": {"message", "type", "param", "code"}}, thrown by request parsing and the endpoints, turned into the
// response in one place (http_server.cpp).
#pragma once
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace ll::serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string code = "")
      : std::runtime_error(message), status_(status), param_(std::move(param)), code_(std::move(code)) {}
  int status() const { return status_; }
  nlohmann::json body() const;

 private:
  int status_;
  std::string param_, code_;
};

// OpenAI's type for a status: invalid_request_error (4xx), authentication_error (401), server_error (5xx), …
const char* error_type_for_status(int status);
// {"error": {...}}; param and code are null when empty.
nlohmann::json error_body(int status, const std::string& message, const std::string& param = "",
                          const std::string& code = "");

}  // namespace ll::serve
