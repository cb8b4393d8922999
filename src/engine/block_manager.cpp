// KV block allocation: see block_manager.h.
#include "engine/block_manager.h"

#include "core/error.h"

namespace bf {

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  BF_CHECK(num_blocks > 0, "KV cache needs at least one block, got num_blocks=", num_blocks);
  BF_CHECK(block_size > 0, "block_size must be positive, got ", block_size);
  for (int32_t block = 0; block < num_blocks; ++block) free_blocks_.push_back(block);
}

double BlockManager::usage() const {
  return 1.0 - static_cast<double>(num_free_blocks()) / num_blocks_;
}

int32_t BlockManager::num_blocks_for(int64_t num_tokens) const {
  return static_cast<int32_t>((num_tokens + block_size_ - 1) / block_size_);
}

bool BlockManager::can_allocate(int64_t num_tokens) const {
  return num_blocks_for(num_tokens) <= num_free_blocks();
}

bool BlockManager::can_grow(const Sequence& seq, int64_t num_tokens) const {
  int32_t num_missing = num_blocks_for(num_tokens) - static_cast<int32_t>(seq.block_table.size());
  return num_missing <= num_free_blocks();
}

void BlockManager::grow(Sequence& seq, int64_t num_tokens) {
  BF_CHECK(can_grow(seq, num_tokens), "sequence ", seq.id, " needs ", num_blocks_for(num_tokens),
           " KV blocks, holds ", seq.block_table.size(), ", only ", num_free_blocks(), " free");
  while (static_cast<int32_t>(seq.block_table.size()) < num_blocks_for(num_tokens)) {
    seq.block_table.push_back(free_blocks_.front());
    free_blocks_.pop_front();
  }
}

void BlockManager::free(Sequence& seq) {
  for (int32_t block : seq.block_table) free_blocks_.push_back(block);
  seq.block_table.clear();
}

void BlockManager::check_integrity(const std::vector<const Sequence*>& owners) const {
  std::vector<int32_t> num_holders(num_blocks_, 0);  // free list counts as one holder
  auto hold = [&](int32_t block, const char* holder) {
    BF_CHECK(block >= 0 && block < num_blocks_, "block ", block, " held by ", holder,
             " is out of range [0, ", num_blocks_, ")");
    ++num_holders[block];
  };
  for (int32_t block : free_blocks_) hold(block, "the free list");
  for (const Sequence* seq : owners) {
    for (int32_t block : seq->block_table) hold(block, "a sequence");
  }
  for (int32_t block = 0; block < num_blocks_; ++block) {
    BF_CHECK(num_holders[block] == 1, "block ", block, " is held ", num_holders[block],
             " times (free list + block tables); expected exactly once");
  }
}

}  // namespace bf
