// Gated DeltaNet state slot allocation: see state_slot_pool.h.
#include "engine/state_slot_pool.h"

#include "core/error.h"

namespace bf {

StateSlotPool::StateSlotPool(int32_t num_slots) : in_use_(num_slots > 0 ? num_slots : 0, false) {
  BF_CHECK(num_slots > 0, "state slot pool needs at least one slot, got ", num_slots);
  for (int32_t slot = num_slots - 1; slot >= 0; --slot) free_slots_.push_back(slot);
}

std::vector<int32_t> StateSlotPool::allocate(int32_t count) {
  BF_CHECK(count >= 0 && can_allocate(count), "asked for ", count, " state slots, ", num_free(),
           " of ", num_slots(), " free");
  std::vector<int32_t> slots;
  for (int32_t i = 0; i < count; ++i) {
    slots.push_back(free_slots_.back());
    free_slots_.pop_back();
    in_use_[slots.back()] = true;
  }
  return slots;
}

void StateSlotPool::free(std::span<const int32_t> slots) {
  for (int32_t slot : slots) {
    BF_CHECK(slot >= 0 && slot < num_slots() && in_use_[slot], "freeing state slot ", slot,
             " that is not in use");
    in_use_[slot] = false;
    free_slots_.push_back(slot);
  }
}

void StateSlotPool::check_integrity(const std::vector<const Sequence*>& owners) const {
  std::vector<int32_t> num_holders(num_slots(), 0);  // free list counts as one holder
  auto hold = [&](int32_t slot, bool should_be_in_use) {
    BF_CHECK(slot >= 0 && slot < num_slots(), "state slot ", slot, " out of range [0, ",
             num_slots(), ")");
    BF_CHECK(in_use_[slot] == should_be_in_use, "state slot ", slot,
             should_be_in_use ? " is owned but marked free" : " is free but marked in use");
    ++num_holders[slot];
  };
  for (int32_t slot : free_slots_) hold(slot, false);
  for (const Sequence* seq : owners) {
    for (int32_t slot : seq->state_slots) hold(slot, true);
  }
  for (int32_t slot = 0; slot < num_slots(); ++slot) {
    BF_CHECK(num_holders[slot] == 1, "state slot ", slot, " is held ", num_holders[slot],
             " times (free list + sequences); expected exactly once");
  }
}

}  // namespace bf
