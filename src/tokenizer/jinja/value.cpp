// Python semantics for Jinja values: truthiness, equality, ordering, str(), repr() and
// json.dumps. These decide the exact bytes of rendered prompts, so they mirror CPython
// (float repr, dict repr quoting, json separators) rather than C++ defaults.
#include "tokenizer/jinja/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace bf::jinja {

void template_error(int line, const std::string& message) {
  if (line > 0) fail("chat template line ", line, ": ", message);
  fail("chat template: ", message);
}

double Value::as_double() const {
  if (is_float()) return std::get<double>(data);
  if (is_int()) return static_cast<double>(as_int());
  if (is_bool()) return as_bool() ? 1.0 : 0.0;
  return 0.0;
}

const Value* Value::find(const std::string& key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : as_object())
    if (k == key) return &v;
  return nullptr;
}

std::string Value::type_name() const {
  switch (data.index()) {
    case 0: return "Undefined";
    case 1: return "NoneType";
    case 2: return "bool";
    case 3: return "int";
    case 4: return "float";
    case 5: return "str";
    case 6: return is_tuple ? "tuple" : "list";
    case 7: return "dict";
    case 8: return "function";
    default: return "Namespace";
  }
}

Value* Namespace::find(const std::string& key) {
  for (auto& [k, v] : attrs)
    if (k == key) return &v;
  return nullptr;
}

const Value* CallArgs::get(size_t index, const char* name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

bool truthy(const Value& v) {
  switch (v.data.index()) {
    case 0: case 1: return false;
    case 2: return v.as_bool();
    case 3: return v.as_int() != 0;
    case 4: return v.as_double() != 0.0;
    case 5: return !v.as_string().empty();
    case 6: return !v.as_array().empty();
    case 7: return !v.as_object().empty();
    default: return true;
  }
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() == b.as_double();
    auto as_i = [](const Value& v) { return v.is_bool() ? int64_t{v.as_bool()} : v.as_int(); };
    return as_i(a) == as_i(b);
  }
  if (a.data.index() != b.data.index()) return false;
  if (a.is_undefined() || a.is_none()) return true;
  if (a.is_string()) return a.as_string() == b.as_string();
  if (a.is_array()) {
    const Array &x = a.as_array(), &y = b.as_array();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equal(x[i], y[i])) return false;
    return true;
  }
  if (a.is_object()) {
    const Object &x = a.as_object(), &y = b.as_object();
    if (x.size() != y.size()) return false;
    for (const auto& [k, v] : x) {
      const Value* w = b.find(k);
      if (!w || !equal(v, *w)) return false;
    }
    return true;
  }
  if (a.is_callable()) return &a.as_callable() == &b.as_callable();
  return &a.as_namespace() == &b.as_namespace();
}

int compare(const Value& a, const Value& b, int line) {
  if (a.is_number() && b.is_number()) {
    double x = a.as_double(), y = b.as_double();
    if (a.is_int() && b.is_int()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.as_string().compare(b.as_string());  // UTF-8 byte order = code point order
    return c < 0 ? -1 : c > 0;
  }
  if (a.is_array() && b.is_array()) {
    const Array &x = a.as_array(), &y = b.as_array();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equal(x[i], y[i])) continue;
      return compare(x[i], y[i], line);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  template_error(line, "'<' not supported between instances of '" + a.type_name() + "' and '" +
                           b.type_name() + "'");
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's repr layout: scientific when the decimal
  // exponent is < -4 or >= 16, otherwise positional with at least one fractional digit.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  size_t e_pos = sci.find('e');
  std::string mantissa = sci.substr(0, e_pos);
  int exponent = std::stoi(sci.substr(e_pos + 1));
  bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp_buf[16];
    std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp_buf;
  }
  if (exponent < 0) return out + "0." + std::string(-exponent - 1, '0') + digits;
  if (static_cast<int>(digits.size()) <= exponent + 1)
    return out + digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
  return out + digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
}

static std::string repr_string(const std::string& s) {
  // Python picks single quotes unless the string has ' and no ".
  char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == quote || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + quote;
}

std::string to_repr(const Value& v) {
  if (v.is_string()) return repr_string(v.as_string());
  if (v.is_array()) {
    std::string out = v.is_tuple ? "(" : "[";
    const Array& a = v.as_array();
    for (size_t i = 0; i < a.size(); ++i) out += (i ? ", " : "") + to_repr(a[i]);
    if (v.is_tuple && a.size() == 1) out += ",";
    return out + (v.is_tuple ? ")" : "]");
  }
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, x] : v.as_object()) {
      out += (first ? "" : ", ") + repr_string(k) + ": " + to_repr(x);
      first = false;
    }
    return out + "}";
  }
  return to_str(v);
}

std::string to_str(const Value& v) {
  switch (v.data.index()) {
    case 0: return "";
    case 1: return "None";
    case 2: return v.as_bool() ? "True" : "False";
    case 3: return std::to_string(v.as_int());
    case 4: return float_repr(v.as_double());
    case 5: return v.as_string();
    case 6: case 7: return to_repr(v);
    case 8: return "<function " + v.as_callable().name + ">";
    default: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& [k, x] : v.as_namespace().attrs) {
        out += (first ? "" : ", ") + repr_string(k) + ": " + to_repr(x);
        first = false;
      }
      return out + "}>";
    }
  }
}

static void json_string(const std::string& s, std::string& out) {
  // json.dumps(ensure_ascii=False) escapes only ", \ and control characters below 0x20.
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else out += static_cast<char>(c);
    }
  }
  out += '"';
}

static void json_dump(const Value& v, const JsonFormat& f, int depth, int line, std::string& out) {
  const int indent = f.indent;
  auto newline = [&](int d) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent * d), ' ');
  };
  const std::string item_sep = !f.item_separator.empty() ? f.item_separator : indent >= 0 ? "," : ", ";
  switch (v.data.index()) {
    case 1: out += "null"; return;
    case 2: out += v.as_bool() ? "true" : "false"; return;
    case 3: out += std::to_string(v.as_int()); return;
    case 4: {
      double d = v.as_double();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case 5: json_string(v.as_string(), out); return;
    case 6: {
      const Array& a = v.as_array();
      if (a.empty()) { out += "[]"; return; }
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_dump(a[i], f, depth + 1, line, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case 7: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.as_object()) items.push_back(&kv);
      if (items.empty()) { out += "{}"; return; }
      if (f.sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_string(items[i]->first, out);
        out += f.key_separator;
        json_dump(items[i]->second, f, depth + 1, line, out);
      }
      newline(depth);
      out += '}';
      return;
    }
    default:
      template_error(line, "Object of type " + v.type_name() + " is not JSON serializable");
  }
}

std::string to_json(const Value& v, const JsonFormat& format, int line) {
  std::string out;
  json_dump(v, format, 0, line, out);
  return out;
}

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value(None{});
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      a.reserve(j.size());
      for (const auto& x : j) a.push_back(from_json(x));
      return Value(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      o.reserve(j.size());
      for (const auto& [k, x] : j.items()) o.emplace_back(k, from_json(x));
      return Value(std::move(o));
    }
    default: return Value();
  }
}

std::vector<std::string> split_code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace bf::jinja
