// Chat-template renderer vs. Python jinja2 as transformers runs it: every case in
// tests/data/chat_templates/goldens.json (made by tools/make_chat_template_goldens.py)
// must render byte-identically, or fail with the same message. Plus unit checks of
// whitespace control, scoping and error reporting that goldens do not pin down.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace {

using nlohmann::ordered_json;

const std::string kDataDir = std::string(BLOCKFLASH_TEST_DATA_DIR) + "/data/chat_templates/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string render(const std::string& source, const ordered_json& context = ordered_json::object()) {
  return bf::ChatTemplate::parse(source).render(context);
}

TEST(ChatTemplate, Goldens) {
  ordered_json goldens = ordered_json::parse(read_file(kDataDir + "goldens.json"));
  ASSERT_GT(goldens.size(), 50u);
  std::map<std::string, bf::ChatTemplate> templates;
  for (const auto& g : goldens) {
    std::string name = g["template"];
    if (!templates.count(name)) templates.emplace(name, bf::ChatTemplate::parse(read_file(kDataDir + name + ".jinja")));
    const bf::ChatTemplate& t = templates.at(name);
    SCOPED_TRACE(g["name"].get<std::string>());
    if (g.contains("expected")) {
      std::string got;
      try {
        got = t.render(g["context"]);
      } catch (const bf::Error& e) {
        ADD_FAILURE() << "threw: " << e.what();
        continue;
      }
      std::string want = g["expected"];
      if (got != want) {
        size_t at = 0;
        while (at < got.size() && at < want.size() && got[at] == want[at]) ++at;
        size_t from = at < 80 ? 0 : at - 80;
        ADD_FAILURE() << "first difference at byte " << at << "\n got: " << got.substr(from, 160)
                      << "\nwant: " << want.substr(from, 160);
      }
    } else {
      std::string want = g["error"];
      try {
        t.render(g["context"]);
        ADD_FAILURE() << "expected error: " << want;
      } catch (const bf::Error& e) {
        EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      }
    }
  }
}

TEST(ChatTemplate, WhitespaceControl) {
  // trim_blocks + lstrip_blocks, as transformers configures Jinja.
  EXPECT_EQ(render("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a\n  {{ 'x' }}\nb"), "a\n  x\nb");  // no trimming around {{ }}
  EXPECT_EQ(render("  {%+ if true %}x{% endif +%}\ny"), "  x\ny");
  EXPECT_EQ(render("a\n  {# note #}\nb"), "a\nb");
}

TEST(ChatTemplate, Scoping) {
  // A for-loop body gets a fresh scope each iteration; namespace() outlives it.
  EXPECT_EQ(render("{% set x = 5 %}{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}"), "[5][5]5");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"),
            "3");
  // Macros see globals as they are at call time.
  EXPECT_EQ(render("{% macro m() %}{{ y }}{% endmacro %}{% set y = 1 %}{{ m() }}{% set y = 2 %}{{ m() }}"), "12");
}

TEST(ChatTemplate, UndefinedBehaviour) {
  EXPECT_EQ(render("[{{ missing }}]{{ missing is defined }}{{ missing is undefined }}{{ 'y' if not missing }}"),
            "[]FalseTruey");
  EXPECT_EQ(render("{{ d.nope is defined }}", {{"d", ordered_json::object()}}), "False");
  EXPECT_THROW(render("{{ missing.attr }}"), bf::Error);
  EXPECT_THROW(render("{{ missing + 1 }}"), bf::Error);
}

TEST(ChatTemplate, KeepsKeyOrderForToJson) {
  ordered_json ctx = ordered_json::parse(R"({"t": {"z": 1, "a": [1.0, "é<"]}})");
  EXPECT_EQ(render("{{ t | tojson }}", ctx), "{\"z\": 1, \"a\": [1.0, \"é<\"]}");
  nlohmann::json sorted = nlohmann::json::parse(R"({"t": {"z": 1, "a": 2}})");
  EXPECT_EQ(bf::ChatTemplate::parse("{{ t | tojson }}").render(sorted), "{\"a\": 2, \"z\": 1}");
}

TEST(ChatTemplate, Errors) {
  try {
    render("line one\n{{ raise_exception('boom: ' ~ 42) }}");
    FAIL();
  } catch (const bf::Error& e) {
    EXPECT_STREQ(e.what(), "boom: 42");
  }
  try {
    bf::ChatTemplate::parse("a\nb\n{% if x %}\nunclosed");
    FAIL();
  } catch (const bf::Error& e) {
    EXPECT_NE(std::string(e.what()).find("line"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("endif"), std::string::npos) << e.what();
  }
  try {
    render("a\n\n{{ 1 + }}");
    FAIL();
  } catch (const bf::Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), bf::Error);  // no stack overflow
  try {
    bf::ChatTemplate::parse("\n{% if false %}{{ [1] | no_such_filter }}{% endif %}");  // caught at parse, as Jinja
    FAIL();
  } catch (const bf::Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2: unknown filter 'no_such_filter'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(bf::ChatTemplate::parse("{% for x in y %}"), bf::Error);
  EXPECT_THROW(bf::ChatTemplate::parse("{{ 'unterminated }}"), bf::Error);
  EXPECT_THROW(bf::ChatTemplate::parse("{% endif %}"), bf::Error);
}

}  // namespace
