// The flattened batch one forward pass runs (vLLM v1's model): the new tokens of many
// sequences laid end to end, each sequence a prefill chunk, a single decode token or a
// (1+K)-token verify block. Host-side description; a device backend uploads what it needs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"

namespace bf {

struct BatchSequence {
  int32_t query_start = 0;     // first row of this sequence in the flattened token arrays
  int32_t query_len = 0;       // number of new tokens of this sequence in this pass
  int32_t num_computed = 0;    // tokens already in the KV cache / GDN state before this pass
  int32_t state_slot = -1;     // Gated DeltaNet state slot (conv + recurrent) of this sequence
  std::vector<int32_t> block_table;  // KV blocks holding positions [0, num_computed + query_len)
  // Speculative verify: when non-empty (one entry per new token), the Gated DeltaNet ops read
  // the initial state from state_slot, leave running it, and write the state *after* new token
  // i (conv window and recurrent state) to slot snapshot_slots[i]; the final state is not
  // written to state_slot unless it is listed. snapshot_slots may contain state_slot itself:
  // the initial state is read before any snapshot is written. Uses the recurrent form.
  std::vector<int32_t> snapshot_slots;

  bool has_initial_state() const { return num_computed > 0; }
  int32_t kv_len() const { return num_computed + query_len; }
};

struct ForwardBatch {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens] position of each token in its sequence
  std::vector<int32_t> slot_mapping;  // [num_tokens] KV cache slot: block * block_size + offset
  std::vector<BatchSequence> seqs;
  std::vector<int32_t> logits_rows;   // rows (into the flattened tokens) that need logits

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
};

// Throws bf::Error (naming `op`) unless every sequence's rows lie inside the flattened
// [num_tokens] arrays and its snapshot_slots, if any, hold one slot per new token.
inline void check_batch_sequences(const ForwardBatch& batch, int64_t num_tokens,
                                  const char* op) {
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    BF_CHECK(seq.query_start >= 0 && seq.query_len >= 0 &&
                 seq.query_start + seq.query_len <= num_tokens && seq.num_computed >= 0,
             op, ": sequence ", s, " (query_start ", seq.query_start, ", query_len ",
             seq.query_len, ", num_computed ", seq.num_computed, ") does not fit ", num_tokens,
             " tokens");
    BF_CHECK(seq.snapshot_slots.empty() ||
                 static_cast<int64_t>(seq.snapshot_slots.size()) == seq.query_len,
             op, ": sequence ", s, " has ", seq.query_len, " new tokens but ",
             seq.snapshot_slots.size(), " snapshot slots");
  }
}

}  // namespace bf
