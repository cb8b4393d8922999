// Prometheus metrics with vLLM's names (so dashboards and `vllm bench serve` scrapers work
// unchanged) plus blockflash's own cache gauges. Counters and histograms are updated by the
// HTTP threads as they read each request's updates; gauges are read from the engine's stats
// when /metrics is scraped. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace bf::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // "# HELP/# TYPE" lines, cumulative _bucket{le=...} lines, _sum and _count.
  void render(std::string& out, const std::string& name, const std::string& help,
              const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, non-cumulative; last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();

  void add_prompt_tokens(int64_t n);
  void add_generation_tokens(int64_t n);
  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  // A finished sequence: its end-to-end latency and why it ended ("stop", "length", "abort").
  void record_finished(double e2e_seconds, const std::string& finished_reason);

  std::string render(const EngineStats& stats, const std::string& model_name) const;

 private:
  mutable std::mutex mutex_;
  int64_t prompt_tokens_ = 0;
  int64_t generation_tokens_ = 0;
  Histogram ttft_;
  Histogram itl_;
  Histogram e2e_;
  std::map<std::string, int64_t> finished_;  // by finished_reason
};

// A Prometheus label value with \, " and newline escaped.
std::string escape_label_value(const std::string& value);

}  // namespace bf::server
