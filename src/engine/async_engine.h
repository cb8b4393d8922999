// AsyncEngine: runs an Engine on its own thread (the step loop) and lets any number of
// other threads (HTTP handlers) submit requests, read their updates from a per-request
// stream, and abort them. The engine itself is only ever touched by the step thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine.h"

namespace bf {

// Thrown by submit when the queue of not-yet-finished requests is full (HTTP 503).
class QueueFullError : public Error {
 public:
  using Error::Error;
};

// The updates of one request, in order, as the step thread produces them.
class RequestStream {
 public:
  explicit RequestStream(int64_t request_id, int32_t num_sequences)
      : request_id_(request_id), num_unfinished_(num_sequences) {}

  int64_t request_id() const { return request_id_; }
  // Waits up to `timeout` for the next update; false on timeout.
  bool next(SequenceUpdate& update, std::chrono::milliseconds timeout);
  // True once every sequence of the request has reported its final update and all updates
  // have been read.
  bool done() const;

  void push(const SequenceUpdate& update);  // step thread

 private:
  const int64_t request_id_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<SequenceUpdate> updates_;
  int32_t num_unfinished_;
};

class AsyncEngine {
 public:
  // max_pending: requests admitted but not finished, beyond which submit throws
  // QueueFullError (0: no limit).
  AsyncEngine(std::unique_ptr<Engine> engine, int32_t max_pending);
  ~AsyncEngine();
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Validates (bf::Error for a bad request), assigns a request id and queues the request.
  std::shared_ptr<RequestStream> submit(EngineRequest request);
  // Aborts a request; its blocks and slot are free again within one step.
  void abort(int64_t request_id);

  // Immutable after construction: safe from any thread.
  const Engine& engine() const { return *engine_; }
  EngineStats stats() const;
  int32_t num_pending() const { return num_pending_.load(); }

 private:
  void run();
  void admit(EngineRequest request, const std::shared_ptr<RequestStream>& stream);

  std::unique_ptr<Engine> engine_;
  const int32_t max_pending_;
  std::atomic<int64_t> next_request_id_{1};
  std::atomic<int32_t> num_pending_{0};

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> incoming_;
  std::vector<int64_t> aborts_;
  EngineStats stats_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace bf
