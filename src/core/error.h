// Errors: every failure the user can cause (bad file, bad config, bad request) is a
// bf::Error with a message that names what is wrong; callers at the edge (CLI, HTTP)
// turn it into a message and an exit code or an OpenAI error JSON.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace bf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Concatenates any streamable arguments into one string.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(str_cat(args...));
}

}  // namespace bf

// Checks a condition that user input can violate; throws bf::Error with the message.
#define BF_CHECK(cond, ...)                 \
  do {                                      \
    if (!(cond)) ::bf::fail(__VA_ARGS__);   \
  } while (0)
