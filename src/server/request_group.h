// The engine requests behind one HTTP request (one per prompt; each with n sequences), read
// as one stream of updates. Owns the abort: destroying a group whose requests are still
// running aborts them, so every way a handler can end (normal return, exception, client gone
// mid-stream and the response released by the HTTP layer) frees the KV blocks and state slots
// within one engine step. Records the per-sequence latency metrics as updates are read.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "engine/async_engine.h"
#include "server/metrics.h"

namespace bf::server {

struct GroupUpdate {
  size_t prompt_index = 0;
  SequenceUpdate update;
};

class RequestGroup {
 public:
  RequestGroup(AsyncEngine& engine, Metrics& metrics) : engine_(engine), metrics_(metrics) {}
  ~RequestGroup();
  RequestGroup(const RequestGroup&) = delete;
  RequestGroup& operator=(const RequestGroup&) = delete;

  // Queues every request, or none: a request the engine rejects (ApiError 400) or a full
  // queue (ApiError 503) aborts the ones already queued.
  void submit(std::vector<EngineRequest> requests);

  // The next update of any request, waiting up to `timeout`; false on timeout.
  bool next(GroupUpdate& out, std::chrono::milliseconds timeout);
  // True once every sequence of every request has sent its final update and it was read.
  bool done() const { return num_unfinished_ == 0; }
  // Aborts whatever is still running (idempotent).
  void abort();

 private:
  using Clock = std::chrono::steady_clock;
  struct SequenceTiming {
    Clock::time_point last_token{};
    bool has_token = false;
    bool finished = false;
  };
  struct Entry {
    std::shared_ptr<RequestStream> stream;
    Clock::time_point arrival;
    std::vector<SequenceTiming> sequences;
    int32_t num_unfinished = 0;
  };
  void record(Entry& entry, const SequenceUpdate& update);

  AsyncEngine& engine_;
  Metrics& metrics_;
  std::vector<Entry> entries_;
  int64_t num_unfinished_ = 0;
  size_t next_entry_ = 0;  // round-robin start, so no prompt starves the others
  bool aborted_ = false;
};

}  // namespace bf::server
