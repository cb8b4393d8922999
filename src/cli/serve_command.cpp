// `blockflash serve MODEL_DIR`: the OpenAI-compatible HTTP server, flags named as
// `vllm serve`'s. Loads the engine, runs it on its own thread (AsyncEngine) and serves until
// SIGINT / SIGTERM, which a dedicated thread turns into a clean stop.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <thread>

#include "cli/commands.h"
#include "cli/engine_setup.h"
#include "core/log.h"
#include "engine/async_engine.h"
#include "server/http_server.h"

namespace bf::cli {
namespace {

// SIGINT / SIGTERM write a byte here (async-signal-safe); a watcher thread reads it and stops
// the server. A handler rather than sigwait: threads that exist before main (OpenBLAS's)
// would otherwise receive the signal with its default action.
int stop_pipe[2] = {-1, -1};

void on_stop_signal(int signal) {
  unsigned char byte = static_cast<unsigned char>(signal);
  ssize_t ignored = write(stop_pipe[1], &byte, 1);
  (void)ignored;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  struct Options {
    EngineOptions engine;
    std::string model_positional;
    server::ServerOptions server;
    int32_t max_queue = 0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  sub->add_option("model_dir", o->model_positional, "Model directory (Hugging Face checkpoint)");
  sub->add_option("--model", o->engine.model, "Model directory (instead of the positional argument)");
  sub->add_option("--host", o->server.host, "Address to listen on")->capture_default_str();
  sub->add_option("--port", o->server.port, "Port to listen on (0: any free port)")->capture_default_str();
  sub->add_option("--served-model-name", o->server.served_model_names,
                  "Model name(s) in the API; the first is reported (default: the model path)");
  sub->add_option("--api-key", o->server.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1/* (default: $VLLM_API_KEY or "
                  "$BLOCKFLASH_API_KEY)");
  sub->add_option("--max-queue", o->max_queue,
                  "Most requests queued or running; beyond it requests get 503 (0: no limit)")
      ->capture_default_str();
  sub->add_option("--max-body-bytes", o->server.max_body_bytes,
                  "Largest request body; larger ones get 413")->capture_default_str();
  sub->add_option("--max-logprobs", o->engine.engine.max_logprobs,
                  "Most logprobs / top_logprobs / prompt_logprobs a request may ask for")
      ->capture_default_str();
  sub->add_option("--reasoning-parser", o->server.reasoning_parser,
                  "Split <think> reasoning into reasoning_content: qwen3 (or deepseek_r1), none, or "
                  "auto (on when the chat template mentions <think>)")
      ->capture_default_str();
  sub->add_option("--chat-template", o->server.chat_template,
                  "Chat template: a file, or the template text (default: the model's)");
  sub->add_option("--http-threads", o->server.http_threads,
                  "HTTP worker threads (0: 2 * max-num-seqs + 8, at least 32)")
      ->capture_default_str();
  add_engine_flags(sub, o->engine);

  return [o]() {
    if (!o->model_positional.empty()) {
      BF_CHECK(o->engine.model.empty() || o->engine.model == o->model_positional,
               "give the model once: positional MODEL_DIR or --model");
      o->engine.model = o->model_positional;
    }
    BF_CHECK(!o->engine.model.empty(), "usage: blockflash serve MODEL_DIR [flags]");
    BF_CHECK(o->max_queue >= 0, "--max-queue must be non-negative");
    BF_CHECK(o->server.max_body_bytes > 0, "--max-body-bytes must be positive");
    if (o->server.api_key.empty()) {
      for (const char* var : {"VLLM_API_KEY", "BLOCKFLASH_API_KEY"})
        if (const char* env = std::getenv(var); env && *env) {
          o->server.api_key = env;
          break;
        }
    }
    o->server.model_path = o->engine.model;

    // A client that disconnects mid-stream must fail the write, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);

    std::unique_ptr<Backend> backend;
    std::unique_ptr<Engine> engine = load_engine(o->engine, backend);
    AsyncEngine async_engine(std::move(engine), o->max_queue);
    server::ServerState state(async_engine, o->server);
    server::HttpServer http(state);
    http.bind();
    log_info("blockflash serve: model '", state.model_name(), "' on http://", o->server.host, ":",
             http.port(), " (max_model_len ", state.max_model_len(), ")");

    BF_CHECK(pipe(stop_pipe) == 0, "cannot create the shutdown pipe");
    std::thread watcher([&] {
      unsigned char signal = 0;
      if (read(stop_pipe[0], &signal, 1) == 1 && signal != 0)
        log_info("signal ", static_cast<int>(signal), ": shutting down");
      http.stop();
    });
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
    http.run();
    // run() returned (stopped by the watcher, or failed): make sure the watcher ends too.
    on_stop_signal(0);
    watcher.join();
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    return 0;
  };
}

}  // namespace bf::cli
