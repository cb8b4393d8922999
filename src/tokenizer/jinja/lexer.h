// Template source -> tokens. Whitespace control is resolved here, as Jinja does it with
// HF's settings (trim_blocks and lstrip_blocks on, plus `-` and `+` markers), so the parser
// only ever sees final text.
#pragma once

#include <string>
#include <vector>

namespace bf::jinja {

enum class TokenKind { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };

struct Token {
  TokenKind kind;
  std::string text;  // text, name, decoded string literal, number spelling or operator
  int line;
};

std::vector<Token> tokenize(const std::string& source);

}  // namespace bf::jinja
