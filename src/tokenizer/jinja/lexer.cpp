// Two passes: split the source into text and tags (applying -, +, trim_blocks and
// lstrip_blocks to the neighbouring text), then split each tag's inside into expression
// tokens. Comments vanish in the first pass but still trim like blocks, as in Jinja.
#include "tokenizer/jinja/lexer.h"

#include <cctype>
#include <cstring>

#include "tokenizer/jinja/value.h"

namespace bf::jinja {
namespace {

enum class PieceKind { text, var, block, comment };

struct Piece {
  PieceKind kind;
  std::string content;
  int line;
  char left_marker = 0;   // '-' or '+' right after the opening delimiter
  char right_marker = 0;  // '-' or '+' right before the closing delimiter
};

int count_lines(const std::string& s, size_t begin, size_t end) {
  int n = 0;
  for (size_t i = begin; i < end && i < s.size(); ++i) n += s[i] == '\n';
  return n;
}

// Finds the closing delimiter of a {{ or {% tag, skipping string literals; returns the
// index of the delimiter's first character.
size_t find_tag_end(const std::string& s, size_t pos, const char* close, int line) {
  char quote = 0;
  for (size_t i = pos; i + 1 < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == '\\') ++i;
      else if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == close[0] && s[i + 1] == close[1]) {
      return i;
    }
  }
  template_error(line, std::string("unclosed tag, expected '") + close + "'");
}

