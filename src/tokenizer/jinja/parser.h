// Tokens -> statement tree. Recursive descent with Jinja's operator precedence
// (or < and < not < comparisons < + - < ~ < * / // % < ** < unary < filters/tests/calls).
#pragma once

#include <string>

#include "tokenizer/jinja/ast.h"

namespace bf::jinja {

Body parse_template(const std::string& source);

}  // namespace bf::jinja
