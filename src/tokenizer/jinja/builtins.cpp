// Tests, Python methods on str/dict, and the indexing/containment/iteration helpers.
// Behaviour mirrors CPython + Jinja2 3.1 (e.g. a dict `is sequence`, Undefined `is
// iterable`, str.split() with no separator drops empty fields) because templates rely on it.
#include "tokenizer/jinja/builtins.h"

#include <algorithm>
#include <cctype>

#include "tokenizer/jinja/strings.h"

namespace bf::jinja {
namespace {

int64_t to_index(const Value& v, int line) {
  if (v.is_int()) return v.as_int();
  if (v.is_bool()) return v.as_bool();
  template_error(line, "indices must be integers, not " + v.type_name());
}

}  // namespace

Value py_index(const Value& v, const Value& key, int line) {
  if (v.is_object()) {
    if (!key.is_string()) return Value::undefined(to_str(key));
    const Value* found = v.find(key.as_string());
    return found ? *found : Value::undefined(key.as_string());
  }
  if (v.is_namespace() && key.is_string()) {
    Value* found = v.as_namespace().find(key.as_string());
    return found ? *found : Value::undefined(key.as_string());
  }
  if (v.is_array() || v.is_string()) {
    if (!key.is_int() && !key.is_bool()) return Value::undefined(to_str(key));
    int64_t i = to_index(key, line);
    if (v.is_array()) {
      int64_t n = static_cast<int64_t>(v.as_array().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value::undefined("index");
      return v.as_array()[static_cast<size_t>(i)];
    }
    std::vector<std::string> cps = split_code_points(v.as_string());
    int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value::undefined("index");
    return Value(cps[static_cast<size_t>(i)]);
  }
  return Value::undefined(to_str(key));
}

Value py_slice(const Value& v, const Value& start_v, const Value& stop_v, const Value& step_v, int line) {
  int64_t step = step_v.is_none() ? 1 : to_index(step_v, line);
  if (step == 0) template_error(line, "slice step cannot be zero");
  std::vector<std::string> cps;
  if (v.is_string()) cps = split_code_points(v.as_string());
  else if (!v.is_array()) template_error(line, "'" + v.type_name() + "' object is not subscriptable");
  const int64_t n = v.is_string() ? static_cast<int64_t>(cps.size()) : static_cast<int64_t>(v.as_array().size());
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](const Value& bound, int64_t dflt) {
    if (bound.is_none()) return dflt;
    int64_t i = to_index(bound, line);
    if (i < 0) {
      i += n;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= n) {
      i = step < 0 ? n - 1 : n;
    }
    return i;
  };
  int64_t start = adjust(start_v, step < 0 ? n - 1 : 0);
  int64_t stop = adjust(stop_v, step < 0 ? -1 : n);
  std::vector<size_t> picked;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picked.push_back(static_cast<size_t>(i));
  if (v.is_string()) {
    std::string out;
    for (size_t i : picked) out += cps[i];
    return Value(std::move(out));
  }
  Array out;
  for (size_t i : picked) out.push_back(v.as_array()[i]);
  return Value(std::move(out));
}

bool py_contains(const Value& container, const Value& item, int line) {
  if (container.is_string()) {
    if (!item.is_string())
      template_error(line, "'in <string>' requires string as left operand, not " + item.type_name());
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_array()) {
    for (const Value& x : container.as_array())
      if (equal(x, item)) return true;
    return false;
  }
  if (container.is_object()) return item.is_string() && container.find(item.as_string());
  if (container.is_namespace()) return item.is_string() && container.as_namespace().find(item.as_string());
  if (container.is_undefined()) return false;  // Undefined iterates as empty
  template_error(line, "argument of type '" + container.type_name() + "' is not iterable");
}

std::vector<Value> iterate(const Value& v, int line) {
  if (v.is_array()) return v.as_array();
  if (v.is_object()) {
    std::vector<Value> keys;
    for (const auto& kv : v.as_object()) keys.push_back(Value(kv.first));
    return keys;
  }
  if (v.is_string()) {
    std::vector<Value> out;
    for (std::string& cp : split_code_points(v.as_string())) out.push_back(Value(std::move(cp)));
    return out;
  }
  if (v.is_undefined()) return {};
  template_error(line, "'" + v.type_name() + "' object is not iterable");
}

bool is_known_test(const std::string& name) {
  static const char* const names[] = {"!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "float", "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "startingwith", "string", "true", "undefined", "upper"};
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

bool apply_test(const std::string& name, const Value& v, const CallArgs& args, int line) {
  auto arg = [&](size_t i) -> const Value& {
    if (i >= args.positional.size()) template_error(line, "test '" + name + "' needs an argument");
    return args.positional[i];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_array() || v.is_object() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_array() || v.is_object() || v.is_string() || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "odd" || name == "even") {
    if (!v.is_int() && !v.is_bool()) template_error(line, "test '" + name + "' needs an integer");
    int64_t i = v.is_bool() ? v.as_bool() : v.as_int();
    return (i % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    int64_t d = to_index(arg(0), line);
    if (d == 0) template_error(line, "division by zero");
    return to_index(v, line) % d == 0;
  }
  if (name == "equalto" || name == "eq" || name == "==") return equal(v, arg(0));
  if (name == "ne" || name == "!=") return !equal(v, arg(0));
  if (name == "lt" || name == "lessthan" || name == "<") return compare(v, arg(0), line) < 0;
  if (name == "le" || name == "<=") return compare(v, arg(0), line) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, arg(0), line) > 0;
  if (name == "ge" || name == ">=") return compare(v, arg(0), line) >= 0;
  if (name == "in") return py_contains(arg(0), v, line);
  if (name == "sameas") {
    const Value& o = arg(0);
    if (v.data.index() != o.data.index()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.is_bool()) return v.as_bool() == o.as_bool();
    return equal(v, o) && !v.is_array() && !v.is_object();  // identity: only small scalars
  }
  if (name == "lower") return v.is_string() && str_lower(v.as_string()) == v.as_string();
  if (name == "upper") return v.is_string() && str_upper(v.as_string()) == v.as_string();
  if (name == "escaped") return false;
  if (name == "startingwith") return v.is_string() && arg(0).is_string() && v.as_string().starts_with(arg(0).as_string());
  template_error(line, "unknown test '" + name + "'");
}

Value call_method(const Value& obj, const std::string& name, const CallArgs& args, int line, bool& found) {
  found = true;
  auto arg = [&](size_t i, const char* key) -> const Value* { return args.get(i, key); };
  auto str_arg = [&](size_t i, const char* key) -> std::string {
    const Value* a = arg(i, key);
    if (!a || !a->is_string()) template_error(line, name + "() argument must be str");
    return a->as_string();
  };
  if (obj.is_string()) {
    const std::string& s = obj.as_string();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Value* chars = arg(0, "chars");
      std::string set = chars && chars->is_string() ? chars->as_string() : std::string(kPyWhitespace);
      return Value(py_strip(s, set, name != "rstrip", name != "lstrip"));
    }
    if (name == "split" || name == "rsplit") {
      const Value* sep = arg(0, "sep");
      const Value* max = arg(1, "maxsplit");
      int64_t maxsplit = max && max->is_int() ? max->as_int() : -1;
      std::vector<std::string> parts = sep && sep->is_string() ? py_split(s, sep->as_string(), maxsplit, name == "rsplit")
                                                               : py_split_whitespace(s, maxsplit, name == "rsplit");
      Array out;
      for (std::string& p : parts) out.push_back(Value(std::move(p)));
      return Value(std::move(out));
    }
    if (name == "splitlines") {
      Array out;
      for (std::string& p : py_splitlines(s)) out.push_back(Value(std::move(p)));
      return Value(std::move(out));
    }
    if (name == "startswith" || name == "endswith") {
      const Value* a = arg(0, "prefix");
      if (!a) template_error(line, name + "() takes at least 1 argument");
      std::vector<Value> options = a->is_array() ? a->as_array() : std::vector<Value>{*a};
      for (const Value& o : options) {
        if (!o.is_string()) template_error(line, name + "() argument must be str or a tuple of str");
        if (name == "startswith" ? s.starts_with(o.as_string()) : s.ends_with(o.as_string())) return Value(true);
      }
      return Value(false);
    }
    if (name == "replace") {
      const Value* count = arg(2, "count");
      return Value(py_replace(s, str_arg(0, "old"), str_arg(1, "new"), count && count->is_int() ? count->as_int() : -1));
    }
    if (name == "upper") return Value(str_upper(s));
    if (name == "lower") return Value(str_lower(s));
    if (name == "title") return Value(py_title(s));
    if (name == "capitalize") return Value(py_capitalize(s));
    if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
      std::string sub = str_arg(0, "sub");
      size_t at = name[0] == 'r' ? s.rfind(sub) : s.find(sub);
      if (at == std::string::npos) {
        if (name.ends_with("index")) template_error(line, "substring not found");
        return Value(int64_t{-1});
      }
      return Value(static_cast<int64_t>(split_code_points(s.substr(0, at)).size()));
    }
    if (name == "count") return Value(py_count(s, str_arg(0, "x")));
    if (name == "join") {
      const Value* items = arg(0, "iterable");
      if (!items) template_error(line, "join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const Value& x : iterate(*items, line)) {
        if (!x.is_string()) template_error(line, "sequence item: expected str instance, " + x.type_name() + " found");
        out += (first ? "" : s) + x.as_string();
        first = false;
      }
      return Value(std::move(out));
    }
    if (name == "format") return Value(py_format(s, args, line));
    if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum") {
      if (s.empty()) return Value(false);
      for (unsigned char c : s) {
        bool ok = name == "isdigit" ? std::isdigit(c) : name == "isalpha" ? std::isalpha(c)
                : name == "isspace" ? std::isspace(c) : std::isalnum(c);
        if (!ok) return Value(false);
      }
      return Value(true);
    }
    if (name == "islower") return Value(str_lower(s) == s && str_upper(s) != s);
    if (name == "isupper") return Value(str_upper(s) == s && str_lower(s) != s);
  }
  if (obj.is_object()) {
    if (name == "get") {
      const Value* key = arg(0, "key");
      const Value* dflt = arg(1, "default");
      if (key && key->is_string())
        if (const Value* v = obj.find(key->as_string())) return *v;
      return dflt ? *dflt : Value(None{});
    }
    if (name == "items" || name == "keys" || name == "values") {
      Array out;
      for (const auto& [k, v] : obj.as_object()) {
        if (name == "keys") out.push_back(Value(k));
        else if (name == "values") out.push_back(v);
        else {
          Value pair(Array{Value(k), v});
          pair.is_tuple = true;
          out.push_back(pair);
        }
      }
      return Value(std::move(out));
    }
  }
  if (obj.is_array()) {
    if (name == "index" || name == "count") {
      const Value* x = arg(0, "value");
      if (!x) template_error(line, name + "() takes exactly one argument");
      int64_t count = 0;
      const Array& a = obj.as_array();
      for (size_t i = 0; i < a.size(); ++i) {
        if (!equal(a[i], *x)) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++count;
      }
      if (name == "index") template_error(line, "value is not in list");
      return Value(count);
    }
    if (name == "append" || name == "extend" || name == "pop" || name == "insert")
      template_error(line, "access to attribute '" + name + "' of 'list' object is unsafe");  // immutable sandbox
  }
  found = false;
  return Value();
}

}  // namespace bf::jinja
