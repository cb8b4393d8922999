#include "server/metrics.h"

#include <algorithm>
#include <cstdio>

namespace bf::server {
namespace {

std::string number(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // Prometheus style "1.0"
  return s;
}

void header(std::string& out, const std::string& name, const std::string& help,
            const char* type) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, const std::string& labels, double value) {
  out += name + "{" + labels + "} " + number(value) + "\n";
}

}  // namespace

std::string escape_label_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help,
                       const std::string& labels) const {
  header(out, name, help, "histogram");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    sample(out, name + "_bucket", labels + ",le=\"" + le + "\"", static_cast<double>(cumulative));
  }
  sample(out, name + "_sum", labels, sum_);
  sample(out, name + "_count", labels, static_cast<double>(count_));
}

// Bucket bounds as vLLM's (vllm/v1/metrics/loggers.py).
Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
             7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}),
      itl_({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0}),
      e2e_({0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
            120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}) {
  for (const char* reason : {"stop", "length", "abort"}) finished_[reason] = 0;
}

void Metrics::add_prompt_tokens(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  prompt_tokens_ += n;
}

void Metrics::add_generation_tokens(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  generation_tokens_ += n;
}

void Metrics::observe_time_to_first_token(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::observe_inter_token_latency(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  itl_.observe(seconds);
}

void Metrics::record_finished(double e2e_seconds, const std::string& finished_reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  e2e_.observe(e2e_seconds);
  ++finished_[finished_reason];
}

std::string Metrics::render(const EngineStats& stats, const std::string& model_name) const {
  const std::string labels = "model_name=\"" + escape_label_value(model_name) + "\"";
  std::string out;
  auto gauge = [&](const std::string& name, const std::string& help, double value) {
    header(out, name, help, "gauge");
    sample(out, name, labels, value);
  };
  auto counter = [&](const std::string& name, const std::string& help, double value) {
    header(out, name, help, "counter");
    sample(out, name + "_total", labels, value);
  };
  gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
        stats.num_running);
  gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
        stats.num_waiting);
  gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
        stats.kv_cache_usage);
  gauge("blockflash:num_kv_blocks", "KV cache blocks in total.", stats.num_blocks);
  gauge("blockflash:num_free_kv_blocks", "KV cache blocks not owned by any sequence.",
        stats.num_free_blocks);
  gauge("blockflash:num_state_slots", "Gated DeltaNet state slots in total.",
        stats.num_state_slots);
  gauge("blockflash:num_free_state_slots", "Gated DeltaNet state slots not owned by any sequence.",
        stats.num_free_state_slots);
  header(out, "blockflash:num_preemptions", "Cumulative number of preemptions (recompute).",
         "counter");
  sample(out, "blockflash:num_preemptions_total", labels, static_cast<double>(stats.num_preemptions));
  header(out, "vllm:num_preemptions", "Cumulative number of preemption from the engine.", "counter");
  sample(out, "vllm:num_preemptions_total", labels, static_cast<double>(stats.num_preemptions));
  if (stats.speculative) {  // vLLM's spec-decode counters, when speculation is configured
    counter("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.",
            static_cast<double>(stats.spec.num_drafts));
    counter("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.",
            static_cast<double>(stats.spec.num_draft_tokens));
    counter("vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.",
            static_cast<double>(stats.spec.num_accepted_tokens));
    header(out, "vllm:spec_decode_num_accepted_tokens_per_pos",
           "Accepted tokens per draft position.", "counter");
    for (size_t i = 0; i < stats.spec.accepted_per_position.size(); ++i)
      sample(out, "vllm:spec_decode_num_accepted_tokens_per_pos_total",
             labels + ",position=\"" + std::to_string(i) + "\"",
             static_cast<double>(stats.spec.accepted_per_position[i]));
  }

  std::lock_guard<std::mutex> lock(mutex_);
  counter("vllm:prompt_tokens", "Number of prefill tokens processed.",
          static_cast<double>(prompt_tokens_));
  counter("vllm:generation_tokens", "Number of generation tokens processed.",
          static_cast<double>(generation_tokens_));
  header(out, "vllm:request_success", "Count of successfully processed requests.", "counter");
  for (const auto& [reason, count] : finished_)
    sample(out, "vllm:request_success_total",
           labels + ",finished_reason=\"" + escape_label_value(reason) + "\"",
           static_cast<double>(count));
  ttft_.render(out, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
               labels);
  itl_.render(out, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
              labels);
  e2e_.render(out, "vllm:e2e_request_latency_seconds",
              "Histogram of e2e request latency in seconds.", labels);
  return out;
}

}  // namespace bf::server
