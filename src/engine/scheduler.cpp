// Continuous-batching scheduler: see scheduler.h.
#include "engine/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace bf {

int32_t StepPlan::num_tokens() const {
  int32_t total = 0;
  for (const ScheduledSequence& entry : seqs) total += entry.num_new_tokens + entry.num_draft_tokens;
  return total;
}

int32_t StepPlan::num_samples() const {
  return static_cast<int32_t>(
      std::count_if(seqs.begin(), seqs.end(), [](const ScheduledSequence& entry) {
        return entry.needs_sample && entry.num_draft_tokens == 0;
      }));
}

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(config),
      blocks_(config.num_blocks, config.block_size),
      slots_(config.num_state_slots) {
  BF_CHECK(config.max_num_seqs > 0, "max_num_seqs must be positive, got ", config.max_num_seqs);
  BF_CHECK(config.max_num_batched_tokens > 0, "max_num_batched_tokens must be positive, got ",
           config.max_num_batched_tokens);
  BF_CHECK(config.max_model_len > 0, "max_model_len must be positive, got ",
           config.max_model_len);
  BF_CHECK(config.long_prefill_token_threshold >= 0,
           "long_prefill_token_threshold must be >= 0, got ", config.long_prefill_token_threshold);
  // Without chunking a whole prompt (or a preempted sequence's recompute) must fit one step.
  BF_CHECK(config.enable_chunked_prefill || config.max_num_batched_tokens >= config.max_model_len,
           "without chunked prefill max_num_batched_tokens (", config.max_num_batched_tokens,
           ") must be >= max_model_len (", config.max_model_len, ")");
}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
  BF_CHECK(seq != nullptr, "Scheduler::add: null sequence");
  const int64_t num_prompt = seq->num_prompt_tokens();
  BF_CHECK(num_prompt > 0, "request ", seq->id, " has an empty prompt");
  BF_CHECK(num_prompt <= config_.max_model_len, "request ", seq->id, ": prompt has ", num_prompt,
           " tokens, more than max_model_len=", config_.max_model_len);
  BF_CHECK(seq->max_tokens >= 1, "request ", seq->id, ": max_tokens must be >= 1, got ",
           seq->max_tokens);
  BF_CHECK(seq->num_lookahead_tokens >= 0, "request ", seq->id,
           ": num_lookahead_tokens must be >= 0, got ", seq->num_lookahead_tokens);
  BF_CHECK(seq->status == SequenceStatus::kWaiting && seq->output_token_ids.empty() &&
               seq->num_computed_tokens == 0 && seq->block_table.empty() &&
               seq->state_slots.empty(),
           "request ", seq->id, ": Scheduler::add takes a fresh sequence");
  BF_CHECK(find(seq->id) == nullptr, "request ", seq->id, " is already scheduled");
  // The most KV a sequence ever holds: every computed position plus the lookahead. Alone in
  // the cache it must fit, or it could never finish (and preemption could not help).
  const int64_t max_kv_tokens =
      std::min<int64_t>(num_prompt + seq->max_tokens, config_.max_model_len) +
      seq->num_lookahead_tokens;
  BF_CHECK(blocks_.num_blocks_for(max_kv_tokens) <= blocks_.num_blocks(), "request ", seq->id,
           " may need ", blocks_.num_blocks_for(max_kv_tokens), " KV blocks (", max_kv_tokens,
           " tokens at block_size ", blocks_.block_size(), ") but the cache has only ",
           blocks_.num_blocks());
  BF_CHECK(seq->num_state_slots_needed() <= slots_.num_slots(), "request ", seq->id, " needs ",
           seq->num_state_slots_needed(), " state slots, the pool has ", slots_.num_slots());
  seq->arrival_index = next_arrival_index_++;
  waiting_.push_back(std::move(seq));
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int32_t token_budget = config_.max_num_batched_tokens;
  schedule_running(plan, token_budget);
  // A step that had to preempt has no room to spare: admitting now would only thrash.
  if (plan.preempted.empty()) schedule_waiting(plan, token_budget);
  return plan;
}

