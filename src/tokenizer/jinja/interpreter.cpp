// The tree-walking interpreter: statements write into an output string, expressions
// evaluate to Values. Globals HF provides (raise_exception, strftime_now) and Jinja's
// (namespace, range, dict) live in the outermost frame, under the context variables.
#include "tokenizer/jinja/interpreter.h"

#include <chrono>
#include <cmath>
#include <ctime>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/jinja/builtins.h"

namespace bf::jinja {
namespace {

struct Frame {
  std::unordered_map<std::string, Value> vars;
  Frame* parent = nullptr;
};

enum class Flow { normal, break_, continue_ };

Value make_callable(std::string name, std::function<Value(const CallArgs&)> fn) {
  return Value(std::make_shared<Callable>(Callable{std::move(name), std::move(fn)}));
}

[[noreturn]] void undefined_error(const Value& v, int line) {
  template_error(line, "'" + (v.undefined_name().empty() ? std::string("value") : v.undefined_name()) +
                           "' is undefined");
}

class Interpreter {
 public:
  explicit Interpreter(const Value& context) {
    add_globals();
    if (context.is_object())
      for (const auto& [k, v] : context.as_object()) globals_.vars[k] = v;
    root_.parent = &globals_;
  }

  std::string run(const Body& body) {
    std::string out;
    Flow flow = exec(body, root_, out);
    if (flow != Flow::normal) template_error(0, "break or continue outside a loop");
    return out;
  }

 private:
  Frame globals_;
  Frame root_;
  int call_depth_ = 0;  // macro nesting; bounded so a runaway recursion errors, not crashes

  void add_globals() {
    globals_.vars["raise_exception"] = make_callable("raise_exception", [](const CallArgs& a) -> Value {
      const Value* msg = a.get(0, "message");
      throw Error(msg ? to_str(*msg) : "raise_exception called");
    });
    globals_.vars["strftime_now"] = make_callable("strftime_now", [](const CallArgs& a) {
      const Value* fmt = a.get(0, "format");
      std::time_t now = std::time(nullptr);
      std::tm local{};
      localtime_r(&now, &local);
      char buf[256];
      size_t n = std::strftime(buf, sizeof(buf), fmt ? to_str(*fmt).c_str() : "", &local);
      return Value(std::string(buf, n));
    });
    globals_.vars["namespace"] = make_callable("namespace", [](const CallArgs& a) {
      auto ns = std::make_shared<Namespace>();
      for (const Value& p : a.positional)
        if (p.is_object()) ns->attrs = p.as_object();
      for (const auto& [k, v] : a.keyword) {
        if (Value* old = ns->find(k)) *old = v;
        else ns->attrs.emplace_back(k, v);
      }
      return Value(ns);
    });
    globals_.vars["dict"] = make_callable("dict", [](const CallArgs& a) {
      Object o = a.positional.empty() || !a.positional[0].is_object() ? Object{} : a.positional[0].as_object();
      for (const auto& kv : a.keyword) o.push_back(kv);
      return Value(std::move(o));
    });
    globals_.vars["range"] = make_callable("range", [](const CallArgs& a) {
      int64_t start = 0, stop = 0, step = 1;
      auto num = [&](size_t i) {
        if (!a.positional[i].is_int()) template_error(0, "range() arguments must be integers");
        return a.positional[i].as_int();
      };
      if (a.positional.size() == 1) stop = num(0);
      else if (a.positional.size() >= 2) start = num(0), stop = num(1);
      if (a.positional.size() >= 3) step = num(2);
      if (step == 0) template_error(0, "range() arg 3 must not be zero");
      Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        out.push_back(Value(i));
        if (out.size() > 10'000'000) template_error(0, "range() too large");  // runaway guard
      }
      return Value(std::move(out));
    });
  }

  static Value* find_var(const std::string& name, Frame& frame) {
    for (Frame* f = &frame; f; f = f->parent) {
      auto it = f->vars.find(name);
      if (it != f->vars.end()) return &it->second;
    }
    return nullptr;
  }

  // ---- statements ----

  Flow exec(const Body& body, Frame& frame, std::string& out) {
    for (const StmtPtr& s : body) {
      Flow flow = exec_one(*s, frame, out);
      if (flow != Flow::normal) return flow;
    }
    return Flow::normal;
  }

