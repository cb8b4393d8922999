// Jinja's built-in filters and tests and Python's str/dict/list methods, as pure functions
// of values. The interpreter resolves names and evaluates arguments; everything here only
// computes. Unknown names are errors that name the filter, test or method.
#pragma once

#include <string>

#include "tokenizer/jinja/value.h"

namespace bf::jinja {

Value apply_filter(const std::string& name, const Value& input, const CallArgs& args, int line);
bool apply_test(const std::string& name, const Value& input, const CallArgs& args, int line);
// Jinja checks filter and test names when it compiles a template; the parser does too.
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
// obj.name(args) for str, dict and list methods; sets found=false when obj has no such method.
Value call_method(const Value& obj, const std::string& name, const CallArgs& args, int line, bool& found);

// Python helpers shared with the interpreter.
Value py_slice(const Value& v, const Value& start, const Value& stop, const Value& step, int line);
Value py_index(const Value& v, const Value& key, int line);  // v[key]; Undefined when missing
bool py_contains(const Value& container, const Value& item, int line);
std::vector<Value> iterate(const Value& v, int line);  // for-loop items (dict: keys)

}  // namespace bf::jinja