// Running sequences, oldest first. Each grows its block table for its new tokens (plus the
// lookahead); when blocks run out the newest running sequence is preempted, possibly the one
// being scheduled, in which case every later one is gone too.
void Scheduler::schedule_running(StepPlan& plan, int32_t& token_budget) {
  size_t i = 0;
  while (i < running_.size() && token_budget > 0) {
    Sequence& seq = *running_[i];
    const int32_t num_new = num_new_tokens(seq, token_budget);
    if (num_new == 0) {
      ++i;
      continue;
    }
    const int64_t num_kv_tokens =
        int64_t{seq.num_computed_tokens} + num_new + seq.num_lookahead_tokens;
    bool preempted_self = false;
    while (!preempted_self && !blocks_.can_grow(seq, num_kv_tokens)) {
      preempted_self = running_.back().get() == &seq;
      preempt_newest(plan);
    }
    if (preempted_self) return;
    blocks_.grow(seq, num_kv_tokens);
    const int32_t drafts = num_draft_tokens(seq, num_new, token_budget);
    plan.seqs.push_back({.seq = &seq,
                         .num_computed = seq.num_computed_tokens,
                         .num_new_tokens = num_new,
                         .needs_sample = num_new == seq.num_uncomputed_tokens(),
                         .num_draft_tokens = drafts});
    token_budget -= num_new + drafts;
    ++i;
  }
}