  Flow exec_one(const Stmt& s, Frame& frame, std::string& out) {
    switch (s.kind) {
      case StmtKind::text: out += s.text; return Flow::normal;
      case StmtKind::output: out += to_str(eval(*s.expr, frame)); return Flow::normal;
      case StmtKind::if_:
        for (const auto& [cond, body] : s.branches)
          if (!cond || truthy(eval(*cond, frame))) return exec(body, frame, out);
        return Flow::normal;
      case StmtKind::for_: exec_for(s, frame, out); return Flow::normal;
      case StmtKind::set: exec_set(s, frame); return Flow::normal;
      case StmtKind::macro: frame.vars[s.name] = make_macro(s, frame); return Flow::normal;
      case StmtKind::call_block: {
        // caller() renders the block body in the frame of the call site.
        Frame* site = &frame;
        Value caller = make_callable("caller", [this, &s, site](const CallArgs&) {
          Frame inner;
          inner.parent = site;
          std::string text;
          exec(s.body, inner, text);
          return Value(std::move(text));
        });
        const Expr& call = *s.expr;
        if (call.kind != ExprKind::call) template_error(s.line, "{% call %} needs a macro call");
        Value fn = eval(*call.args[0], frame);
        CallArgs args = eval_args(call, frame, 1);
        args.keyword.emplace_back("caller", caller);
        out += to_str(call_value(fn, args, s.line));
        return Flow::normal;
      }
      case StmtKind::filter_block: {
        Frame inner;
        inner.parent = &frame;
        std::string text;
        exec(s.body, inner, text);
        out += to_str(eval_filter_chain(*s.expr, Value(std::move(text)), frame));
        return Flow::normal;
      }
      case StmtKind::break_: return Flow::break_;
      case StmtKind::continue_: return Flow::continue_;
      case StmtKind::scope: return exec(s.body, frame, out);
    }
    return Flow::normal;
  }

  void bind_targets(const std::vector<std::string>& targets, const Value& v, Frame& frame, int line) {
    if (targets.size() == 1) {
      frame.vars[targets[0]] = v;
      return;
    }
    std::vector<Value> items = iterate(v, line);
    if (items.size() != targets.size())
      template_error(line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                               std::to_string(targets.size()) + " names");
    for (size_t i = 0; i < targets.size(); ++i) frame.vars[targets[i]] = items[i];
  }

  void exec_for(const Stmt& s, Frame& frame, std::string& out) {
    Value seq = eval(*s.expr, frame);
    std::vector<Value> all = iterate(seq, s.line);
    std::vector<Value> items;
    if (s.cond) {
      // `for x in xs if cond`: the filter sees only the loop variables.
      for (const Value& v : all) {
        Frame probe;
        probe.parent = &frame;
        bind_targets(s.targets, v, probe, s.line);
        if (truthy(eval(*s.cond, probe))) items.push_back(v);
      }
    } else {
      items = std::move(all);
    }
    if (items.empty()) {
      Frame inner;
      inner.parent = &frame;
      exec(s.else_body, inner, out);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      Frame inner;
      inner.parent = &frame;
      Object loop = {{"index", Value(i + 1)},      {"index0", Value(i)},
                     {"revindex", Value(n - i)},   {"revindex0", Value(n - i - 1)},
                     {"first", Value(i == 0)},     {"last", Value(i == n - 1)},
                     {"length", Value(n)},         {"depth", Value(1)},
                     {"depth0", Value(0)}};
      if (i > 0) loop.emplace_back("previtem", items[i - 1]);
      if (i + 1 < n) loop.emplace_back("nextitem", items[i + 1]);
      loop.emplace_back("cycle", make_callable("cycle", [i](const CallArgs& a) {
        if (a.positional.empty()) template_error(0, "no items for cycling given");
        return a.positional[static_cast<size_t>(i) % a.positional.size()];
      }));
      inner.vars["loop"] = Value(std::move(loop));
      bind_targets(s.targets, items[i], inner, s.line);
      if (exec(s.body, inner, out) == Flow::break_) break;
    }
  }

  void exec_set(const Stmt& s, Frame& frame) {
    Value v;
    if (s.expr) {
      v = eval(*s.expr, frame);
    } else {
      Frame inner;
      inner.parent = &frame;
      std::string text;
      exec(s.body, inner, text);
      v = Value(std::move(text));
      if (s.cond) v = eval_filter_chain(*s.cond, v, frame);
    }
    if (s.attribute_target) {
      Value* target = find_var(s.targets[0], frame);
      if (!target || !target->is_namespace())
        template_error(s.line, "cannot assign attribute on non-namespace object '" + s.targets[0] + "'");
      Namespace& ns = target->as_namespace();
      if (Value* old = ns.find(s.targets[1])) *old = v;
      else ns.attrs.emplace_back(s.targets[1], v);
      return;
    }
    bind_targets(s.targets, v, frame, s.line);
  }

