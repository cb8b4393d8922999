#include "engine/async_engine.h"

#include "core/log.h"

namespace bf {

bool RequestStream::next(SequenceUpdate& update, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !updates_.empty(); })) return false;
  update = std::move(updates_.front());
  updates_.pop_front();
  return true;
}

bool RequestStream::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return num_unfinished_ == 0 && updates_.empty();
}

void RequestStream::push(const SequenceUpdate& update) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    updates_.push_back(update);
    if (update.finished) --num_unfinished_;
  }
  ready_.notify_all();
}

AsyncEngine::AsyncEngine(std::unique_ptr<Engine> engine, int32_t max_pending)
    : engine_(std::move(engine)), max_pending_(max_pending) {
  stats_ = engine_->stats();
  thread_ = std::thread([this] { run(); });
}

AsyncEngine::~AsyncEngine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<RequestStream> AsyncEngine::submit(EngineRequest request) {
  engine_->validate_request(request);
  int32_t pending = num_pending_.fetch_add(1);
  if (max_pending_ > 0 && pending >= max_pending_) {
    num_pending_.fetch_sub(1);
    throw QueueFullError(str_cat("the server is busy: ", pending,
                                 " requests are queued or running (limit ", max_pending_,
                                 "); retry later"));
  }
  request.request_id = next_request_id_.fetch_add(1);
  auto stream = std::make_shared<RequestStream>(request.request_id, request.params.n);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    incoming_.emplace_back(std::move(request), stream);
  }
  wake_.notify_all();
  return stream;
}

void AsyncEngine::abort(int64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    aborts_.push_back(request_id);
  }
  wake_.notify_all();
}

EngineStats AsyncEngine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void AsyncEngine::admit(EngineRequest request, const std::shared_ptr<RequestStream>& stream) {
  const int32_t n = request.params.n;
  auto remaining = std::make_shared<int32_t>(n);
  try {
    engine_->add_request(std::move(request), [this, stream, remaining](const SequenceUpdate& u) {
      // The queue place is freed before the last update reaches the client: a client that
      // sends its next request as soon as it sees this one finish must find the place free.
      if (u.finished && --*remaining == 0) num_pending_.fetch_sub(1);
      stream->push(u);
    });
  } catch (const Error& e) {
    // validate_request passed on submit, so this is a capacity error (a prompt the KV cache
    // can never hold): every sequence reports an aborted, finished update with the reason.
    log_warn("request ", stream->request_id(), " rejected: ", e.what());
    num_pending_.fetch_sub(1);  // before the client can see the rejection (as above)
    for (int32_t index = 0; index < n; ++index) {
      SequenceUpdate update;
      update.id = SeqId{stream->request_id(), index};
      update.finished = true;
      update.finish_reason = FinishReason::kAbort;
      update.stop_reason = e.what();
      stream->push(update);
    }
  }
}

void AsyncEngine::run() {
  for (;;) {
    std::vector<std::pair<EngineRequest, std::shared_ptr<RequestStream>>> incoming;
    std::vector<int64_t> aborts;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_ || !incoming_.empty() || !aborts_.empty() || engine_->has_work();
      });
      if (stopping_) return;
      incoming.swap(incoming_);
      aborts.swap(aborts_);
    }
    for (auto& [request, stream] : incoming) admit(std::move(request), stream);
    for (int64_t id : aborts) engine_->abort_request(id);
    try {
      engine_->step();
    } catch (const std::exception& e) {
      log_error("engine step failed: ", e.what());
      throw;  // a broken step leaves the cache inconsistent; better to stop than to mix up
    }
    std::lock_guard<std::mutex> lock(mutex_);
    stats_ = engine_->stats();
  }
}

}  // namespace bf
