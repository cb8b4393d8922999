// Jinja values: the small dynamic type the chat-template interpreter computes with.
// Semantics follow Python as Jinja2 sees it (truthiness, ==, str(), repr()), because the
// goldens are rendered by Python jinja2 and every byte of the prompt must match.
// Arrays and objects are shared and immutable (HF renders in an immutable sandbox), so
// copying a Value is cheap; only namespaces are mutable, and they are shared by design.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace bf::jinja {

struct Value;
using Array = std::vector<Value>;
// Insertion-ordered like a Python dict: tojson and `items` must keep the caller's key order.
using Object = std::vector<std::pair<std::string, Value>>;
struct Namespace;
struct Callable;

struct Undefined {
  std::string name;  // for "'name' is undefined" messages
};
struct None {};

struct Value {
  std::variant<Undefined, None, bool, int64_t, double, std::string, std::shared_ptr<const Array>,
               std::shared_ptr<const Object>, std::shared_ptr<Callable>, std::shared_ptr<Namespace>>
      data;
  bool is_tuple = false;  // a tuple prints as (a, b) but is otherwise an array

  Value() : data(Undefined{}) {}
  Value(None) : data(None{}) {}
  Value(bool b) : data(b) {}
  Value(int64_t i) : data(i) {}
  Value(int i) : data(int64_t{i}) {}
  Value(double d) : data(d) {}
  Value(std::string s) : data(std::move(s)) {}
  Value(const char* s) : data(std::string(s)) {}
  Value(Array a) : data(std::make_shared<const Array>(std::move(a))) {}
  Value(Object o) : data(std::make_shared<const Object>(std::move(o))) {}
  Value(std::shared_ptr<Callable> c) : data(std::move(c)) {}
  Value(std::shared_ptr<Namespace> n) : data(std::move(n)) {}
  static Value undefined(std::string name) {
    Value v;
    v.data = Undefined{std::move(name)};
    return v;
  }

  bool is_undefined() const { return std::holds_alternative<Undefined>(data); }
  bool is_none() const { return std::holds_alternative<None>(data); }
  bool is_bool() const { return std::holds_alternative<bool>(data); }
  bool is_int() const { return std::holds_alternative<int64_t>(data); }
  bool is_float() const { return std::holds_alternative<double>(data); }
  bool is_number() const { return is_int() || is_float() || is_bool(); }  // Python: bool is int
  bool is_string() const { return std::holds_alternative<std::string>(data); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<const Array>>(data); }
  bool is_object() const { return std::holds_alternative<std::shared_ptr<const Object>>(data); }
  bool is_callable() const { return std::holds_alternative<std::shared_ptr<Callable>>(data); }
  bool is_namespace() const { return std::holds_alternative<std::shared_ptr<Namespace>>(data); }

  bool as_bool() const { return std::get<bool>(data); }
  int64_t as_int() const { return std::get<int64_t>(data); }
  double as_double() const;  // any number, bools included
  const std::string& as_string() const { return std::get<std::string>(data); }
  const Array& as_array() const { return *std::get<std::shared_ptr<const Array>>(data); }
  const Object& as_object() const { return *std::get<std::shared_ptr<const Object>>(data); }
  Callable& as_callable() const { return *std::get<std::shared_ptr<Callable>>(data); }
  Namespace& as_namespace() const { return *std::get<std::shared_ptr<Namespace>>(data); }
  const std::string& undefined_name() const { return std::get<Undefined>(data).name; }

  // Looks a key up in an object; nullptr when absent.
  const Value* find(const std::string& key) const;
  std::string type_name() const;  // Python's type name, for error messages
};

struct Namespace {
  Object attrs;
  Value* find(const std::string& key);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  const Value* get(size_t index, const char* name) const;  // positional, else keyword
};

struct Callable {
  std::string name;
  std::function<Value(const CallArgs&)> fn;
};

bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);            // Python ==
int compare(const Value& a, const Value& b, int line);  // Python <, > on numbers/strings/arrays
std::string to_str(const Value& v);                     // Python str(); Undefined -> ""
std::string to_repr(const Value& v);                    // Python repr()
std::string float_repr(double d);                       // Python repr(float)
// json.dumps as HF's tojson calls it: ensure_ascii=False, separators (", ", ": ") or
// (",", ": ") with an indent (indent < 0: none); explicit separators override both.
struct JsonFormat {
  int indent = -1;
  bool sort_keys = false;
  std::string item_separator;  // empty: Python's default for the indent
  std::string key_separator = ": ";
};
std::string to_json(const Value& v, const JsonFormat& format, int line);

Value from_json(const nlohmann::ordered_json& j);

// Throws bf::Error "chat template line N: message"; line 0 means unknown.
[[noreturn]] void template_error(int line, const std::string& message);

// UTF-8 helpers: Python indexes strings by code point.
std::vector<std::string> split_code_points(const std::string& s);

}  // namespace bf::jinja
