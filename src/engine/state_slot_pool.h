// Gated DeltaNet state slots: each running sequence holds one slot (its conv + recurrent state
// in every linear-attention layer) from admission until it finishes or is preempted; with
// speculative decoding it holds 1+K, one state snapshot per verified token.
// Invariant (check_integrity): every slot is either free or owned by exactly one sequence.
// A slot is not cleared on reuse: a sequence with num_computed_tokens == 0 starts from a
// zero state (BatchSequence::has_initial_state), so stale contents are never read.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sequence.h"

namespace bf {

class StateSlotPool {
 public:
  explicit StateSlotPool(int32_t num_slots);

  int32_t num_slots() const { return static_cast<int32_t>(in_use_.size()); }
  int32_t num_free() const { return static_cast<int32_t>(free_slots_.size()); }
  bool can_allocate(int32_t count) const { return count <= num_free(); }

  // count distinct free slots; throws bf::Error when fewer are free (check can_allocate).
  std::vector<int32_t> allocate(int32_t count);
  // Returns slots to the pool; throws bf::Error on a slot that is not in use (double free).
  void free(std::span<const int32_t> slots);

  // Throws bf::Error unless every slot is free or in exactly one of owners' state_slots.
  void check_integrity(const std::vector<const Sequence*>& owners) const;

 private:
  std::vector<int32_t> free_slots_;  // a stack: the lowest id is on top at start
  std::vector<bool> in_use_;
};

}  // namespace bf
