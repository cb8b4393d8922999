// The parsed form of a chat template: expressions and statements as plain tagged structs.
// One struct per category (Expr, Stmt) with a kind tag keeps the parser and interpreter as
// two switch statements instead of a class hierarchy; every node keeps its source line.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace bf::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  literal,    // value
  name,       // name
  list,       // args
  tuple,      // args
  dict,       // args = key0, value0, key1, value1...
  attribute,  // args[0].name
  subscript,  // args[0][args[1]]
  slice,      // args[0][args[1]:args[2]:args[3]], missing bounds are null
  call,       // args[0](args[1:], kwargs)
  filter,     // name: args[0] | name(args[1:], kwargs)
  test,       // name: args[0] is name(args[1:]); negated when op == "not"
  unary,      // op args[0]: "not", "-", "+"
  binary,     // args[0] op args[1]
  conditional,  // args[1] if args[0] else args[2] (args[2] may be null)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  std::string name;  // variable, attribute, filter or test name
  std::string op;
  Value value;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  text,       // text
  output,     // {{ expr }}
  if_,        // branches: (cond, body)...; a null cond is the else branch
  for_,       // targets in expr [if cond]: body [else else_body]
  set,        // targets = expr; or attribute target (ns.x = expr); or block set (body)
  macro,      // name(params with defaults): body
  call_block, // {% call expr %}body{% endcall %}
  filter_block,  // {% filter expr %}body{% endfilter %}, expr is a filter chain on a null
  break_,
  continue_,
  scope,      // a body that only groups statements ({% generation %})
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;  // loop/set variables; for set on ns.x: {"ns", "x"}
  bool attribute_target = false;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::string name;                                   // macro name
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro params, defaults may be null
};

}  // namespace bf::jinja
