// blockflash: one binary with subcommands (generate, tokenize, detokenize, serve, bench, env).
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"blockflash: Qwen3.5 / Qwen3.6 inference with DFlash speculative decoding"};
  app.require_subcommand(1);
  std::map<CLI::App*, bf::cli::Command> commands;
  auto add = [&](bf::cli::Command (*adder)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    bf::cli::Command command = adder(app);
    commands[app.get_subcommands({})[before]] = std::move(command);
  };
  add(bf::cli::add_generate_command);
  add(bf::cli::add_tokenize_command);
  add(bf::cli::add_detokenize_command);
  add(bf::cli::add_serve_command);
  add(bf::cli::add_bench_command);
  add(bf::cli::add_env_command);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [subcommand, command] : commands)
      if (subcommand->parsed()) return command();
  } catch (const bf::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 2;
  }
  return 1;
}
