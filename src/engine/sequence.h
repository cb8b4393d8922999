// One generation stream: its prompt, the tokens produced so far, how many of them the KV cache
// and the Gated DeltaNet state already hold (num_computed_tokens), and the KV blocks and state
// slots it owns. The scheduler owns every live Sequence and is the only writer of the fields
// below "scheduler bookkeeping".
// Invariants: a running sequence's block_table covers at least num_computed_tokens positions and
// it holds num_state_slots_needed() slots; a waiting or preempted one owns no blocks and no
// slots and has num_computed_tokens == 0 (a preempted sequence recomputes prompt + outputs).
#pragma once

#include <compare>
#include <cstdint>
#include <ostream>
#include <utility>
#include <vector>

namespace bf {

// A request with n > 1 choices has n sequences: (request_id, 0..n-1).
struct SeqId {
  int64_t request_id = 0;
  int32_t index = 0;

  friend auto operator<=>(const SeqId&, const SeqId&) = default;
};

inline std::ostream& operator<<(std::ostream& out, const SeqId& id) {
  return out << id.request_id << '.' << id.index;
}

enum class SequenceStatus {
  kWaiting,    // never run yet, in the waiting queue
  kRunning,    // admitted: owns blocks and state slots
  kPreempted,  // evicted for lack of blocks; back in the waiting queue, recomputes from 0
  kFinished,
};

enum class FinishReason { kNone, kStop, kLength, kAbort };

// The OpenAI / vLLM spelling of a finish reason ("" while unfinished).
inline const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kNone: break;
  }
  return "";
}

struct Sequence {
  Sequence(SeqId id, std::vector<int32_t> prompt_token_ids, int32_t max_tokens,
           int32_t num_lookahead_tokens = 0)
      : id(id),
        prompt_token_ids(std::move(prompt_token_ids)),
        max_tokens(max_tokens),
        num_lookahead_tokens(num_lookahead_tokens) {}

  SeqId id;
  std::vector<int32_t> prompt_token_ids;
  std::vector<int32_t> output_token_ids;
  int32_t max_tokens = 0;
  // Speculative decoding: KV blocks are reserved for this many tokens beyond the scheduled
  // ones (a 1+K verify block writes K draft positions), and the sequence holds 1+K state slots
  // (one GDN state snapshot per verified token).
  int32_t num_lookahead_tokens = 0;

  // --- scheduler bookkeeping ---
  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  int64_t arrival_index = -1;       // FCFS order, set by Scheduler::add
  int32_t num_computed_tokens = 0;  // positions [0, num_computed_tokens) are in KV / GDN state
  int32_t num_preemptions = 0;
  std::vector<int32_t> block_table;  // KV block of position p: block_table[p / block_size]
  std::vector<int32_t> state_slots;  // state_slots[0] holds the committed GDN state

  int32_t num_prompt_tokens() const { return static_cast<int32_t>(prompt_token_ids.size()); }
  int32_t num_output_tokens() const { return static_cast<int32_t>(output_token_ids.size()); }
  int32_t num_tokens() const { return num_prompt_tokens() + num_output_tokens(); }
  // Known tokens not yet in the cache: the rest of the prompt (prefill / recompute) or the
  // last sampled token (decode).
  int32_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
  int32_t num_state_slots_needed() const { return 1 + num_lookahead_tokens; }
  bool is_finished() const { return status == SequenceStatus::kFinished; }

  // Token at position pos of prompt + outputs.
  int32_t token_at(int32_t pos) const {
    return pos < num_prompt_tokens() ? prompt_token_ids[pos]
                                     : output_token_ids[pos - num_prompt_tokens()];
  }
  int32_t last_token() const { return token_at(num_tokens() - 1); }
};

}  // namespace bf
