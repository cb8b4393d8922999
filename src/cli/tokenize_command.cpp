// `blockflash tokenize --model DIR --text TEXT [--json]` and
// `blockflash detokenize --model DIR --ids 1,2,3 [--json]`.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace bf::cli {

std::vector<int32_t> parse_id_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(start, end - start);
    size_t first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    BF_CHECK(!item.empty(), "empty entry in id list '", text, "'");
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    BF_CHECK(used == item.size() && value >= 0 && value < (1LL << 31), "bad token id '", item,
             "' in '", text, "' (expected non-negative integers separated by commas)");
    ids.push_back(static_cast<int32_t>(value));
    start = end + 1;
  }
  return ids;
}

Command add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string model, text;
    bool json = false, no_special = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("tokenize", "Turn text into token ids");
  sub->add_option("--model", options->model, "Model directory (with tokenizer.json)")->required();
  sub->add_option("--text", options->text, "Text to tokenize")->required();
  sub->add_flag("--json", options->json, "Print {\"ids\": [...]}");
  sub->add_flag("--no-special", options->no_special,
                "Treat special-token text as plain text");
  return [options]() {
    Tokenizer tokenizer = Tokenizer::from_model_dir(options->model);
    std::vector<int32_t> ids = tokenizer.encode(options->text, !options->no_special);
    if (options->json) {
      std::cout << nlohmann::json{{"ids", ids}}.dump() << std::endl;
    } else {
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
      std::cout << std::endl;
    }
    return 0;
  };
}

Command add_detokenize_command(CLI::App& app) {
  struct Options {
    std::string model, ids;
    bool json = false, skip_special = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("detokenize", "Turn token ids into text");
  sub->add_option("--model", options->model, "Model directory (with tokenizer.json)")->required();
  sub->add_option("--ids", options->ids, "Comma-separated token ids")->required();
  sub->add_flag("--json", options->json, "Print {\"text\": \"...\"}");
  sub->add_flag("--skip-special-tokens", options->skip_special, "Drop special tokens");
  return [options]() {
    Tokenizer tokenizer = Tokenizer::from_model_dir(options->model);
    std::string text = tokenizer.decode(parse_id_list(options->ids), options->skip_special);
    if (options->json)
      std::cout << nlohmann::json{{"text", text}}.dump(-1, ' ', false,
                                                       nlohmann::json::error_handler_t::replace)
                << std::endl;
    else
      std::cout << text << std::endl;
    return 0;
  };
}

}  // namespace bf::cli
