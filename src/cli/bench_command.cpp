// `blockflash bench SUBCOMMAND`: benchmarks. `bench serve` is a load generator against a
// running OpenAI-compatible server with `vllm bench serve`'s flags (random dataset): the
// report table on stdout, (--json) one JSON object as the last line, (--result-file) the JSON
// in a file. Exits non-zero when the server cannot be reached or no request succeeded.
#include <csignal>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>

#include "cli/bench_serve.h"
#include "cli/bench_spec.h"
#include "cli/commands.h"

namespace bf::cli {
namespace {

double parse_rate(const std::string& text) {
  char* end = nullptr;
  double rate = std::strtod(text.c_str(), &end);
  BF_CHECK(!text.empty() && end == text.c_str() + text.size() && !std::isnan(rate) && rate > 0,
           "bad --request-rate '", text, "' (requests per second > 0, or inf)");
  return rate;
}

Command add_bench_serve(CLI::App* bench) {
  struct Options {
    bench::ServeOptions serve;
    std::string base_url, host = "127.0.0.1", backend = "openai", dataset = "random";
    std::optional<std::string> endpoint, served_model_name, api_key;
    int port = 8000;
    std::string request_rate = "inf", percentile_metrics = "ttft,tpot,itl", metric_percentiles = "99";
    std::string result_file;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  bench::ServeOptions& s = o->serve;
  CLI::App* sub = bench->add_subcommand(
      "serve", "Load-test a running OpenAI-compatible server (as `vllm bench serve`, random prompts)");
  auto* base_url = sub->add_option("--base-url", o->base_url,
                                   "Server URL, http(s)://HOST:PORT[/PREFIX] (default: from --host/--port)");
  sub->add_option("--host", o->host, "Server host")->capture_default_str()->excludes(base_url);
  sub->add_option("--port", o->port, "Server port")->capture_default_str()->excludes(base_url);
  sub->add_option("--endpoint", o->endpoint,
                  "API path: /v1/completions (token-id prompts) or /v1/chat/completions (word "
                  "prompts) (default: from --backend)");
  sub->add_option("--backend", o->backend, "openai or vllm (/v1/completions), openai-chat "
                                           "(/v1/chat/completions)")
      ->check(CLI::IsMember({"openai", "vllm", "openai-chat"}))
      ->capture_default_str();
  sub->add_option("--model", s.model, "Served model name (default: the first of GET /v1/models)");
  sub->add_option("--served-model-name", o->served_model_name, "Model name in requests (overrides --model)");
  sub->add_option("--api-key", o->api_key, "Sent as 'Authorization: Bearer KEY' (default: $OPENAI_API_KEY)");
  sub->add_option("--dataset-name", o->dataset, "Prompt source (only random)")
      ->check(CLI::IsMember({"random"}))
      ->capture_default_str();
  sub->add_option("--num-prompts", s.num_prompts, "Requests to send")->capture_default_str();
  sub->add_option("--max-concurrency", s.max_concurrency,
                  "Most requests in flight (default: no limit)");
  sub->add_option("--request-rate", o->request_rate,
                  "Requests per second (arrivals Poisson, or gamma with --burstiness); inf: all at once")
      ->capture_default_str();
  sub->add_option("--burstiness", s.burstiness,
                  "Shape of the gamma arrival intervals: 1 Poisson, < 1 burstier, > 1 more uniform")
      ->capture_default_str();
  sub->add_option("--seed", s.seed, "Seed of prompts and arrivals")->capture_default_str();
  sub->add_option("--random-input-len", s.input_len, "Prompt tokens per request")->capture_default_str();
  sub->add_option("--random-output-len", s.output_len, "Output tokens per request (max_tokens)")
      ->capture_default_str();
  sub->add_option("--random-range-ratio", s.range_ratio,
                  "Lengths uniform in [len*(1-r), len*(1+r)]")->capture_default_str();
  sub->add_option("--random-prefix-len", s.prefix_len, "Tokens of a random prefix shared by all prompts")
      ->capture_default_str();
  sub->add_option("--random-vocab-size", s.vocab_size, "Prompt token ids are drawn from [0, N)")
      ->capture_default_str();
  sub->add_flag("--ignore-eos,!--no-ignore-eos", s.ignore_eos,
                "Send ignore_eos so every request generates its full output length (default: on)");
  sub->add_option("--temperature", s.temperature, "Sampling temperature (default 0: greedy)");
  sub->add_option("--top-p", s.top_p);
  sub->add_option("--top-k", s.top_k);
  sub->add_option("--num-warmups", s.num_warmups, "Requests sent one by one before the benchmark")
      ->capture_default_str();
  sub->add_option("--request-timeout", s.request_timeout, "Seconds a request may wait for data")
      ->capture_default_str();
  sub->add_option("--ready-check-timeout-sec", s.ready_check_timeout,
                  "Seconds to wait for the server to answer before starting")->capture_default_str();
  sub->add_option("--percentile-metrics", o->percentile_metrics,
                  "Metrics reported with percentiles, of ttft,tpot,itl,e2el")->capture_default_str();
  sub->add_option("--metric-percentiles", o->metric_percentiles, "Percentiles to report, e.g. 50,90,99")
      ->capture_default_str();
  sub->add_flag("--json", o->json, "Print the result as one JSON object (last line of stdout)");
  sub->add_option("--result-file", o->result_file, "Write the result JSON to this file");

  return [o]() {
    bench::ServeOptions& s = o->serve;
    s.base_url = o->base_url.empty() ? "http://" + o->host + ":" + std::to_string(o->port) : o->base_url;
    s.endpoint = o->endpoint ? *o->endpoint
                             : (o->backend == "openai-chat" ? "/v1/chat/completions" : "/v1/completions");
    if (o->served_model_name) s.model = *o->served_model_name;
    if (o->api_key) {
      s.api_key = *o->api_key;
    } else if (const char* env = std::getenv("OPENAI_API_KEY"); env && *env) {
      s.api_key = env;
    }
    s.request_rate = parse_rate(o->request_rate);
    s.percentiles = bench::parse_percentiles(o->metric_percentiles);
    s.shown_metrics = bench::parse_metric_names(o->percentile_metrics);

    std::signal(SIGPIPE, SIG_IGN);  // a server that goes away fails a write, not the process
    bench::BenchOutcome outcome =
        bench::run_bench_serve(s, [](const std::string& line) { std::cerr << line << std::endl; });
    std::cout << bench::format_report(outcome.summary, outcome.info, s.shown_metrics) << std::flush;
    nlohmann::json report = bench::report_json(outcome.summary, outcome.info, outcome.results);
    if (!o->result_file.empty()) {
      std::ofstream file(o->result_file);
      BF_CHECK(file, "cannot write --result-file '", o->result_file, "'");
      file << report.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      BF_CHECK(file.good(), "cannot write --result-file '", o->result_file, "'");
    }
    if (o->json)
      std::cout << report.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    BF_CHECK(outcome.summary.completed > 0, "all ", outcome.summary.failed,
             " requests failed; the first: ", outcome.summary.first_error);
    return 0;
  };
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (serve: load-test a running server; spec: DFlash step costs)");
  bench->require_subcommand(1);
  std::vector<std::pair<CLI::App*, Command>> subcommands;
  Command serve = add_bench_serve(bench);
  subcommands.emplace_back(bench->get_subcommands({}).back(), std::move(serve));
  Command spec = add_bench_spec(bench);
  subcommands.emplace_back(bench->get_subcommands({}).back(), std::move(spec));
  return [subcommands]() {
    for (const auto& [sub, command] : subcommands)
      if (sub->parsed()) return command();
    return 1;
  };
}

}  // namespace bf::cli
