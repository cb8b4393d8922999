// Continuous batching (vLLM v1's model): each step mixes decodes, prefill chunks and newly
// admitted prompts under a token budget. Capacity (KV blocks, state slots, max_num_seqs) is
// reserved here; the engine turns the StepPlan into a ForwardBatch and runs it.
// Order: running sequences first, oldest first (a decode takes 1 token, an unfinished prefill
// its next chunk); then waiting ones, strictly FCFS, while budget, seqs, blocks and slots allow.
// When a running sequence cannot get a KV block, the newest running sequence is preempted
// (blocks and slots freed, recomputed later from position 0), so the oldest always progresses.
// The scheduler owns every unfinished Sequence; pointers in a StepPlan stay valid until
// take_finished() hands finished ones back.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"
#include "engine/state_slot_pool.h"

namespace bf {

struct SchedulerConfig {
  int32_t max_num_seqs = 256;             // running sequences at most
  int32_t max_num_batched_tokens = 8192;  // new tokens per step at most
  int32_t max_model_len = 4096;           // prompt + outputs at most
  int32_t block_size = 16;
  int32_t num_blocks = 0;
  int32_t num_state_slots = 0;
  bool enable_chunked_prefill = true;
  // Caps one prefill chunk so a long prompt cannot take a whole step (0: no cap; only with
  // chunked prefill).
  int32_t long_prefill_token_threshold = 0;
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int32_t num_computed = 0;    // tokens in the KV cache / GDN state before this step
  int32_t num_new_tokens = 0;  // query_len: positions [num_computed, num_computed + num_new_tokens)
  bool needs_sample = false;   // reaches the end of the known tokens: needs logits and a sample
  // Speculative decoding: draft tokens this decode may verify after its pending token (a
  // 1 + num_draft_tokens verify block), within the token budget, max_model_len and
  // max_tokens. 0: a plain step. Verify entries are committed by commit_verified.
  int32_t num_draft_tokens = 0;
};

struct StepPlan {
  std::vector<ScheduledSequence> seqs;  // running (oldest first), then newly admitted
  std::vector<SeqId> preempted;         // evicted this step; blocks and slots already freed

  bool empty() const { return seqs.empty(); }
  int32_t num_tokens() const;  // rows of the forward: new tokens plus verified drafts
  int32_t num_samples() const;  // entries with needs_sample, verify entries excluded
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a sequence (FCFS). Throws bf::Error for one that could never run: an empty prompt
  // or one longer than max_model_len, max_tokens < 1, a duplicate id, or more KV blocks or
  // state slots than exist.
  void add(std::unique_ptr<Sequence> seq);

  // Picks this step's work and reserves its KV blocks and state slots.
  StepPlan schedule();

  // After the forward pass: advances num_computed_tokens of every scheduled sequence and
  // appends sampled_token_ids (one per entry with needs_sample, in plan order); finishes a
  // sequence with "length" at max_tokens or at max_model_len. Entries finished since
  // schedule() (aborted) are skipped, and so are verify entries (num_draft_tokens > 0), which
  // have no sampled_token_ids entry: commit_verified commits them.
  void commit(const StepPlan& plan, std::span<const int32_t> sampled_token_ids);
  // A verify entry (num_draft_tokens > 0): the forward computed its pending token and the
  // first num_accepted drafts, so num_computed_tokens advances by num_accepted + 1 and the GDN
  // state snapshot of the last of them (state_slots[num_accepted]) becomes state_slots[0].
  // The committed tokens then come one at a time through append_output.
  void commit_verified(const ScheduledSequence& entry, int32_t num_accepted);
  // Appends one output token; finishes the sequence with "length" at max_tokens or
  // max_model_len. Returns false (and appends nothing) for a finished sequence.
  bool append_output(Sequence& seq, int32_t token);

  // Ends a waiting or running sequence now and frees its blocks and slots; returns whether it
  // did. On a sequence already finished (not yet taken) it returns false, but kStop replaces
  // kLength, so a last token that is both EOS and the max_tokens-th reports "stop".
  bool finish(SeqId id, FinishReason reason);
  bool abort(SeqId id) { return finish(id, FinishReason::kAbort); }
  // Aborts every sequence of a request (n > 1); returns how many were live.
  int32_t abort_request(int64_t request_id);

  // Finished sequences since the last call (their outputs and finish reasons).
  std::vector<std::unique_ptr<Sequence>> take_finished();

  bool has_unfinished() const { return !waiting_.empty() || !running_.empty(); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  std::vector<const Sequence*> waiting_sequences() const;  // queue order
  std::vector<const Sequence*> running_sequences() const;  // admission order
  const SchedulerConfig& config() const { return config_; }
  const BlockManager& block_manager() const { return blocks_; }
  const StateSlotPool& state_slot_pool() const { return slots_; }

  // Throws bf::Error unless: every block and slot is free or owned by exactly one running
  // sequence; waiting sequences own nothing; queues are in arrival order, every running
  // sequence older than every waiting one; at most max_num_seqs run.
  void check_integrity() const;

 private:
  void schedule_running(StepPlan& plan, int32_t& token_budget);
  void schedule_waiting(StepPlan& plan, int32_t& token_budget);
  // Tokens seq may compute this step within token_budget (0: it cannot run this step).
  int32_t num_new_tokens(const Sequence& seq, int32_t token_budget) const;
  int32_t num_draft_tokens(const Sequence& seq, int32_t num_new, int32_t token_budget) const;
  void preempt_newest(StepPlan& plan);
  bool reached_length(const Sequence& seq) const;
  Sequence* find(SeqId id) const;
  // Removes a waiting or running sequence from its queue, frees what it owns, marks it
  // finished and moves it to finished_.
  void retire(SeqId id, FinishReason reason);

  SchedulerConfig config_;
  BlockManager blocks_;
  StateSlotPool slots_;
  std::deque<std::unique_ptr<Sequence>> waiting_;   // arrival order; preempted go to the front
  std::vector<std::unique_ptr<Sequence>> running_;  // admission (= arrival) order
  std::vector<std::unique_ptr<Sequence>> finished_;
  int64_t next_arrival_index_ = 0;
};

}  // namespace bf