  Value make_macro(const Stmt& s, Frame& frame) {
    Frame* closure = &frame;
    return make_callable(s.name, [this, &s, closure](const CallArgs& args) {
      if (call_depth_ >= 256) template_error(s.line, "macro '" + s.name + "' recursion too deep");
      ++call_depth_;
      struct Unwind {
        int& depth;
        ~Unwind() { --depth; }
      } unwind{call_depth_};
      Frame inner;
      inner.parent = closure;
      if (args.positional.size() > s.params.size())
        template_error(s.line, "macro '" + s.name + "' takes not more than " +
                                   std::to_string(s.params.size()) + " argument(s)");
      for (const auto& [k, v] : args.keyword) {
        bool known = k == "caller";
        for (const auto& p : s.params) known = known || p.first == k;
        if (!known) template_error(s.line, "macro '" + s.name + "' takes no keyword argument '" + k + "'");
        if (k == "caller") inner.vars["caller"] = v;
      }
      for (size_t i = 0; i < s.params.size(); ++i) {
        const auto& [param, def] = s.params[i];
        if (const Value* v = args.get(i, param.c_str())) inner.vars[param] = *v;
        else if (def) inner.vars[param] = eval(*def, inner);
        else inner.vars[param] = Value::undefined(param);
      }
      std::string text;
      exec(s.body, inner, text);
      return Value(std::move(text));
    });
  }

  // ---- expressions ----

