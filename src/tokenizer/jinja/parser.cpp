// Recursive-descent parser for the Jinja subset HF chat templates use. Block statements
// are parsed by a loop that stops at the end tags its caller names ("endfor", "else"...),
// which is how Jinja's own parser nests if/for/macro bodies.
#include "tokenizer/jinja/parser.h"

#include <initializer_list>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/lexer.h"

namespace bf::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body parse_all() {
    Body body = parse_body({});
    if (peek().kind != TokenKind::eof) error("unexpected '" + peek_block_name() + "' tag");
    return body;
  }

 private:
  std::vector<Token> tokens_;
  size_t pos_ = 0;

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[pos_ < tokens_.size() - 1 ? pos_++ : pos_]; }
  [[noreturn]] void error(const std::string& message) const { template_error(peek().line, message); }

  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::op && peek(ahead).text == op;
  }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::name && peek(ahead).text == name;
  }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++pos_;
    return true;
  }
  bool accept_name(const char* name) {
    if (!is_name(name)) return false;
    ++pos_;
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) error(std::string("expected '") + op + "', got '" + peek().text + "'");
  }
  std::string expect_name() {
    if (peek().kind != TokenKind::name) error("expected a name, got '" + peek().text + "'");
    return next().text;
  }
  void expect_kind(TokenKind kind, const char* what) {
    if (peek().kind != kind) error(std::string("expected ") + what + ", got '" + peek().text + "'");
    ++pos_;
  }
  std::string peek_block_name() const {
    return peek().kind == TokenKind::block_begin ? peek(1).text : peek().text;
  }

  ExprPtr make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ----

  // Parses until eof or a block tag whose name is in `ends` (left unconsumed).
  Body parse_body(std::initializer_list<const char*> ends) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.kind == TokenKind::eof) {
        if (ends.size()) error(std::string("missing '{% ") + *(ends.end() - 1) + " %}'");
        return body;
      }
      if (t.kind == TokenKind::text) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::text;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        ++pos_;
      } else if (t.kind == TokenKind::var_begin) {
        ++pos_;
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::output;
        s->line = t.line;
        s->expr = parse_tuple_or_expr();
        expect_kind(TokenKind::var_end, "'}}'");
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::block_begin) {
        for (const char* end : ends)
          if (is_name(end, 1)) return body;
        ++pos_;
        body.push_back(parse_statement());
      } else {
        error("unexpected '" + t.text + "'");
      }
    }
  }

  void end_tag() { expect_kind(TokenKind::block_end, "'%}'"); }
  void consume_end(const char* name) {
    expect_kind(TokenKind::block_begin, "'{%'");
    if (!accept_name(name)) error(std::string("expected '") + name + "'");
    end_tag();
  }

  StmtPtr parse_statement() {
    int line = peek().line;
    std::string keyword = expect_name();
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (keyword == "if") {
      s->kind = StmtKind::if_;
      ExprPtr cond = parse_expr();
      end_tag();
      while (true) {
        Body body = parse_body({"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(body));
        expect_kind(TokenKind::block_begin, "'{%'");
        std::string tag = expect_name();
        if (tag == "endif") break;
        if (tag == "elif") {
          cond = parse_expr();
        } else {
          cond = nullptr;
          end_tag();
          s->branches.emplace_back(nullptr, parse_body({"endif"}));
          consume_end("endif");
          return s;
        }
        end_tag();
      }
      end_tag();
    } else if (keyword == "for") {
      s->kind = StmtKind::for_;
      do {
        s->targets.push_back(expect_name());
      } while (accept_op(","));
      if (!accept_name("in")) error("expected 'in'");
      s->expr = parse_or();  // `if` after the iterable filters, so no conditional here
      if (accept_name("if")) s->cond = parse_expr();
      if (accept_name("recursive")) error("recursive loops are not supported");
      end_tag();
      s->body = parse_body({"else", "endfor"});
      if (is_name("else", 1)) {
        pos_ += 2;
        end_tag();
        s->else_body = parse_body({"endfor"});
      }
      consume_end("endfor");
    } else if (keyword == "set") {
      s->kind = StmtKind::set;
      s->targets.push_back(expect_name());
      if (accept_op(".")) {
        s->attribute_target = true;
        s->targets.push_back(expect_name());
      } else {
        while (accept_op(",")) s->targets.push_back(expect_name());
      }
      if (accept_op("=")) {
        s->expr = parse_tuple_or_expr();
        end_tag();
      } else {
        // Block set: {% set x %}...{% endset %}, optionally with a filter chain.
        if (is_op("|")) s->cond = parse_filters(nullptr);
        end_tag();
        s->body = parse_body({"endset"});
        consume_end("endset");
      }
    } else if (keyword == "macro") {
      s->kind = StmtKind::macro;
      s->name = expect_name();
      expect_op("(");
      while (!accept_op(")")) {
        std::string param = expect_name();
        ExprPtr def;
        if (accept_op("=")) def = parse_expr();
        s->params.emplace_back(param, std::move(def));
        if (!is_op(")")) expect_op(",");
      }
      end_tag();
      s->body = parse_body({"endmacro"});
      consume_end("endmacro");
    } else if (keyword == "call") {
      s->kind = StmtKind::call_block;
      s->expr = parse_expr();
      end_tag();
      s->body = parse_body({"endcall"});
      consume_end("endcall");
    } else if (keyword == "filter") {
      s->kind = StmtKind::filter_block;
      s->expr = parse_filter_chain_head();
      end_tag();
      s->body = parse_body({"endfilter"});
      consume_end("endfilter");
    } else if (keyword == "generation") {
      // HF's AssistantTracker tag: renders its body unchanged.
      s->kind = StmtKind::scope;
      end_tag();
      s->body = parse_body({"endgeneration"});
      consume_end("endgeneration");
    } else if (keyword == "break" || keyword == "continue") {
      s->kind = keyword == "break" ? StmtKind::break_ : StmtKind::continue_;
      end_tag();
    } else {
      template_error(line, "unknown tag '" + keyword + "'");
    }
    return s;
  }

  // `{% filter upper|trim %}`: a filter chain applied to a placeholder.
  ExprPtr parse_filter_chain_head() {
    ExprPtr e = make(ExprKind::filter, peek().line);
    e->name = expect_name();
    if (!is_known_filter(e->name)) error("unknown filter '" + e->name + "'");
    e->args.push_back(nullptr);
    parse_call_args(*e);
    return parse_filters(std::move(e));
  }

  // ---- expressions ----

  ExprPtr parse_tuple_or_expr() {
    int line = peek().line;
    ExprPtr first = parse_expr();
    if (!is_op(",")) return first;
    ExprPtr t = make(ExprKind::tuple, line);
    t->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (peek().kind == TokenKind::var_end || peek().kind == TokenKind::block_end) break;
      t->args.push_back(parse_expr());
    }
    return t;
  }

  ExprPtr parse_expr() {
    ExprPtr e = parse_or();
    while (is_name("if")) {
      int line = next().line;
      ExprPtr c = make(ExprKind::conditional, line);
      ExprPtr cond = parse_or();
      ExprPtr other = accept_name("else") ? parse_expr() : nullptr;
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, int line) {
    ExprPtr e = make(ExprKind::binary, line);
    e->op = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      int line = next().line;
      e = binary("or", std::move(e), parse_and(), line);
    }
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      int line = next().line;
      e = binary("and", std::move(e), parse_not(), line);
    }
    return e;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      ExprPtr e = make(ExprKind::unary, next().line);
      e->op = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    while (true) {
      int line = peek().line;
      std::string op;
      if (peek().kind == TokenKind::op &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == ">" ||
           peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (accept_name("in")) {
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        pos_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), parse_math1(), line);
    }
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      e = binary(t.text, std::move(e), parse_concat(), t.line);
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      int line = next().line;
      e = binary("~", std::move(e), parse_math2(), line);
    }
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      e = binary(t.text, std::move(e), parse_pow(), t.line);
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      int line = next().line;
      e = binary("**", std::move(e), parse_unary(true), line);
    }
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      e = make(ExprKind::unary, t.line);
      e->op = t.text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) return parse_filters(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    int line = t.line;
    if (t.kind == TokenKind::name) {
      ++pos_;
      ExprPtr e = make(ExprKind::literal, line);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value(None{});
      else {
        e->kind = ExprKind::name;
        e->name = t.text;
      }
      return e;
    }
    if (t.kind == TokenKind::string) {
      std::string s;
      while (peek().kind == TokenKind::string) s += next().text;  // adjacent literals join
      ExprPtr e = make(ExprKind::literal, line);
      e->value = Value(std::move(s));
      return e;
    }
    if (t.kind == TokenKind::integer || t.kind == TokenKind::floating) {
      ++pos_;
      ExprPtr e = make(ExprKind::literal, line);
      e->value = t.kind == TokenKind::integer ? Value(static_cast<int64_t>(std::stoll(t.text)))
                                              : Value(std::stod(t.text));
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) return make(ExprKind::tuple, line);
      ExprPtr first = parse_expr();
      if (accept_op(")")) return first;
      ExprPtr tuple = make(ExprKind::tuple, line);
      tuple->args.push_back(std::move(first));
      while (accept_op(",")) {
        if (is_op(")")) break;
        tuple->args.push_back(parse_expr());
      }
      expect_op(")");
      return tuple;
    }
    if (accept_op("[")) {
      ExprPtr list = make(ExprKind::list, line);
      while (!accept_op("]")) {
        list->args.push_back(parse_expr());
        if (!is_op("]")) expect_op(",");
      }
      return list;
    }
    if (accept_op("{")) {
      ExprPtr dict = make(ExprKind::dict, line);
      while (!accept_op("}")) {
        dict->args.push_back(parse_expr());
        expect_op(":");
        dict->args.push_back(parse_expr());
        if (!is_op("}")) expect_op(",");
      }
      return dict;
    }
    error("unexpected '" + (t.text.empty() ? std::string("end of tag") : t.text) + "'");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      int line = peek().line;
      if (accept_op(".")) {
        ExprPtr a = make(ExprKind::attribute, line);
        if (peek().kind == TokenKind::integer) {  // x.0 is x[0] in Jinja
          a->kind = ExprKind::subscript;
          a->args.push_back(std::move(e));
          a->args.push_back(parse_primary());
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (accept_op("[")) {
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        ExprPtr call = make(ExprKind::call, line);
        call->args.push_back(std::move(e));
        parse_call_args(*call);
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target, int line) {
    ExprPtr parts[3];
    int part = 0;
    bool is_slice = false;
    while (!accept_op("]")) {
      if (accept_op(":")) {
        is_slice = true;
        if (++part > 2) error("too many ':' in slice");
        continue;
      }
      if (parts[part]) error("expected ']'");
      parts[part] = parse_expr();
    }
    ExprPtr e = make(is_slice ? ExprKind::slice : ExprKind::subscript, line);
    e->args.push_back(std::move(target));
    if (!is_slice && !parts[0]) error("empty subscript");
    for (int i = 0; i < (is_slice ? 3 : 1); ++i) e->args.push_back(std::move(parts[i]));
    return e;
  }

  // (a, b, key=c) appended to e.args / e.kwargs; no parentheses means no arguments.
  void parse_call_args(Expr& e) {
    if (!accept_op("(")) return;
    while (!accept_op(")")) {
      if (peek().kind == TokenKind::name && is_op("=", 1)) {
        std::string key = next().text;
        ++pos_;
        e.kwargs.emplace_back(key, parse_expr());
      } else {
        if (!e.kwargs.empty()) error("positional argument after keyword argument");
        e.args.push_back(parse_expr());
      }
      if (!is_op(")")) expect_op(",");
    }
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      int line = peek().line;
      if (accept_op("|")) {
        ExprPtr f = make(ExprKind::filter, line);
        f->name = expect_name();
        if (!is_known_filter(f->name)) template_error(line, "unknown filter '" + f->name + "'");
        f->args.push_back(std::move(e));
        parse_call_args(*f);
        e = std::move(f);
      } else if (accept_name("is")) {
        ExprPtr t = make(ExprKind::test, line);
        if (accept_name("not")) t->op = "not";
        t->name = expect_name();
        if (!is_known_test(t->name)) template_error(line, "unknown test '" + t->name + "'");
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if ((peek().kind == TokenKind::name && !is_name("else") && !is_name("or") &&
                    !is_name("and") && !is_name("if") && !is_name("is") && !is_name("in") &&
                    !is_name("not")) ||
                   peek().kind == TokenKind::string || peek().kind == TokenKind::integer ||
                   peek().kind == TokenKind::floating || is_op("[") || is_op("{")) {
          t->args.push_back(parse_postfix(parse_primary()));  // `is divisibleby 3`
        }
        e = std::move(t);
      } else if (is_op("(")) {
        ExprPtr call = make(ExprKind::call, line);
        call->args.push_back(std::move(e));
        parse_call_args(*call);
        e = std::move(call);
      } else {
        return e;
      }
    }
  }
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(tokenize(source)).parse_all(); }

}  // namespace bf::jinja
