#include "cli/bench_serve.h"

#include "server/httplib_include.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"

namespace bf::cli::bench {

// --- statistics -----------------------------------------------------------------------------

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  double rank = std::clamp(q, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

MetricStats metric_stats(const std::vector<double>& values, const std::vector<double>& percentiles) {
  MetricStats s;
  for (double q : percentiles) s.percentiles.emplace_back(q, 0.0);
  if (values.empty()) return s;
  double n = static_cast<double>(values.size());
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double squares = 0;
  for (double v : values) squares += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(squares / n);
  s.median = percentile(values, 50);
  for (auto& [q, value] : s.percentiles) value = percentile(values, q);
  return s;
}

std::optional<double> time_per_output_token(const RequestResult& r) {
  if (!r.success || r.output_tokens < 2) return std::nullopt;
  return (r.latency - r.ttft) / static_cast<double>(r.output_tokens - 1);
}

BenchSummary summarize(const std::vector<RequestResult>& results, double duration,
                       const std::vector<double>& percentiles) {
  BenchSummary s;
  s.duration = duration;
  std::vector<double> ttfts, tpots, itls, e2els;
  for (const RequestResult& r : results) {
    if (!r.success) {
      ++s.failed;
      if (s.first_error.empty()) s.first_error = r.error;
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    ttfts.push_back(r.ttft * 1000);
    if (auto tpot = time_per_output_token(r)) tpots.push_back(*tpot * 1000);
    for (double itl : r.itls) itls.push_back(itl * 1000);
    e2els.push_back(r.latency * 1000);
  }
  if (duration > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration;
  }
  s.metrics = {{"ttft", metric_stats(ttfts, percentiles)},
               {"tpot", metric_stats(tpots, percentiles)},
               {"itl", metric_stats(itls, percentiles)},
               {"e2el", metric_stats(e2els, percentiles)}};
  return s;
}

namespace {

// 99 -> "99", 99.9 -> "99.9" (vLLM's p_word).
std::string percentile_word(double q) {
  if (q == std::floor(q)) return std::to_string(static_cast<int64_t>(q));
  std::ostringstream out;
  out << q;
  return out.str();
}

const char* metric_header(const std::string& name) {
  if (name == "ttft") return "Time to First Token";
  if (name == "tpot") return "Time per Output Token (excl. 1st token)";
  if (name == "itl") return "Inter-token Latency";
  return "End-to-end Latency";
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// "{:<40} {:<10}" with a number to `decimals` places (vLLM's table rows).
std::string row(const std::string& label, const std::string& value) {
  char buffer[256];
  std::snprintf(buffer, sizeof(buffer), "%-40s %-10s\n", label.c_str(), value.c_str());
  return buffer;
}

std::string fixed(double value, int decimals = 2) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

// `title` centred in a 50-wide line of `fill`.
std::string banner(const std::string& title, char fill) {
  size_t width = 50, pad = title.size() < width ? width - title.size() : 0;
  return std::string(pad / 2, fill) + title + std::string(pad - pad / 2, fill) + "\n";
}

std::string trim(const std::string& s) {
  size_t first = s.find_first_not_of(" \t"), last = s.find_last_not_of(" \t");
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) items.push_back(trim(item));
  return items;
}

}  // namespace

std::string format_report(const BenchSummary& s, const RunInfo& info,
                          const std::vector<std::string>& shown) {
  std::string out = banner(" Serving Benchmark Result ", '=');
  out += row("Successful requests:", std::to_string(s.completed));
  out += row("Failed requests:", std::to_string(s.failed));
  if (info.max_concurrency > 0)
    out += row("Maximum request concurrency:", std::to_string(info.max_concurrency));
  out += row("Benchmark duration (s):", fixed(s.duration));
  out += row("Total input tokens:", std::to_string(s.total_input_tokens));
  out += row("Total generated tokens:", std::to_string(s.total_output_tokens));
  out += row("Request throughput (req/s):", fixed(s.request_throughput));
  out += row("Output token throughput (tok/s):", fixed(s.output_throughput));
  out += row("Total Token throughput (tok/s):", fixed(s.total_token_throughput));
  for (const std::string& name : shown) {
    for (const auto& [key, stats] : s.metrics) {
      if (key != name) continue;
      std::string label = upper(name);
      out += banner(metric_header(name), '-');
      out += row("Mean " + label + " (ms):", fixed(stats.mean));
      out += row("Median " + label + " (ms):", fixed(stats.median));
      for (const auto& [q, value] : stats.percentiles)
        out += row("P" + percentile_word(q) + " " + label + " (ms):", fixed(value));
    }
  }
  out += std::string(50, '=') + "\n";
  if (!s.first_error.empty()) out += "First error: " + s.first_error + "\n";
  return out;
}

nlohmann::json report_json(const BenchSummary& s, const RunInfo& info,
                           const std::vector<RequestResult>& results) {
  char date[32];
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(date, sizeof(date), "%Y%m%d-%H%M%S", &local);
  bool chat = info.endpoint.find("chat/completions") != std::string::npos;
  nlohmann::json j = {
      {"date", date},
      {"backend", chat ? "openai-chat" : "openai"},
      {"base_url", info.base_url},
      {"endpoint", info.endpoint},
      {"model_id", info.model},
      {"num_prompts", info.num_prompts},
      {"request_rate", std::isfinite(info.request_rate) && info.request_rate > 0
                           ? nlohmann::json(info.request_rate)
                           : nlohmann::json("inf")},
      {"burstiness", info.burstiness},
      {"max_concurrency", info.max_concurrency > 0 ? nlohmann::json(info.max_concurrency)
                                                   : nlohmann::json()},
      {"duration", s.duration},
      {"completed", s.completed},
      {"failed", s.failed},
      {"total_input_tokens", s.total_input_tokens},
      {"total_output_tokens", s.total_output_tokens},
      {"request_throughput", s.request_throughput},
      {"output_throughput", s.output_throughput},
      {"total_token_throughput", s.total_token_throughput},
      {"first_error", s.first_error.empty() ? nlohmann::json() : nlohmann::json(s.first_error)},
  };
  for (const auto& [name, stats] : s.metrics) {
    j["mean_" + name + "_ms"] = stats.mean;
    j["median_" + name + "_ms"] = stats.median;
    j["std_" + name + "_ms"] = stats.std;
    for (const auto& [q, value] : stats.percentiles) j["p" + percentile_word(q) + "_" + name + "_ms"] = value;
  }
  nlohmann::json input_lens = nlohmann::json::array(), output_lens = nlohmann::json::array(),
                 ttfts = nlohmann::json::array(), itls = nlohmann::json::array(),
                 errors = nlohmann::json::array();
  for (const RequestResult& r : results) {
    input_lens.push_back(r.prompt_tokens);
    output_lens.push_back(r.success ? r.output_tokens : 0);
    ttfts.push_back(r.success ? r.ttft : 0.0);
    itls.push_back(r.itls);
    errors.push_back(r.error);
  }
  j["input_lens"] = std::move(input_lens);
  j["output_lens"] = std::move(output_lens);
  j["ttfts"] = std::move(ttfts);
  j["itls"] = std::move(itls);
  j["errors"] = std::move(errors);
  return j;
}

std::vector<double> parse_percentiles(const std::string& text) {
  std::vector<double> out;
  for (const std::string& item : split_list(text)) {
    size_t used = 0;
    double value = -1;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    BF_CHECK(!item.empty() && used == item.size() && value >= 0 && value <= 100,
             "bad percentile '", item, "' in '", text, "' (expected numbers in [0, 100], e.g. 50,90,99)");
    out.push_back(value);
  }
  BF_CHECK(!out.empty(), "no percentiles in '", text, "'");
  return out;
}

std::vector<std::string> parse_metric_names(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& item : split_list(text)) {
    BF_CHECK(item == "ttft" || item == "tpot" || item == "itl" || item == "e2el",
             "unknown metric '", item, "' in '", text, "' (expected ttft, tpot, itl, e2el)");
    out.push_back(item);
  }
  return out;
}

// --- workload -------------------------------------------------------------------------------

std::vector<double> arrival_times(int64_t n, double rate, double burstiness, uint64_t seed) {
  std::vector<double> times(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
  if (!(rate > 0) || std::isinf(rate)) return times;
  BF_CHECK(burstiness > 0, "--burstiness must be positive");
  std::mt19937_64 rng(seed);
  // Gamma(shape k, scale theta) has mean k*theta: theta = 1 / (rate * k) gives mean 1/rate.
  std::gamma_distribution<double> interval(burstiness, 1.0 / (rate * burstiness));
  double t = 0;
  for (double& time : times) {
    time = t;
    t += interval(rng);
  }
  return times;
}

namespace {

// Common English words; most are one token (with their leading space) in BPE vocabularies.
const char* const kWords[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "year",
    "way", "day", "man", "thing", "woman", "life", "child", "world", "school", "state", "family",
    "student", "group", "country", "problem", "hand", "part", "place", "case", "week", "company",
    "system", "program", "question", "work", "number", "night", "point", "home", "water", "room",
    "mother", "area", "money", "story", "fact", "month", "lot", "right", "study", "book", "eye",
    "job", "word", "business", "issue", "side", "kind", "head", "house", "service", "friend"};

int32_t draw_len(std::mt19937_64& rng, int32_t len, double ratio) {
  if (ratio <= 0) return len;
  auto lo = static_cast<int32_t>(std::floor(len * (1 - ratio)));
  auto hi = static_cast<int32_t>(std::ceil(len * (1 + ratio)));
  return std::uniform_int_distribution<int32_t>(std::max(lo, 0), std::max(hi, 0))(rng);
}

}  // namespace

std::vector<RandomRequest> random_requests(int64_t n, int32_t input_len, int32_t output_len,
                                           double range_ratio, int32_t prefix_len,
                                           int32_t vocab_size, bool chat, uint64_t seed) {
  BF_CHECK(vocab_size > 0, "--random-vocab-size must be positive");
  BF_CHECK(range_ratio >= 0 && range_ratio < 1, "--random-range-ratio must be in [0, 1)");
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::uniform_int_distribution<int32_t> token(0, vocab_size - 1);
  std::uniform_int_distribution<size_t> word(0, std::size(kWords) - 1);
  std::vector<int32_t> prefix_ids;
  std::vector<size_t> prefix_words;
  for (int32_t i = 0; i < prefix_len; ++i) {
    prefix_ids.push_back(token(rng));
    prefix_words.push_back(word(rng));
  }
  std::vector<RandomRequest> requests(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (RandomRequest& r : requests) {
    int32_t in_len = std::max(draw_len(rng, input_len, range_ratio), prefix_len > 0 ? 0 : 1);
    r.output_len = std::max(draw_len(rng, output_len, range_ratio), 1);
    if (chat) {
      std::string text;
      for (size_t w : prefix_words) text += (text.empty() ? "" : " ") + std::string(kWords[w]);
      for (int32_t i = 0; i < in_len; ++i) text += (text.empty() ? "" : " ") + std::string(kWords[word(rng)]);
      r.prompt_text = std::move(text);
    } else {
      r.prompt_ids = prefix_ids;
      for (int32_t i = 0; i < in_len; ++i) r.prompt_ids.push_back(token(rng));
    }
  }
  return requests;
}

// --- SSE ------------------------------------------------------------------------------------

void SseParser::feed(const char* data, size_t size) {
  pending_.append(data, size);
  size_t start = 0;
  for (size_t nl; (nl = pending_.find('\n', start)) != std::string::npos; start = nl + 1)
    line(pending_.substr(start, nl - start));
  pending_.erase(0, start);
}

void SseParser::finish() {
  if (!pending_.empty()) line(std::exchange(pending_, {}));
  line("");
}

void SseParser::line(std::string text) {
  if (!text.empty() && text.back() == '\r') text.pop_back();
  if (text.empty()) {
    if (has_data_) on_data_(std::exchange(data_, {}));
    has_data_ = false;
    return;
  }
  if (text.rfind("data:", 0) != 0) return;  // comments (":...") and other fields
  std::string value = text.substr(5);
  if (!value.empty() && value[0] == ' ') value.erase(0, 1);
  if (has_data_) data_ += '\n';
  data_ += value;
  has_data_ = true;
}

// --- the run --------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Target {
  std::string scheme_host_port;  // for httplib::Client
  std::string prefix;            // path before the endpoint, no trailing '/'
};

Target parse_base_url(const std::string& url) {
  size_t scheme_end = url.find("://");
  BF_CHECK(scheme_end != std::string::npos, "bad --base-url '", url, "' (expected http://HOST:PORT)");
  std::string scheme = url.substr(0, scheme_end);
  BF_CHECK(scheme == "http" || scheme == "https", "bad --base-url '", url,
           "': the scheme must be http or https");
  size_t path_start = url.find('/', scheme_end + 3);
  Target t;
  t.scheme_host_port = url.substr(0, path_start);
  BF_CHECK(t.scheme_host_port.size() > scheme_end + 3, "bad --base-url '", url, "': no host");
  if (path_start != std::string::npos) t.prefix = url.substr(path_start);
  while (!t.prefix.empty() && t.prefix.back() == '/') t.prefix.pop_back();
  return t;
}

// httplib's error names ("Connection", "Read") as a phrase.
std::string describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection: return "could not connect (connection refused or host unreachable)";
    case httplib::Error::ConnectionTimeout: return "connection timed out";
    case httplib::Error::Read: return "read failed (connection closed, or no data within --request-timeout)";
    case httplib::Error::Write: return "write failed (connection closed)";
    case httplib::Error::SSLConnection: return "TLS connection failed";
    case httplib::Error::SSLServerVerification: return "TLS server verification failed";
    default: return httplib::to_string(error);
  }
}

std::unique_ptr<httplib::Client> make_client(const Target& target, const ServeOptions& o) {
  auto client = std::make_unique<httplib::Client>(target.scheme_host_port);
  BF_CHECK(client->is_valid(), "cannot use --base-url '", o.base_url, "'");
  client->set_connection_timeout(10, 0);
  auto timeout = std::chrono::duration<double>(o.request_timeout);
  client->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  client->set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  client->set_keep_alive(true);
  return client;
}

httplib::Headers auth_headers(const ServeOptions& o) {
  httplib::Headers headers;
  if (!o.api_key.empty()) headers.emplace("Authorization", "Bearer " + o.api_key);
  return headers;
}

// "HTTP 401: Unauthorized" from an OpenAI error body, else the body's start.
std::string http_error(int status, const std::string& body) {
  std::string message;
  try {
    nlohmann::json j = nlohmann::json::parse(body);
    if (j.is_object() && j.contains("error")) {
      const nlohmann::json& e = j["error"];
      if (e.is_object() && e.contains("message") && e["message"].is_string())
        message = e["message"].get<std::string>();
      else if (e.is_string())
        message = e.get<std::string>();
    } else if (j.is_object() && j.contains("message") && j["message"].is_string()) {
      message = j["message"].get<std::string>();
    }
  } catch (const std::exception&) {
  }
  if (message.empty()) message = body.substr(0, 300);
  return "HTTP " + std::to_string(status) + (message.empty() ? "" : ": " + message);
}

nlohmann::json request_body(const ServeOptions& o, const std::string& model, bool chat,
                            const RandomRequest& r) {
  nlohmann::json body;
  if (!model.empty()) body["model"] = model;
  if (chat) {
    body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", r.prompt_text}}});
    body["max_completion_tokens"] = r.output_len;
  } else {
    body["prompt"] = r.prompt_ids;
    body["max_tokens"] = r.output_len;
  }
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (o.ignore_eos) body["ignore_eos"] = true;
  if (o.temperature) body["temperature"] = *o.temperature;
  if (o.top_p) body["top_p"] = *o.top_p;
  if (o.top_k) body["top_k"] = *o.top_k;
  return body;
}

// The text a stream chunk carries: choices[0].text (completions) or choices[0].delta's
// content / reasoning_content (chat).
std::string chunk_text(const nlohmann::json& choice) {
  auto text_of = [](const nlohmann::json& object, const char* key) {
    auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  std::string text = text_of(choice, "text");
  if (auto delta = choice.find("delta"); delta != choice.end() && delta->is_object())
    text += text_of(*delta, "content") + text_of(*delta, "reasoning_content") + text_of(*delta, "reasoning");
  return text;
}

RequestResult send_request(httplib::Client& client, const std::string& path,
                           const httplib::Headers& auth, const std::string& body,
                           Clock::time_point bench_start) {
  RequestResult r;
  Clock::time_point start = Clock::now();
  r.start = std::chrono::duration<double>(start - bench_start).count();
  int status = 0;
  std::string error_body, error;
  bool done = false, got_choice = false, got_content = false, got_usage = false;
  double first_choice = 0, last_content = 0;
  int64_t content_chunks = 0;

  SseParser parser([&](const std::string& payload) {
    if (!error.empty() || done) return;
    double now = seconds_since(start);
    if (trim(payload) == "[DONE]") {
      done = true;
      return;
    }
    nlohmann::json chunk;
    try {
      chunk = nlohmann::json::parse(payload);
    } catch (const std::exception&) {
      error = "bad stream event: " + payload.substr(0, 200);
      return;
    }
    if (!chunk.is_object()) return;
    if (chunk.contains("error")) {
      error = http_error(status, payload);
      return;
    }
    if (auto choices = chunk.find("choices"); choices != chunk.end() && choices->is_array() &&
                                              !choices->empty() && (*choices)[0].is_object()) {
      if (!got_choice) first_choice = now;
      got_choice = true;
      if (!chunk_text((*choices)[0]).empty()) {
        if (!got_content)
          r.ttft = now;
        else
          r.itls.push_back(now - last_content);
        got_content = true;
        last_content = now;
        ++content_chunks;
      }
    }
    if (auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
      got_usage = true;
      r.prompt_tokens = usage->value("prompt_tokens", int64_t{0});
      r.output_tokens = usage->value("completion_tokens", int64_t{0});
    }
  });

  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = auth;
  req.headers.emplace("Content-Type", "application/json");
  req.headers.emplace("Accept", "text/event-stream");
  req.body = body;
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    if (status != 200) {
      if (error_body.size() < 4096) error_body.append(data, std::min<size_t>(size, 4096));
    } else {
      parser.feed(data, size);
    }
    return true;
  };
  httplib::Response res;
  httplib::Error transport = httplib::Error::Success;
  bool sent = client.send(req, res, transport);
  if (status == 200) parser.finish();
  r.latency = seconds_since(start);

  if (!sent && status == 0) {
    r.error = "connection error: " + describe(transport);
  } else if (status != 200) {
    r.error = http_error(status, error_body);
  } else if (!error.empty()) {
    r.error = error;
  } else if (!sent) {
    r.error = "stream interrupted: " + describe(transport);
  } else if (!done) {
    r.error = "stream ended without data: [DONE]";
  } else {
    r.success = true;
    if (!got_usage) r.output_tokens = content_chunks;
    if (!got_content) r.ttft = got_choice ? first_choice : r.latency;
  }
  return r;
}

}  // namespace