  CallArgs eval_args(const Expr& e, Frame& frame, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.args.size(); ++i) args.positional.push_back(eval(*e.args[i], frame));
    for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, frame));
    return args;
  }

  Value call_value(const Value& fn, const CallArgs& args, int line) {
    if (fn.is_undefined()) undefined_error(fn, line);
    if (!fn.is_callable()) template_error(line, "'" + fn.type_name() + "' object is not callable");
    return fn.as_callable().fn(args);
  }

  // A filter chain whose innermost input is a null placeholder (filter blocks, block set).
  Value eval_filter_chain(const Expr& e, const Value& input, Frame& frame) {
    Value inner = e.args[0] ? eval_filter_chain(*e.args[0], input, frame) : input;
    return apply_filter(e.name, inner, eval_args(e, frame, 1), e.line);
  }

  Value eval(const Expr& e, Frame& frame) {
    switch (e.kind) {
      case ExprKind::literal: return e.value;
      case ExprKind::name: {
        Value* v = find_var(e.name, frame);
        return v ? *v : Value::undefined(e.name);
      }
      case ExprKind::list:
      case ExprKind::tuple: {
        Array a;
        for (const ExprPtr& x : e.args) a.push_back(eval(*x, frame));
        Value v(std::move(a));
        v.is_tuple = e.kind == ExprKind::tuple;
        return v;
      }
      case ExprKind::dict: {
        Object o;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          Value k = eval(*e.args[i], frame);
          if (!k.is_string()) template_error(e.line, "only string dict keys are supported");
          Value v = eval(*e.args[i + 1], frame);
          bool replaced = false;
          for (auto& [ok, ov] : o)
            if (ok == k.as_string()) ov = v, replaced = true;
          if (!replaced) o.emplace_back(k.as_string(), v);
        }
        return Value(std::move(o));
      }
      case ExprKind::attribute: {
        Value obj = eval(*e.args[0], frame);
        if (obj.is_undefined()) undefined_error(obj, e.line);
        if (obj.is_namespace()) {
          Value* v = obj.as_namespace().find(e.name);
          return v ? *v : Value::undefined(e.name);
        }
        if (obj.is_object()) {
          const Value* v = obj.find(e.name);
          return v ? *v : Value::undefined(e.name);
        }
        return Value::undefined(e.name);
      }
      case ExprKind::subscript: {
        Value obj = eval(*e.args[0], frame);
        if (obj.is_undefined()) undefined_error(obj, e.line);
        return py_index(obj, eval(*e.args[1], frame), e.line);
      }
      case ExprKind::slice: {
        Value obj = eval(*e.args[0], frame);
        if (obj.is_undefined()) undefined_error(obj, e.line);
        auto part = [&](int i) { return e.args[i] ? eval(*e.args[i], frame) : Value(None{}); };
        return py_slice(obj, part(1), part(2), part(3), e.line);
      }
      case ExprKind::call: {
        const Expr& callee = *e.args[0];
        if (callee.kind == ExprKind::attribute) {
          Value obj = eval(*callee.args[0], frame);
          if (obj.is_undefined()) undefined_error(obj, e.line);
          bool found = false;
          CallArgs args = eval_args(e, frame, 1);
          Value result = call_method(obj, callee.name, args, e.line, found);
          if (found) return result;
          if (obj.is_object()) {
            const Value* fn = obj.find(callee.name);
            if (fn) return call_value(*fn, args, e.line);
          }
          template_error(e.line, "'" + obj.type_name() + "' object has no attribute '" + callee.name + "'");
        }
        Value fn = eval(callee, frame);
        return call_value(fn, eval_args(e, frame, 1), e.line);
      }
      case ExprKind::filter: {
        Value input = eval(*e.args[0], frame);
        return apply_filter(e.name, input, eval_args(e, frame, 1), e.line);
      }
      case ExprKind::test: {
        Value input = eval(*e.args[0], frame);
        bool result = apply_test(e.name, input, eval_args(e, frame, 1), e.line);
        return Value(e.op == "not" ? !result : result);
      }
      case ExprKind::unary: {
        Value v = eval(*e.args[0], frame);
        if (e.op == "not") return Value(!truthy(v));
        if (v.is_undefined()) undefined_error(v, e.line);
        if (!v.is_number()) template_error(e.line, "bad operand type for unary " + e.op + ": '" + v.type_name() + "'");
        if (e.op == "+") return v.is_bool() ? Value(int64_t{v.as_bool()}) : v;
        if (v.is_float()) return Value(-v.as_double());
        return Value(-(v.is_bool() ? int64_t{v.as_bool()} : v.as_int()));
      }
      case ExprKind::binary: return eval_binary(e, frame);
      case ExprKind::conditional: {
        if (truthy(eval(*e.args[0], frame))) return eval(*e.args[1], frame);
        return e.args[2] ? eval(*e.args[2], frame) : Value::undefined("");
      }
    }
    return Value();
  }

  Value eval_binary(const Expr& e, Frame& frame) {
    const std::string& op = e.op;
    Value a = eval(*e.args[0], frame);
    if (op == "and") return truthy(a) ? eval(*e.args[1], frame) : a;
    if (op == "or") return truthy(a) ? a : eval(*e.args[1], frame);
    Value b = eval(*e.args[1], frame);
    if (op == "==") return Value(equal(a, b));
    if (op == "!=") return Value(!equal(a, b));
    if (op == "in") return Value(py_contains(b, a, e.line));
    if (op == "not in") return Value(!py_contains(b, a, e.line));
    if (op == "~") return Value(to_str(a) + to_str(b));
    if (a.is_undefined()) undefined_error(a, e.line);
    if (b.is_undefined()) undefined_error(b, e.line);
    if (op == "<") return Value(compare(a, b, e.line) < 0);
    if (op == ">") return Value(compare(a, b, e.line) > 0);
    if (op == "<=") return Value(compare(a, b, e.line) <= 0);
    if (op == ">=") return Value(compare(a, b, e.line) >= 0);
    return arithmetic(op, a, b, e.line);
  }

  static Value arithmetic(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "+" && a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
    if (op == "+" && a.is_array() && b.is_array()) {
      Array out = a.as_array();
      out.insert(out.end(), b.as_array().begin(), b.as_array().end());
      return Value(std::move(out));
    }
    if (op == "+" && (a.is_string() || a.is_array()))  // CPython's message
      template_error(line, "can only concatenate " + a.type_name() + " (not \"" + b.type_name() + "\") to " +
                               a.type_name());
    if (op == "*" && (a.is_string() || a.is_array()) && b.is_int()) return repeat(a, b.as_int());
    if (op == "*" && a.is_int() && (b.is_string() || b.is_array())) return repeat(b, a.as_int());
    if (!a.is_number() || !b.is_number())
      template_error(line, "unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                               b.type_name() + "'");
    auto as_i = [](const Value& v) { return v.is_bool() ? int64_t{v.as_bool()} : v.as_int(); };
    bool ints = !a.is_float() && !b.is_float();
    double x = a.as_double(), y = b.as_double();
    if ((op == "/" || op == "//" || op == "%") && y == 0) template_error(line, "division by zero");
    if (op == "/") return Value(x / y);
    if (ints) {
      int64_t i = as_i(a), j = as_i(b);
      if (op == "+") return Value(i + j);
      if (op == "-") return Value(i - j);
      if (op == "*") return Value(i * j);
      if (op == "//") return Value(i / j - ((i % j != 0) && ((i < 0) != (j < 0))));
      if (op == "%") return Value(((i % j) + j) % j);
      if (op == "**") {
        if (j < 0) return Value(std::pow(x, y));
        int64_t r = 1;
        for (int64_t k = 0; k < j; ++k) r *= i;
        return Value(r);
      }
    }
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "//") return Value(std::floor(x / y));
    if (op == "%") {
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value(m);
    }
    if (op == "**") return Value(std::pow(x, y));
    template_error(line, "unknown operator '" + op + "'");
  }

  static Value repeat(const Value& v, int64_t n) {
    if (v.is_string()) {
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += v.as_string();
      return Value(std::move(out));
    }
    Array out;
    for (int64_t i = 0; i < n; ++i) out.insert(out.end(), v.as_array().begin(), v.as_array().end());
    return Value(std::move(out));
  }
};

}  // namespace

std::string render_template(const Body& body, const Value& context) {
  return Interpreter(context).run(body);
}

}  // namespace bf::jinja
