// BlockManager and StateSlotPool: allocation, growth, freeing, usage and the integrity check
// (every block / slot free or owned exactly once).
#include "engine/block_manager.h"

#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "engine/state_slot_pool.h"

namespace bf {
namespace {

Sequence make_sequence(int64_t request_id, int32_t num_prompt_tokens) {
  return Sequence({.request_id = request_id}, std::vector<int32_t>(num_prompt_tokens, 7), 8);
}

TEST(BlockManager, GrowsBlockTablesAndFreesThem) {
  BlockManager blocks(/*num_blocks=*/8, /*block_size=*/4);
  EXPECT_EQ(blocks.num_free_blocks(), 8);
  EXPECT_DOUBLE_EQ(blocks.usage(), 0.0);
  EXPECT_EQ(blocks.num_blocks_for(0), 0);
  EXPECT_EQ(blocks.num_blocks_for(1), 1);
  EXPECT_EQ(blocks.num_blocks_for(4), 1);
  EXPECT_EQ(blocks.num_blocks_for(5), 2);
  EXPECT_TRUE(blocks.can_allocate(32));
  EXPECT_FALSE(blocks.can_allocate(33));

  Sequence a = make_sequence(1, 5);
  Sequence b = make_sequence(2, 5);
  blocks.grow(a, 5);
  EXPECT_EQ(a.block_table.size(), 2u);
  blocks.grow(a, 8);  // still two blocks
  EXPECT_EQ(a.block_table.size(), 2u);
  blocks.grow(a, 9);
  EXPECT_EQ(a.block_table.size(), 3u);
  blocks.grow(b, 20);
  EXPECT_EQ(b.block_table.size(), 5u);
  EXPECT_EQ(blocks.num_free_blocks(), 0);
  EXPECT_DOUBLE_EQ(blocks.usage(), 1.0);
  EXPECT_NO_THROW(blocks.check_integrity({&a, &b}));

  EXPECT_TRUE(blocks.can_grow(a, 12));   // covered already
  EXPECT_FALSE(blocks.can_grow(a, 13));  // needs a fourth block
  EXPECT_THROW(blocks.grow(a, 13), Error);
  EXPECT_EQ(a.block_table.size(), 3u);  // a failed grow changes nothing

  std::set<int32_t> distinct(a.block_table.begin(), a.block_table.end());
  distinct.insert(b.block_table.begin(), b.block_table.end());
  EXPECT_EQ(distinct.size(), 8u);

  blocks.free(a);
  EXPECT_TRUE(a.block_table.empty());
  EXPECT_EQ(blocks.num_free_blocks(), 3);
  EXPECT_DOUBLE_EQ(blocks.usage(), 5.0 / 8.0);
  EXPECT_NO_THROW(blocks.check_integrity({&a, &b}));
  blocks.free(b);
  EXPECT_EQ(blocks.num_free_blocks(), 8);
  EXPECT_NO_THROW(blocks.check_integrity({}));
}

TEST(BlockManager, IntegrityCatchesDoubleOwnershipAndLeaks) {
  BlockManager blocks(4, 16);
  Sequence a = make_sequence(1, 20);
  Sequence b = make_sequence(2, 20);
  blocks.grow(a, 20);
  EXPECT_THROW(blocks.check_integrity({}), Error);  // a's blocks are owned by nobody listed
  b.block_table = {a.block_table[0]};                // two owners of one block
  EXPECT_THROW(blocks.check_integrity({&a, &b}), Error);
  b.block_table = {blocks.num_blocks()};  // out of range
  EXPECT_THROW(blocks.check_integrity({&a, &b}), Error);
  b.block_table.clear();
  EXPECT_NO_THROW(blocks.check_integrity({&a, &b}));
}

TEST(BlockManager, RejectsEmptyCache) {
  EXPECT_THROW(BlockManager(0, 16), Error);
  EXPECT_THROW(BlockManager(4, 0), Error);
}

TEST(StateSlotPool, AllocatesSeveralSlotsPerSequence) {
  StateSlotPool pool(5);
  EXPECT_EQ(pool.num_free(), 5);
  Sequence a = make_sequence(1, 1);
  Sequence b = make_sequence(2, 1);
  a.state_slots = pool.allocate(1);
  b.state_slots = pool.allocate(3);  // 1+K slots for a K=2 verify
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_FALSE(pool.can_allocate(2));
  EXPECT_THROW(pool.allocate(2), Error);
  std::set<int32_t> distinct(b.state_slots.begin(), b.state_slots.end());
  distinct.insert(a.state_slots.begin(), a.state_slots.end());
  EXPECT_EQ(distinct.size(), 4u);
  EXPECT_NO_THROW(pool.check_integrity({&a, &b}));
  EXPECT_THROW(pool.check_integrity({&a}), Error);  // b's slots are unaccounted for

  pool.free(b.state_slots);
  EXPECT_THROW(pool.free(b.state_slots), Error);  // double free
  b.state_slots.clear();
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_NO_THROW(pool.check_integrity({&a, &b}));
  b.state_slots = {a.state_slots[0]};
  EXPECT_THROW(pool.check_integrity({&a, &b}), Error);  // one slot, two owners
}

TEST(StateSlotPool, RejectsEmptyPool) { EXPECT_THROW(StateSlotPool(0), Error); }

}  // namespace
}  // namespace bf