std::vector<Piece> split_pieces(const std::string& s) {
  std::vector<Piece> pieces;
  size_t pos = 0;
  int line = 1;
  while (pos < s.size()) {
    size_t open = pos;
    while (true) {
      open = s.find('{', open);
      if (open == std::string::npos || open + 1 >= s.size()) { open = std::string::npos; break; }
      char c = s[open + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++open;
    }
    size_t text_end = open == std::string::npos ? s.size() : open;
    if (text_end > pos) pieces.push_back({PieceKind::text, s.substr(pos, text_end - pos), line});
    line += count_lines(s, pos, text_end);
    if (open == std::string::npos) break;
    char c = s[open + 1];
    Piece tag{c == '{' ? PieceKind::var : c == '%' ? PieceKind::block : PieceKind::comment, "", line};
    size_t inner = open + 2;
    if (inner < s.size() && (s[inner] == '-' || s[inner] == '+')) tag.left_marker = s[inner++];
    size_t close;
    if (tag.kind == PieceKind::comment) {
      close = s.find("#}", inner);
      if (close == std::string::npos) template_error(line, "unclosed comment");
    } else {
      close = find_tag_end(s, inner, tag.kind == PieceKind::var ? "}}" : "%}", line);
    }
    size_t content_end = close;
    if (content_end > inner && (s[content_end - 1] == '-' || s[content_end - 1] == '+')) {
      tag.right_marker = s[content_end - 1];
      --content_end;
    }
    tag.content = s.substr(inner, content_end - inner);
    line += count_lines(s, open, close + 2);
    pos = close + 2;
    // {% raw %}: everything up to {% endraw %} is text.
    if (tag.kind == PieceKind::block) {
      size_t b = tag.content.find_first_not_of(" \t\r\n");
      size_t e = tag.content.find_last_not_of(" \t\r\n");
      if (b != std::string::npos && tag.content.substr(b, e - b + 1) == "raw") {
        size_t end_tag = s.find("endraw", pos);
        size_t end_open = end_tag == std::string::npos ? end_tag : s.rfind("{%", end_tag);
        size_t end_close = end_tag == std::string::npos ? end_tag : s.find("%}", end_tag);
        if (end_close == std::string::npos || end_open < pos) template_error(line, "unclosed raw block");
        pieces.push_back(tag);  // keeps whitespace control of the opening tag
        pieces.back().kind = PieceKind::comment;
        pieces.push_back({PieceKind::text, s.substr(pos, end_open - pos), line});
        // {% endraw %} trims like any block tag, so it stays as a content-free piece.
        Piece end_raw{PieceKind::comment, "", line};
        if (s[end_open + 2] == '-' || s[end_open + 2] == '+') end_raw.left_marker = s[end_open + 2];
        if (s[end_close - 1] == '-' || s[end_close - 1] == '+') end_raw.right_marker = s[end_close - 1];
        pieces.push_back(end_raw);
        line += count_lines(s, pos, end_close + 2);
        pos = end_close + 2;
        continue;
      }
    }
    pieces.push_back(std::move(tag));
  }
  return pieces;
}

void apply_whitespace_control(std::vector<Piece>& pieces) {
  for (size_t i = 0; i < pieces.size(); ++i) {
    Piece& tag = pieces[i];
    if (tag.kind == PieceKind::text) continue;
    bool is_block = tag.kind != PieceKind::var;
    if (i > 0 && pieces[i - 1].kind == PieceKind::text) {
      std::string& prev = pieces[i - 1].content;
      if (tag.left_marker == '-') {
        prev.erase(prev.find_last_not_of(" \t\r\n\f\v") + 1);
      } else if (is_block && tag.left_marker != '+') {
        // lstrip_blocks: drop spaces and tabs between the line start and the tag.
        size_t nl = prev.rfind('\n');
        size_t start = nl == std::string::npos ? 0 : nl + 1;
        bool line_start = nl != std::string::npos || i == 1;
        if (line_start && prev.find_first_not_of(" \t", start) == std::string::npos) prev.erase(start);
      }
    }
    if (i + 1 < pieces.size() && pieces[i + 1].kind == PieceKind::text) {
      std::string& next = pieces[i + 1].content;
      if (tag.right_marker == '-') {
        size_t keep = next.find_first_not_of(" \t\r\n\f\v");
        next.erase(0, keep == std::string::npos ? next.size() : keep);
      } else if (is_block && tag.right_marker != '+') {
        // trim_blocks: drop the first newline after a block tag.
        if (next.compare(0, 1, "\n") == 0) next.erase(0, 1);
        else if (next.compare(0, 2, "\r\n") == 0) next.erase(0, 2);
      }
    }
  }
}

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

void tokenize_tag(const std::string& s, int line, std::vector<Token>& out) {
  static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "=",
                              "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "~"};
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == '\n') { ++line; ++i; continue; }
    if (std::isspace(static_cast<unsigned char>(c))) { ++i; continue; }
    if (is_name_start(c)) {
      size_t j = i;
      while (j < s.size() && is_name_char(s[j])) ++j;
      out.push_back({TokenKind::name, s.substr(i, j - i), line});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num;
      for (size_t k = i; k < j; ++k)
        if (s[k] != '_') num += s[k];
      out.push_back({is_float ? TokenKind::floating : TokenKind::integer, num, line});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\n') ++line;
        if (s[j] != '\\' || j + 1 >= s.size()) { value += s[j]; continue; }
        char e = s[++j];
        switch (e) {
          case 'n': value += '\n'; break;
          case 't': value += '\t'; break;
          case 'r': value += '\r'; break;
          case '0': value += '\0'; break;
          case 'b': value += '\b'; break;
          case 'f': value += '\f'; break;
          case '\\': case '\'': case '"': value += e; break;
          case 'u': case 'x': {
            size_t len = e == 'u' ? 4 : 2;
            uint32_t cp = static_cast<uint32_t>(std::stoul(s.substr(j + 1, len), nullptr, 16));
            j += len;
            if (cp < 0x80) value += static_cast<char>(cp);
            else if (cp < 0x800) { value += static_cast<char>(0xC0 | (cp >> 6)); value += static_cast<char>(0x80 | (cp & 0x3F)); }
            else { value += static_cast<char>(0xE0 | (cp >> 12)); value += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)); value += static_cast<char>(0x80 | (cp & 0x3F)); }
            break;
          }
          default: value += '\\'; value += e;  // Python keeps unknown escapes verbatim
        }
      }
      if (j >= s.size()) template_error(line, "unterminated string literal");
      out.push_back({TokenKind::string, value, line});
      i = j + 1;
    } else {
      bool matched = false;
      for (const char* op : ops) {
        size_t n = std::strlen(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({TokenKind::op, op, line});
          i += n;
          matched = true;
          break;
        }
      }
      if (!matched) template_error(line, std::string("unexpected character '") + c + "'");
    }
  }
}

}  // namespace

std::vector<Token> tokenize(const std::string& source) {
  std::vector<Piece> pieces = split_pieces(source);
  apply_whitespace_control(pieces);
  std::vector<Token> tokens;
  for (const Piece& p : pieces) {
    switch (p.kind) {
      case PieceKind::text:
        if (!p.content.empty()) tokens.push_back({TokenKind::text, p.content, p.line});
        break;
      case PieceKind::comment: break;
      case PieceKind::var:
      case PieceKind::block: {
        bool var = p.kind == PieceKind::var;
        tokens.push_back({var ? TokenKind::var_begin : TokenKind::block_begin, "", p.line});
        tokenize_tag(p.content, p.line, tokens);
        tokens.push_back({var ? TokenKind::var_end : TokenKind::block_end, "", tokens.back().line});
        break;
      }
    }
  }
  tokens.push_back({TokenKind::eof, "", tokens.empty() ? 1 : tokens.back().line});
  return tokens;
}

}  // namespace bf::jinja
