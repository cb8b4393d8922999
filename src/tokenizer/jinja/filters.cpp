// Jinja2 3.1 built-in filters, with HF's tojson (json.dumps, ensure_ascii=False, no HTML
// escaping). Each filter takes the evaluated input and arguments; names not listed here are
// an error rather than a silent pass-through, so an unsupported template fails loudly.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include <utf8proc.h>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/strings.h"

namespace bf::jinja {
namespace {

// "a.b.0" -> item["a"]["b"][0], as Jinja's make_attrgetter.
Value get_attribute_path(const Value& item, const std::string& path, int line) {
  Value v = item;
  size_t pos = 0;
  while (true) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (v.is_undefined()) return v;
    v = py_index(v, numeric ? Value(static_cast<int64_t>(std::stoll(part))) : Value(part), line);
    if (dot == std::string::npos) return v;
    pos = dot + 1;
  }
}

Value key_of(const Value& item, const Value* attribute, bool case_sensitive, int line) {
  Value v = attribute && !attribute->is_none() ? get_attribute_path(item, to_str(*attribute), line) : item;
  if (!case_sensitive && v.is_string()) return Value(str_lower(v.as_string()));
  return v;
}

CallArgs shift_args(const CallArgs& args, size_t skip) {
  CallArgs out;
  for (size_t i = skip; i < args.positional.size(); ++i) out.positional.push_back(args.positional[i]);
  out.keyword = args.keyword;
  return out;
}

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// json.dumps(ensure_ascii=True): every non-ASCII code point becomes \uXXXX (surrogate pairs
// above the BMP). Non-ASCII bytes only occur inside JSON strings, so the whole text is safe.
std::string escape_non_ascii(const std::string& json) {
  std::string out;
  for (const std::string& cp : split_code_points(json)) {
    if (cp.size() == 1) { out += cp; continue; }
    uint32_t c = static_cast<unsigned char>(cp[0]) & (cp.size() == 2 ? 0x1F : cp.size() == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < cp.size(); ++i) c = (c << 6) | (static_cast<unsigned char>(cp[i]) & 0x3F);
    char buf[16];
    if (c >= 0x10000) {
      c -= 0x10000;
      std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
    } else {
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
    }
    out += buf;
  }
  return out;
}

Value to_list(const Value& v, int line) {
  if (v.is_array() && !v.is_tuple) return v;
  return Value(iterate(v, line));
}

// Python's \w: letters, numbers (any Unicode category L* or N*) and '_'.
bool is_word_char(const std::string& cp) {
  utf8proc_int32_t c = 0;
  if (utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(cp.data()), static_cast<utf8proc_ssize_t>(cp.size()), &c) <= 0)
    return false;
  if (c == '_') return true;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

double round_python(double x, int64_t digits) {
  // printf rounds the exact binary value half-to-even, like CPython's round(x, n).
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::clamp<int64_t>(digits, 0, 300)), x);
  return std::stod(buf);
}

}  // namespace

