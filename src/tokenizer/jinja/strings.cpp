// Python string semantics for the chat-template interpreter (see strings.h).
#include "tokenizer/jinja/strings.h"

#include <algorithm>
#include <cctype>

namespace bf::jinja {

std::string py_strip(const std::string& s, const std::string& chars, bool left, bool right) {
  size_t b = 0, e = s.size();
  // Multi-byte characters in `chars` are matched byte-wise; fine for the ASCII sets used.
  if (left) while (b < e && chars.find(s[b]) != std::string::npos) ++b;
  if (right) while (e > b && chars.find(s[e - 1]) != std::string::npos) --e;
  return s.substr(b, e - b);
}

std::vector<std::string> py_split(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right) {
  if (sep.empty()) template_error(0, "empty separator");
  std::vector<std::string> out;
  if (!from_right) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      size_t at = s.find(sep, pos);
      if (at == std::string::npos) break;
      out.push_back(s.substr(pos, at - pos));
      pos = at + sep.size();
    }
    out.push_back(s.substr(pos));
    return out;
  }
  size_t end = s.size();
  while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
    if (end < sep.size()) break;
    size_t at = s.rfind(sep, end - sep.size());
    if (at == std::string::npos) break;
    out.push_back(s.substr(at + sep.size(), end - at - sep.size()));
    end = at;
  }
  out.push_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_split_whitespace(const std::string& s, int64_t maxsplit, bool from_right) {
  auto is_ws = [](char c) { return std::string_view(kPyWhitespace).find(c) != std::string_view::npos; };
  std::vector<std::string> out;
  if (!from_right) {
    size_t i = 0;
    while (true) {
      while (i < s.size() && is_ws(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        out.push_back(py_strip(s.substr(i), kPyWhitespace, false, true));
        break;
      }
      size_t j = i;
      while (j < s.size() && !is_ws(s[j])) ++j;
      out.push_back(s.substr(i, j - i));
      i = j;
    }
    return out;
  }
  size_t e = s.size();
  while (true) {
    while (e > 0 && is_ws(s[e - 1])) --e;
    if (e == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      out.push_back(py_strip(s.substr(0, e), kPyWhitespace, true, false));
      break;
    }
    size_t b = e;
    while (b > 0 && !is_ws(s[b - 1])) --b;
    out.push_back(s.substr(b, e - b));
    e = b;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_splitlines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c' || c == '\x1c' || c == '\x1d' || c == '\x1e') {
      out.push_back(s.substr(start, i - start));
      if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old_text, const std::string& new_text, int64_t count) {
  std::string out;
  if (old_text.empty()) {
    // Python inserts `new` between every character (and at both ends).
    std::vector<std::string> cps = split_code_points(s);
    int64_t done = 0;
    for (const std::string& cp : cps) {
      if (count < 0 || done < count) out += new_text, ++done;
      out += cp;
    }
    if (count < 0 || done < count) out += new_text;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t at = s.find(old_text, pos);
    if (at == std::string::npos) break;
    out += s.substr(pos, at - pos) + new_text;
    pos = at + old_text.size();
    ++done;
  }
  return out + s.substr(pos);
}

int64_t py_count(const std::string& s, const std::string& sub) {
  if (sub.empty()) return static_cast<int64_t>(split_code_points(s).size()) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
  return n;
}

std::string str_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string str_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = false;
    }
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::string out = str_lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string jinja_title(const std::string& s) {
  // Jinja: re.split(r"([-\s({\[<]+)") then item[0].upper() + item[1:].lower() per item.
  auto is_sep = [](char c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || std::isspace(static_cast<unsigned char>(c));
  };
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    bool sep = is_sep(s[i]);
    while (j < s.size() && is_sep(s[j]) == sep) ++j;
    std::string item = s.substr(i, j - i);
    if (!sep) item = str_upper(item.substr(0, 1)) + str_lower(item.substr(1));
    out += item;
    i = j;
  }
  return out;
}

std::string py_center(const std::string& s, int64_t width) {
  int64_t len = static_cast<int64_t>(split_code_points(s).size());
  if (width <= len) return s;
  int64_t pad = width - len;
  int64_t left = pad / 2 + (pad & width & 1);  // CPython's rounding of the odd space
  return std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(pad - left), ' ');
}

std::string py_format(const std::string& fmt, const CallArgs& args, int line) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '{' && i + 1 < fmt.size() && fmt[i + 1] == '{') { out += '{'; ++i; continue; }
    if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') { out += '}'; ++i; continue; }
    if (c != '{') { out += c; continue; }
    size_t close = fmt.find('}', i);
    if (close == std::string::npos) template_error(line, "Single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, close - i - 1);
    if (field.find(':') != std::string::npos || field.find('!') != std::string::npos)
      template_error(line, "format specs are not supported in str.format");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < args.positional.size() ? &args.positional[auto_index] : nullptr;
      ++auto_index;
    } else if (std::all_of(field.begin(), field.end(), ::isdigit)) {
      size_t k = std::stoul(field);
      v = k < args.positional.size() ? &args.positional[k] : nullptr;
    } else {
      for (const auto& [k, x] : args.keyword)
        if (k == field) v = &x;
    }
    if (!v) template_error(line, "format field '" + field + "' has no argument");
    out += to_str(*v);
    i = close;
  }
  return out;
}

std::string percent_format(const std::string& fmt, const Array& args, int line) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') { out += fmt[i]; continue; }
    if (++i >= fmt.size()) template_error(line, "incomplete format");
    char spec = fmt[i];
    if (spec == '%') { out += '%'; continue; }
    if (next >= args.size()) template_error(line, "not enough arguments for format string");
    const Value& v = args[next++];
    if (spec == 's') out += to_str(v);
    else if (spec == 'r') out += to_repr(v);
    else if (spec == 'd' || spec == 'i') {
      if (!v.is_number()) template_error(line, "%d format: a real number is required");
      out += std::to_string(v.is_float() ? static_cast<int64_t>(v.as_double()) : v.is_bool() ? int64_t{v.as_bool()} : v.as_int());
    } else {
      template_error(line, std::string("unsupported format character '") + spec + "'");
    }
  }
  if (next < args.size()) template_error(line, "not all arguments converted during string formatting");
  return out;
}

}  // namespace bf::jinja