// Waiting sequences, strictly FCFS: stop at the first that does not fit, so a long prompt at
// the front is never overtaken by shorter ones behind it.
void Scheduler::schedule_waiting(StepPlan& plan, int32_t& token_budget) {
  while (!waiting_.empty() && token_budget > 0 &&
         static_cast<int32_t>(running_.size()) < config_.max_num_seqs) {
    Sequence& seq = *waiting_.front();
    const int32_t num_new = num_new_tokens(seq, token_budget);
    const int64_t num_kv_tokens = int64_t{num_new} + seq.num_lookahead_tokens;
    if (num_new == 0 || !blocks_.can_allocate(num_kv_tokens) ||
        !slots_.can_allocate(seq.num_state_slots_needed())) {
      break;
    }
    seq.state_slots = slots_.allocate(seq.num_state_slots_needed());
    blocks_.grow(seq, num_kv_tokens);
    seq.status = SequenceStatus::kRunning;
    plan.seqs.push_back({.seq = &seq,
                         .num_computed = 0,
                         .num_new_tokens = num_new,
                         .needs_sample = num_new == seq.num_uncomputed_tokens()});
    token_budget -= num_new;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

int32_t Scheduler::num_new_tokens(const Sequence& seq, int32_t token_budget) const {
  int32_t num_new = seq.num_uncomputed_tokens();
  if (!config_.enable_chunked_prefill) return num_new <= token_budget ? num_new : 0;
  if (config_.long_prefill_token_threshold > 0) {
    num_new = std::min(num_new, config_.long_prefill_token_threshold);
  }
  return std::min(num_new, token_budget);
}

// Drafts only for a decode (the pending token is an output, so the drafter's context covers
// every earlier position), at most the lookahead, what the budget leaves after the pending
// token, and what max_model_len and max_tokens can still take: a verify commits up to
// drafts + 1 tokens.
int32_t Scheduler::num_draft_tokens(const Sequence& seq, int32_t num_new,
                                    int32_t token_budget) const {
  if (seq.num_lookahead_tokens == 0 || num_new != 1 || seq.num_uncomputed_tokens() != 1 ||
      seq.num_output_tokens() == 0)
    return 0;
  const int32_t drafts = std::min({seq.num_lookahead_tokens, token_budget - 1,
                                   config_.max_model_len - seq.num_tokens() - 1,
                                   seq.max_tokens - seq.num_output_tokens() - 1});
  return std::max(drafts, 0);
}

// Evicts the newest running sequence: it keeps its outputs and recomputes prompt + outputs
// from position 0 when readmitted (no KV swap; GDN state cannot be rebuilt otherwise).
void Scheduler::preempt_newest(StepPlan& plan) {
  std::unique_ptr<Sequence> seq = std::move(running_.back());
  running_.pop_back();
  blocks_.free(*seq);
  slots_.free(seq->state_slots);
  seq->state_slots.clear();
  seq->num_computed_tokens = 0;
  seq->status = SequenceStatus::kPreempted;
  ++seq->num_preemptions;
  plan.preempted.push_back(seq->id);
  waiting_.push_front(std::move(seq));
}

void Scheduler::commit(const StepPlan& plan, std::span<const int32_t> sampled_token_ids) {
  BF_CHECK(static_cast<int32_t>(sampled_token_ids.size()) == plan.num_samples(), "commit got ",
           sampled_token_ids.size(), " sampled tokens for a plan with ", plan.num_samples(),
           " sampling sequences");
  size_t next_sample = 0;
  for (const ScheduledSequence& entry : plan.seqs) {
    if (entry.num_draft_tokens > 0) continue;  // commit_verified's
    const int32_t token = entry.needs_sample ? sampled_token_ids[next_sample++] : -1;
    Sequence& seq = *entry.seq;
    if (seq.is_finished()) continue;  // aborted after schedule()
    BF_CHECK(seq.num_computed_tokens == entry.num_computed, "sequence ", seq.id,
             " changed between schedule and commit");
    seq.num_computed_tokens += entry.num_new_tokens;
    if (!entry.needs_sample) continue;
    seq.output_token_ids.push_back(token);
    if (reached_length(seq)) retire(seq.id, FinishReason::kLength);
  }
}

void Scheduler::commit_verified(const ScheduledSequence& entry, int32_t num_accepted) {
  Sequence& seq = *entry.seq;
  if (seq.is_finished()) return;  // aborted after schedule()
  BF_CHECK(entry.num_draft_tokens > 0 && num_accepted >= 0 &&
               num_accepted <= entry.num_draft_tokens,
           "commit_verified: ", num_accepted, " accepted of ", entry.num_draft_tokens, " drafts");
  BF_CHECK(seq.num_computed_tokens == entry.num_computed, "sequence ", seq.id,
           " changed between schedule and commit");
  BF_CHECK(static_cast<int32_t>(seq.state_slots.size()) > num_accepted, "sequence ", seq.id,
           " holds ", seq.state_slots.size(), " state slots, the verify needed ",
           num_accepted + 1);
  seq.num_computed_tokens += num_accepted + 1;
  std::swap(seq.state_slots[0], seq.state_slots[num_accepted]);
}

bool Scheduler::append_output(Sequence& seq, int32_t token) {
  if (seq.is_finished()) return false;
  seq.output_token_ids.push_back(token);
  if (reached_length(seq)) retire(seq.id, FinishReason::kLength);
  return true;
}

bool Scheduler::reached_length(const Sequence& seq) const {
  return seq.num_output_tokens() >= seq.max_tokens || seq.num_tokens() >= config_.max_model_len;
}

bool Scheduler::finish(SeqId id, FinishReason reason) {
  BF_CHECK(reason != FinishReason::kNone, "finish(", id, ") needs a reason");
  for (std::unique_ptr<Sequence>& seq : finished_) {
    if (seq->id != id) continue;
    if (seq->finish_reason == FinishReason::kLength && reason == FinishReason::kStop) {
      seq->finish_reason = reason;
    }
    return false;
  }
  if (find(id) == nullptr) return false;
  retire(id, reason);
  return true;
}

int32_t Scheduler::abort_request(int64_t request_id) {
  std::vector<SeqId> ids;
  for (const Sequence* seq : waiting_sequences()) {
    if (seq->id.request_id == request_id) ids.push_back(seq->id);
  }
  for (const Sequence* seq : running_sequences()) {
    if (seq->id.request_id == request_id) ids.push_back(seq->id);
  }
  for (SeqId id : ids) retire(id, FinishReason::kAbort);
  return static_cast<int32_t>(ids.size());
}

std::vector<std::unique_ptr<Sequence>> Scheduler::take_finished() {
  return std::exchange(finished_, {});
}

Sequence* Scheduler::find(SeqId id) const {
  for (const std::unique_ptr<Sequence>& seq : running_) {
    if (seq->id == id) return seq.get();
  }
  for (const std::unique_ptr<Sequence>& seq : waiting_) {
    if (seq->id == id) return seq.get();
  }
  return nullptr;
}

void Scheduler::retire(SeqId id, FinishReason reason) {
  auto matches = [id](const std::unique_ptr<Sequence>& seq) { return seq->id == id; };
  std::unique_ptr<Sequence> seq;
  if (auto it = std::find_if(running_.begin(), running_.end(), matches); it != running_.end()) {
    seq = std::move(*it);
    running_.erase(it);
  } else if (auto it = std::find_if(waiting_.begin(), waiting_.end(), matches);
             it != waiting_.end()) {
    seq = std::move(*it);
    waiting_.erase(it);
  }
  BF_CHECK(seq != nullptr, "retire: sequence ", id, " is neither waiting nor running");
  blocks_.free(*seq);
  slots_.free(seq->state_slots);
  seq->state_slots.clear();
  seq->status = SequenceStatus::kFinished;
  seq->finish_reason = reason;
  finished_.push_back(std::move(seq));
}

std::vector<const Sequence*> Scheduler::waiting_sequences() const {
  std::vector<const Sequence*> seqs;
  for (const std::unique_ptr<Sequence>& seq : waiting_) seqs.push_back(seq.get());
  return seqs;
}

std::vector<const Sequence*> Scheduler::running_sequences() const {
  std::vector<const Sequence*> seqs;
  for (const std::unique_ptr<Sequence>& seq : running_) seqs.push_back(seq.get());
  return seqs;
}

void Scheduler::check_integrity() const {
  const std::vector<const Sequence*> running = running_sequences();
  blocks_.check_integrity(running);
  slots_.check_integrity(running);
  BF_CHECK(num_running() <= config_.max_num_seqs, num_running(), " sequences running, max_num_seqs=",
           config_.max_num_seqs);
  int64_t previous_arrival = -1;
  for (const Sequence* seq : running) {
    BF_CHECK(seq->status == SequenceStatus::kRunning, "running sequence ", seq->id,
             " has the wrong status");
    BF_CHECK(seq->arrival_index > previous_arrival, "running queue out of arrival order at ",
             seq->id);
    BF_CHECK(static_cast<int64_t>(seq->block_table.size()) * config_.block_size >=
                 seq->num_computed_tokens,
             "sequence ", seq->id, " has ", seq->num_computed_tokens, " computed tokens but ",
             seq->block_table.size(), " blocks");
    BF_CHECK(static_cast<int32_t>(seq->state_slots.size()) == seq->num_state_slots_needed(),
             "sequence ", seq->id, " holds ", seq->state_slots.size(), " state slots, needs ",
             seq->num_state_slots_needed());
    previous_arrival = seq->arrival_index;
  }
  // FCFS: every running sequence arrived before every waiting one.
  for (const std::unique_ptr<Sequence>& seq : waiting_) {
    BF_CHECK(seq->status == SequenceStatus::kWaiting || seq->status == SequenceStatus::kPreempted,
             "waiting sequence ", seq->id, " has the wrong status");
    BF_CHECK(seq->arrival_index > previous_arrival, "waiting sequence ", seq->id,
             " is out of arrival order");
    BF_CHECK(seq->block_table.empty() && seq->state_slots.empty() &&
                 seq->num_computed_tokens == 0,
             "waiting sequence ", seq->id, " owns blocks, slots or computed tokens");
    previous_arrival = seq->arrival_index;
  }
}

}  // namespace bf
