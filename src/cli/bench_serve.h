// `blockflash bench serve`: a load generator against a running OpenAI-compatible server, as
// `vllm bench serve` (random dataset). Requests stream; each records its time to first token
// (TTFT), the gaps between content chunks (ITL), its end-to-end latency and the usage the
// server reports. The statistics (numpy-style percentiles, the summary, the report) are pure
// functions of the per-request results; run_bench_serve is the part that talks HTTP.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bf::cli::bench {

// --- statistics -----------------------------------------------------------------------------

// The q-th percentile (0..100) with linear interpolation between closest ranks, as numpy's
// default: sorted v, rank q/100 * (n-1). 0 for no values.
double percentile(std::vector<double> values, double q);

struct MetricStats {
  double mean = 0, median = 0, std = 0;  // std: population (numpy's ddof=0)
  std::vector<std::pair<double, double>> percentiles;  // (q, value)
};
// All zero for no values.
MetricStats metric_stats(const std::vector<double>& values, const std::vector<double>& percentiles);

// What one request measured. Times in seconds; ttft and itls only for successful requests.
struct RequestResult {
  bool success = false;
  std::string error;          // why it failed (HTTP status and body, or the connection error)
  int64_t prompt_tokens = 0;  // from usage; else the prompt's length as sent
  int64_t output_tokens = 0;  // from usage; else the number of content chunks
  double start = 0;           // seconds after the benchmark started
  double ttft = 0, latency = 0;
  std::vector<double> itls;
};

// TPOT of one request: (latency - ttft) / (output_tokens - 1); none with fewer than 2 tokens.
std::optional<double> time_per_output_token(const RequestResult& r);

struct BenchSummary {
  int64_t completed = 0, failed = 0;
  double duration = 0;  // seconds
  int64_t total_input_tokens = 0, total_output_tokens = 0;
  double request_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  // Keyed "ttft", "tpot", "itl", "e2el"; values in milliseconds.
  std::vector<std::pair<std::string, MetricStats>> metrics;
  std::string first_error;
};
BenchSummary summarize(const std::vector<RequestResult>& results, double duration,
                       const std::vector<double>& percentiles);

// What the report says about the run itself.
struct RunInfo {
  std::string base_url, endpoint, model;
  int64_t num_prompts = 0;
  int64_t max_concurrency = 0;  // 0: not limited
  double request_rate = 0;      // infinity: all at once
  double burstiness = 1;
};

// vLLM's result table. `shown` lists which metrics get a section (ttft, tpot, itl, e2el).
std::string format_report(const BenchSummary& s, const RunInfo& info,
                          const std::vector<std::string>& shown);
// vLLM's result JSON keys (completed, failed, duration, request_throughput, output_throughput,
// total_token_throughput, mean_ttft_ms, median_ttft_ms, std_ttft_ms, p99_ttft_ms, ...), plus
// the per-request arrays (ttfts and itls in seconds, input_lens, output_lens, errors).
nlohmann::json report_json(const BenchSummary& s, const RunInfo& info,
                           const std::vector<RequestResult>& results);

// Parses "99" or "50,90,99" (each in [0, 100]); bf::Error on a bad entry.
std::vector<double> parse_percentiles(const std::string& text);
// Parses "ttft,tpot,itl" (of ttft, tpot, itl, e2el); bf::Error on an unknown name.
std::vector<std::string> parse_metric_names(const std::string& text);

// --- workload -------------------------------------------------------------------------------

// Seconds after the start at which each of n requests is sent: gamma-distributed intervals
// with mean 1/rate and shape `burstiness` (1: Poisson arrivals). Rate infinity (or <= 0):
// all at 0. Deterministic for a seed.
std::vector<double> arrival_times(int64_t n, double rate, double burstiness, uint64_t seed);

struct RandomRequest {
  std::vector<int32_t> prompt_ids;  // completions
  std::string prompt_text;          // chat: words, about one token each
  int32_t output_len = 0;
};
// vLLM's random dataset: lengths uniform in [len*(1-range_ratio), len*(1+range_ratio)], token
// ids uniform in [0, vocab_size), a shared random prefix of prefix_len ids first.
std::vector<RandomRequest> random_requests(int64_t n, int32_t input_len, int32_t output_len,
                                           double range_ratio, int32_t prefix_len,
                                           int32_t vocab_size, bool chat, uint64_t seed);

// --- SSE ------------------------------------------------------------------------------------

// Splits a byte stream into server-sent events and calls on_data with each event's data (its
// `data:` lines without "data:" and one following space, joined by newlines) when the blank
// line that ends the event arrives; comments and other fields are ignored.
class SseParser {
 public:
  explicit SseParser(std::function<void(const std::string&)> on_data) : on_data_(std::move(on_data)) {}
  void feed(const char* data, size_t size);
  void finish();  // a last line without its newline

 private:
  void line(std::string text);
  std::function<void(const std::string&)> on_data_;
  std::string pending_, data_;
  bool has_data_ = false;
};

// --- the run --------------------------------------------------------------------------------

struct ServeOptions {
  std::string base_url = "http://127.0.0.1:8000";  // scheme://host:port[/prefix]
  std::string endpoint = "/v1/completions";
  std::string model;    // empty: the first of GET /v1/models
  std::string api_key;  // empty: no Authorization header
  int64_t num_prompts = 1000;
  int64_t max_concurrency = 0;  // 0: num_prompts
  double request_rate = 0;      // <= 0 or inf: all at once
  double burstiness = 1;
  uint64_t seed = 0;
  int32_t input_len = 1024, output_len = 128, prefix_len = 0, vocab_size = 1000;
  double range_ratio = 0;
  bool ignore_eos = true;
  std::optional<double> temperature = 0.0, top_p;
  std::optional<int32_t> top_k;
  int64_t num_warmups = 0;
  double request_timeout = 600;       // seconds, per read
  double ready_check_timeout = 0;     // seconds to wait for the server to answer at start
  std::vector<double> percentiles = {99};
  std::vector<std::string> shown_metrics = {"ttft", "tpot", "itl"};
};

struct BenchOutcome {
  RunInfo info;
  std::vector<RequestResult> results;
  BenchSummary summary;
};

// Runs the benchmark; progress lines go to `log`. bf::Error when the server cannot be
// reached at all; failed requests are counted, never thrown.
BenchOutcome run_bench_serve(const ServeOptions& options, const std::function<void(const std::string&)>& log);

}  // namespace bf::cli::bench
