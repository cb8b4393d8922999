// Subcommands of the blockflash binary. Each registers its flags on a CLI11 subcommand and
// returns the callback that runs it; main() dispatches. Errors the user can cause are
// bf::Error: main prints "error: <message>" and exits non-zero.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "core/error.h"

namespace bf::cli {

using Command = std::function<int()>;

Command add_generate_command(CLI::App& app);
Command add_tokenize_command(CLI::App& app);
Command add_detokenize_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_env_command(CLI::App& app);

// Parses "1,2,3" (spaces allowed) into token ids; bf::Error naming the bad entry.
std::vector<int32_t> parse_id_list(const std::string& text);

}  // namespace bf::cli
