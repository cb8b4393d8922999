#include "server/request_group.h"

#include "core/log.h"
#include "server/api_error.h"
#include "server/request_params.h"

namespace bf::server {

RequestGroup::~RequestGroup() { abort(); }

void RequestGroup::submit(std::vector<EngineRequest> requests) {
  try {
    for (EngineRequest& request : requests) {
      int32_t n = request.params.n;
      size_t prompt_len = request.prompt_token_ids.size();
      Entry entry;
      entry.arrival = Clock::now();
      entry.stream = engine_.submit(std::move(request));
      entry.sequences.resize(n);
      entry.num_unfinished = n;
      entries_.push_back(std::move(entry));
      num_unfinished_ += n;
      metrics_.add_prompt_tokens(static_cast<int64_t>(prompt_len));
    }
  } catch (const QueueFullError& e) {
    abort();
    throw ApiError(503, "ServiceUnavailableError",
                   std::string("The engine is currently busy and cannot accept new requests. "
                               "Please try again later or on a different instance. (") +
                       e.what() + ")");
  } catch (const ApiError&) {
    abort();
    throw;
  } catch (const Error& e) {
    abort();
    rethrow_as_bad_request(e);
  }
}

bool RequestGroup::next(GroupUpdate& out, std::chrono::milliseconds timeout) {
  if (entries_.empty()) return false;
  auto try_entry = [&](size_t index, std::chrono::milliseconds wait) {
    Entry& entry = entries_[index];
    if (entry.num_unfinished == 0) return false;
    if (!entry.stream->next(out.update, wait)) return false;
    out.prompt_index = index;
    record(entry, out.update);
    next_entry_ = (index + 1) % entries_.size();
    return true;
  };
  for (size_t k = 0; k < entries_.size(); ++k)
    if (try_entry((next_entry_ + k) % entries_.size(), std::chrono::milliseconds(0))) return true;
  if (done()) return false;
  // Block on one unfinished request; with several, wake up often to look at the others.
  for (size_t k = 0; k < entries_.size(); ++k) {
    size_t index = (next_entry_ + k) % entries_.size();
    if (entries_[index].num_unfinished == 0) continue;
    int64_t unfinished_entries = 0;
    for (const Entry& e : entries_) unfinished_entries += e.num_unfinished > 0;
    auto wait = unfinished_entries > 1 ? std::min(timeout, std::chrono::milliseconds(2)) : timeout;
    return try_entry(index, wait);
  }
  return false;
}

void RequestGroup::record(Entry& entry, const SequenceUpdate& update) {
  if (update.id.index < 0 || update.id.index >= static_cast<int32_t>(entry.sequences.size())) return;
  SequenceTiming& timing = entry.sequences[update.id.index];
  const auto now = Clock::now();
  if (!update.new_token_ids.empty()) {
    metrics_.add_generation_tokens(static_cast<int64_t>(update.new_token_ids.size()));
    if (!timing.has_token)
      metrics_.observe_time_to_first_token(std::chrono::duration<double>(now - entry.arrival).count());
    else
      metrics_.observe_inter_token_latency(std::chrono::duration<double>(now - timing.last_token).count());
    timing.has_token = true;
    timing.last_token = now;
  }
  if (update.finished && !timing.finished) {
    timing.finished = true;
    --entry.num_unfinished;
    --num_unfinished_;
    metrics_.record_finished(std::chrono::duration<double>(now - entry.arrival).count(),
                             to_string(update.finish_reason));
  }
}

void RequestGroup::abort() {
  if (aborted_) return;
  aborted_ = true;
  const auto now = Clock::now();
  for (Entry& entry : entries_) {
    if (entry.num_unfinished == 0) continue;
    engine_.abort(entry.stream->request_id());
    log_info("Request ", entry.stream->request_id(), " aborted.");
    // The aborted sequences' final updates are never read: count them here.
    for (SequenceTiming& timing : entry.sequences)
      if (!timing.finished) {
        timing.finished = true;
        metrics_.record_finished(std::chrono::duration<double>(now - entry.arrival).count(), "abort");
      }
    num_unfinished_ -= entry.num_unfinished;
    entry.num_unfinished = 0;
  }
}

}  // namespace bf::server