bool is_known_filter(const std::string& name) {
  static const char* const names[] = {"abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "forceescape", "format", "indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount"};
  for (const char* n : names)
    if (name == n) return true;
  return false;
}

Value apply_filter(const std::string& name, const Value& v, const CallArgs& args, int line) {
  auto arg = [&](size_t i, const char* key) -> const Value* { return args.get(i, key); };
  auto int_arg = [&](size_t i, const char* key, int64_t dflt) {
    const Value* a = arg(i, key);
    return a && (a->is_int() || a->is_bool()) ? (a->is_bool() ? int64_t{a->as_bool()} : a->as_int()) : dflt;
  };
  auto bool_arg = [&](size_t i, const char* key, bool dflt) {
    const Value* a = arg(i, key);
    return a ? truthy(*a) : dflt;
  };

  if (name == "safe" || (name == "string" && v.is_string())) return v;
  if (name == "string") return Value(to_str(v));
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value(static_cast<int64_t>(split_code_points(v.as_string()).size()));
    if (v.is_array()) return Value(static_cast<int64_t>(v.as_array().size()));
    if (v.is_object()) return Value(static_cast<int64_t>(v.as_object().size()));
    if (v.is_undefined()) return Value(int64_t{0});
    template_error(line, "object of type '" + v.type_name() + "' has no len()");
  }
  if (name == "trim") {
    const Value* chars = arg(0, "chars");
    return Value(py_strip(to_str(v), chars && chars->is_string() ? chars->as_string() : kPyWhitespace, true, true));
  }
  if (name == "upper") return Value(str_upper(to_str(v)));
  if (name == "lower") return Value(str_lower(to_str(v)));
  if (name == "title") return Value(jinja_title(to_str(v)));
  if (name == "capitalize") return Value(py_capitalize(to_str(v)));
  if (name == "escape" || name == "e" || name == "forceescape") return Value(escape_html(to_str(v)));
  if (name == "replace") {
    const Value *old_text = arg(0, "old"), *new_text = arg(1, "new");
    if (!old_text || !new_text) template_error(line, "replace needs two arguments");
    return Value(py_replace(to_str(v), to_str(*old_text), to_str(*new_text), int_arg(2, "count", -1)));
  }
  if (name == "default" || name == "d") {
    const Value* dflt = arg(0, "default_value");
    bool use = v.is_undefined() || (bool_arg(1, "boolean", false) && !truthy(v));
    return use ? (dflt ? *dflt : Value("")) : v;
  }
  if (name == "join") {
    const Value* sep = arg(0, "d");
    const Value* attribute = arg(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& x : iterate(v, line)) {
      if (!first) out += sep ? to_str(*sep) : "";
      out += to_str(attribute ? get_attribute_path(x, to_str(*attribute), line) : x);
      first = false;
    }
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    std::vector<Value> items = iterate(v, line);
    if (items.empty()) return Value::undefined("No first item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return to_list(v, line);
  if (name == "int") {
    int64_t dflt = int_arg(0, "default", 0);
    if (v.is_int()) return v;
    if (v.is_bool()) return Value(int64_t{v.as_bool()});
    if (v.is_float()) return Value(static_cast<int64_t>(v.as_double()));
    if (v.is_string()) {
      std::string s = py_strip(v.as_string(), kPyWhitespace, true, true);
      try {
        size_t used = 0;
        int64_t i = std::stoll(s, &used);
        if (used == s.size()) return Value(i);
        double d = std::stod(s, &used);
        if (used == s.size()) return Value(static_cast<int64_t>(d));
      } catch (...) {
      }
    }
    return Value(dflt);
  }
  if (name == "float") {
    const Value* dflt = arg(0, "default");
    if (v.is_number()) return Value(v.as_double());
    if (v.is_string()) {
      std::string s = py_strip(v.as_string(), kPyWhitespace, true, true);
      try {
        size_t used = 0;
        double d = std::stod(s, &used);
        if (used == s.size()) return Value(d);
      } catch (...) {
      }
    }
    return dflt ? *dflt : Value(0.0);
  }
  if (name == "abs") {
    if (v.is_float()) return Value(std::fabs(v.as_double()));
    if (v.is_int()) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
    if (v.is_bool()) return Value(int64_t{v.as_bool()});
    template_error(line, "bad operand type for abs(): '" + v.type_name() + "'");
  }
  if (name == "round") {
    int64_t precision = int_arg(0, "precision", 0);
    const Value* method = arg(1, "method");
    std::string how = method ? to_str(*method) : "common";
    if (!v.is_number()) template_error(line, "round needs a number");
    if (how == "common") {
      if (v.is_int()) return v;
      return Value(round_python(v.as_double(), precision));
    }
    double scale = std::pow(10.0, static_cast<double>(precision));
    if (how == "ceil") return Value(std::ceil(v.as_double() * scale) / scale);
    if (how == "floor") return Value(std::floor(v.as_double() * scale) / scale);
    template_error(line, "method must be common, ceil or floor");
  }
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    for (const std::string& cp : split_code_points(to_str(v))) {
      bool w = is_word_char(cp);
      words += w && !in_word;
      in_word = w;
    }
    return Value(words);
  }
  if (name == "indent") {
    const Value* width_v = arg(0, "width");
    std::string pad = !width_v ? "    " : width_v->is_string() ? width_v->as_string()
                                                             : std::string(static_cast<size_t>(int_arg(0, "width", 4)), ' ');
    bool first = bool_arg(1, "first", false), blank = bool_arg(2, "blank", false);
    std::vector<std::string> lines = py_splitlines(to_str(v) + "\n");
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += "\n";
      bool indent_line = i == 0 ? first : (blank || !lines[i].empty());
      out += (indent_line ? pad : "") + lines[i];
    }
    return Value(std::move(out));
  }
  if (name == "center") return Value(py_center(to_str(v), int_arg(0, "width", 80)));
  if (name == "format") {
    if (!args.keyword.empty()) template_error(line, "format filter with keywords is not supported");
    return Value(percent_format(to_str(v), args.positional, line));
  }
  if (name == "tojson") {
    JsonFormat format;
    const Value* indent = arg(1, "indent");
    if (indent && !indent->is_none()) format.indent = static_cast<int>(indent->is_int() ? indent->as_int() : 0);
    const Value* separators = arg(2, "separators");
    if (separators && separators->is_array() && separators->as_array().size() == 2) {
      format.item_separator = to_str(separators->as_array()[0]);
      format.key_separator = to_str(separators->as_array()[1]);
    }
    format.sort_keys = bool_arg(3, "sort_keys", false);
    std::string json = to_json(v, format, line);
    return Value(bool_arg(0, "ensure_ascii", false) ? escape_non_ascii(json) : json);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value(Array{});
    if (!v.is_object()) template_error(line, "items filter needs a mapping, got " + v.type_name());
    bool found = false;
    return call_method(v, "items", CallArgs{}, line, found);
  }
  if (name == "dictsort") {
    if (!v.is_object()) template_error(line, "dictsort needs a mapping");
    bool case_sensitive = bool_arg(0, "case_sensitive", false);
    const Value* by = arg(1, "by");
    bool by_value = by && to_str(*by) == "value";
    bool reverse = bool_arg(2, "reverse", false);
    bool found = false;
    Array pairs = call_method(v, "items", CallArgs{}, line, found).as_array();
    auto key = [&](const Value& pair) { return key_of(pair.as_array()[by_value ? 1 : 0], nullptr, case_sensitive, line); };
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) {
      int c = compare(key(a), key(b), line);
      return reverse ? c > 0 : c < 0;
    });
    return Value(std::move(pairs));
  }
  if (name == "sort") {
    bool reverse = bool_arg(0, "reverse", false), case_sensitive = bool_arg(1, "case_sensitive", false);
    const Value* attribute = arg(2, "attribute");
    std::vector<Value> items = iterate(v, line);
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
      int c = compare(key_of(a, attribute, case_sensitive, line), key_of(b, attribute, case_sensitive, line), line);
      return reverse ? c > 0 : c < 0;
    });
    return Value(std::move(items));
  }
  if (name == "unique") {
    bool case_sensitive = bool_arg(0, "case_sensitive", false);
    const Value* attribute = arg(1, "attribute");
    Array out, seen;
    for (const Value& x : iterate(v, line)) {
      Value k = key_of(x, attribute, case_sensitive, line);
      if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, k); })) continue;
      seen.push_back(k);
      out.push_back(x);
    }
    return Value(std::move(out));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<std::string> cps = split_code_points(v.as_string());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    std::vector<Value> items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "min" || name == "max" || name == "sum") {
    std::vector<Value> items = iterate(v, line);
    const Value* attribute = arg(name == "sum" ? 0 : 1, "attribute");
    if (name == "sum") {
      Value total = arg(1, "start") ? *arg(1, "start") : Value(int64_t{0});
      for (const Value& x : items) {
        Value k = key_of(x, attribute, true, line);
        if (!k.is_number() || !total.is_number()) template_error(line, "sum needs numbers");
        total = total.is_float() || k.is_float() ? Value(total.as_double() + k.as_double())
                                                 : Value(static_cast<int64_t>(total.as_double() + k.as_double()));
      }
      return total;
    }
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    bool case_sensitive = bool_arg(0, "case_sensitive", false);
    Value best = items[0];
    for (const Value& x : items) {
      int c = compare(key_of(x, attribute, case_sensitive, line), key_of(best, attribute, case_sensitive, line), line);
      if (name == "min" ? c < 0 : c > 0) best = x;
    }
    return best;
  }
  if (name == "map") {
    Array out;
    const Value* attribute = nullptr;
    for (const auto& [k, x] : args.keyword)
      if (k == "attribute") attribute = &x;
    if (attribute) {
      const Value* dflt = nullptr;
      for (const auto& [k, x] : args.keyword)
        if (k == "default") dflt = &x;
      for (const Value& x : iterate(v, line)) {
        Value y = get_attribute_path(x, to_str(*attribute), line);
        out.push_back(y.is_undefined() && dflt ? *dflt : y);
      }
      return Value(std::move(out));
    }
    if (args.positional.empty()) template_error(line, "map needs a filter name or attribute=");
    std::string filter = to_str(args.positional[0]);
    CallArgs rest = shift_args(args, 1);
    for (const Value& x : iterate(v, line)) out.push_back(apply_filter(filter, x, rest, line));
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    bool by_attr = name.ends_with("attr");
    bool keep_if = name.starts_with("select");
    size_t test_at = by_attr ? 1 : 0;
    if (by_attr && args.positional.empty()) template_error(line, name + " needs an attribute");
    Array out;
    for (const Value& x : iterate(v, line)) {
      Value subject = by_attr ? get_attribute_path(x, to_str(args.positional[0]), line) : x;
      bool pass = args.positional.size() > test_at
                      ? apply_test(to_str(args.positional[test_at]), subject, shift_args(args, test_at + 1), line)
                      : truthy(subject);
      if (pass == keep_if) out.push_back(x);
    }
    return Value(std::move(out));
  }
  if (name == "attr") {
    const Value* a = arg(0, "name");
    return a ? py_index(v, *a, line) : Value();
  }
  if (name == "batch") {
    int64_t size = int_arg(0, "linecount", 1);
    if (size <= 0) template_error(line, "batch size must be positive");
    Array out, cur;
    for (const Value& x : iterate(v, line)) {
      cur.push_back(x);
      if (static_cast<int64_t>(cur.size()) == size) out.push_back(Value(std::move(cur))), cur.clear();
    }
    if (!cur.empty()) {
      if (const Value* fill = arg(1, "fill_with"))
        while (static_cast<int64_t>(cur.size()) < size) cur.push_back(*fill);
      out.push_back(Value(std::move(cur)));
    }
    return Value(std::move(out));
  }
  template_error(line, "unknown filter '" + name + "'");
}

}  // namespace bf::jinja
