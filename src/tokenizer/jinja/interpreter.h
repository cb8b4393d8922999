// Walks a parsed template against a context and produces the rendered text.
// Scoping follows Jinja: `set` binds in the innermost frame, each for-loop iteration and
// each macro call gets a fresh frame (hence namespace() for state that outlives them), and
// a macro sees the variables of the frame it was defined in as they are at call time.
#pragma once

#include <string>

#include "tokenizer/jinja/ast.h"

namespace bf::jinja {

std::string render_template(const Body& body, const Value& context);

}  // namespace bf::jinja
