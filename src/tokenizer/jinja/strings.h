// Python str operations on UTF-8 strings, byte-exact with CPython for ASCII text.
// Case mapping is ASCII-only: chat templates only case-map keywords and type names.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace bf::jinja {

inline constexpr const char* kPyWhitespace = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f";

std::string py_strip(const std::string& s, const std::string& chars, bool left, bool right);
std::vector<std::string> py_split(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right);
std::vector<std::string> py_split_whitespace(const std::string& s, int64_t maxsplit, bool from_right);
std::vector<std::string> py_splitlines(const std::string& s);
std::string py_replace(const std::string& s, const std::string& old_text, const std::string& new_text, int64_t count);
int64_t py_count(const std::string& s, const std::string& sub);
std::string str_upper(std::string s);
std::string str_lower(std::string s);
std::string py_title(const std::string& s);       // str.title()
std::string py_capitalize(const std::string& s);  // str.capitalize()
std::string jinja_title(const std::string& s);    // the |title filter (splits on -, space, brackets)
std::string py_center(const std::string& s, int64_t width);
std::string py_format(const std::string& fmt, const CallArgs& args, int line);     // str.format
std::string percent_format(const std::string& fmt, const Array& args, int line);  // fmt % args

}  // namespace bf::jinja