BenchOutcome run_bench_serve(const ServeOptions& o, const std::function<void(const std::string&)>& log) {
  BF_CHECK(o.num_prompts > 0, "--num-prompts must be positive");
  BF_CHECK(o.max_concurrency >= 0, "--max-concurrency must be non-negative");
  BF_CHECK(o.input_len >= 0 && o.output_len > 0, "--random-input-len must be >= 0 and --random-output-len > 0");
  BF_CHECK(o.prefix_len >= 0, "--random-prefix-len must be non-negative");
  BF_CHECK(o.input_len + o.prefix_len > 0, "empty prompts: give --random-input-len or --random-prefix-len");
  BF_CHECK(o.request_timeout > 0, "--request-timeout must be positive");
  BF_CHECK(!o.endpoint.empty() && o.endpoint[0] == '/', "--endpoint must start with '/'");
  const Target target = parse_base_url(o.base_url);
  const bool chat = o.endpoint.find("chat/completions") != std::string::npos;
  const httplib::Headers auth = auth_headers(o);

  // Reachability and the model name: GET /v1/models.
  std::string model = o.model;
  {
    auto client = make_client(target, o);
    Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(o.ready_check_timeout));
    httplib::Result res = client->Get(target.prefix + "/v1/models", auth);
    while (!res && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      res = client->Get(target.prefix + "/v1/models", auth);
    }
    BF_CHECK(res, "cannot reach the server at ", o.base_url, ": ", describe(res.error()),
             " (is it running? set --base-url or --host/--port)");
    if (model.empty()) {
      if (res->status == 200) {
        try {
          nlohmann::json models = nlohmann::json::parse(res->body);
          model = models.at("data").at(0).at("id").get<std::string>();
        } catch (const std::exception&) {
          fail("GET ", o.base_url, "/v1/models listed no model; give --model NAME");
        }
      } else {
        log("warning: GET /v1/models answered " + http_error(res->status, res->body) +
            "; sending requests without a model name");
      }
    }
  }

  std::vector<RandomRequest> requests = random_requests(
      o.num_prompts, o.input_len, o.output_len, o.range_ratio, o.prefix_len, o.vocab_size, chat, o.seed);
  std::vector<std::string> bodies;
  bodies.reserve(requests.size());
  for (const RandomRequest& r : requests) bodies.push_back(request_body(o, model, chat, r).dump());
  const std::string path = target.prefix + o.endpoint;

  if (o.num_warmups > 0) {
    log("Warming up with " + std::to_string(o.num_warmups) + " request(s)...");
    auto client = make_client(target, o);
    for (int64_t i = 0; i < o.num_warmups; ++i) {
      RequestResult w = send_request(*client, path, auth, bodies[static_cast<size_t>(i) % bodies.size()], Clock::now());
      if (!w.success) log("warning: warm-up request failed: " + w.error);
    }
  }

  BenchOutcome out;
  out.info.base_url = o.base_url;
  out.info.endpoint = o.endpoint;
  out.info.model = model;
  out.info.num_prompts = o.num_prompts;
  out.info.max_concurrency = o.max_concurrency;
  out.info.request_rate = o.request_rate > 0 ? o.request_rate : std::numeric_limits<double>::infinity();
  out.info.burstiness = o.burstiness;

  const std::vector<double> arrivals = arrival_times(o.num_prompts, o.request_rate, o.burstiness, o.seed);
  int64_t workers = o.max_concurrency > 0 ? std::min(o.max_concurrency, o.num_prompts) : o.num_prompts;
  BF_CHECK(workers <= 4096, "at most 4096 concurrent requests: set --max-concurrency");
  {
    std::ostringstream line;
    line << "Traffic request rate: " << (std::isinf(out.info.request_rate) ? std::string("inf") : fixed(out.info.request_rate))
         << "\nBurstiness factor: " << o.burstiness
         << (o.burstiness == 1 ? " (Poisson process)" : " (gamma intervals)")
         << "\nMaximum request concurrency: "
         << (o.max_concurrency > 0 ? std::to_string(o.max_concurrency) : std::string("None"))
         << "\nModel: " << (model.empty() ? std::string("(server default)") : model) << "  endpoint: "
         << o.base_url << path.substr(target.prefix.size());
    log(line.str());
  }

  out.results.resize(requests.size());
  std::atomic<int64_t> next{0};
  std::atomic<bool> reported_error{false};
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(workers));
  for (int64_t w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      std::unique_ptr<httplib::Client> client;
      try {
        client = make_client(target, o);
      } catch (const std::exception&) {
        return;
      }
      for (int64_t i; (i = next.fetch_add(1)) < o.num_prompts;) {
        auto at = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(arrivals[static_cast<size_t>(i)]));
        std::this_thread::sleep_until(at);
        RequestResult r;
        try {
          r = send_request(*client, path, auth, bodies[static_cast<size_t>(i)], start);
        } catch (const std::exception& e) {
          r = RequestResult{};
          r.error = std::string("client error: ") + e.what();
        }
        if (!r.success && !reported_error.exchange(true)) log("first failed request: " + r.error);
        if (r.success && r.prompt_tokens == 0) {
          const RandomRequest& q = requests[static_cast<size_t>(i)];
          r.prompt_tokens = chat ? 0 : static_cast<int64_t>(q.prompt_ids.size());
        }
        if (!r.success) r.prompt_tokens = 0;
        out.results[static_cast<size_t>(i)] = std::move(r);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  double duration = seconds_since(start);
  // A worker that could not make a client left its requests unsent.
  for (RequestResult& r : out.results)
    if (!r.success && r.error.empty()) r.error = "not sent";
  out.summary = summarize(out.results, duration, o.percentiles);
  return out;
}

}  // namespace bf::cli::bench
