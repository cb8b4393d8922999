// Paged KV cache blocks: a free list of block ids and the growth of each sequence's block
// table as its tokens are computed. Every full-attention layer's cache uses the same ids
// (and so can the DFlash drafter's own cache when it has as many blocks).
// Invariant (check_integrity): every block is either free or owned by exactly one sequence.
// No prefix caching: a shared KV prefix would also need the Gated DeltaNet state at the end of
// that prefix, which is one fixed-size snapshot per prefix, not per block; left for later.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/sequence.h"

namespace bf {

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size);

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t num_free_blocks() const { return static_cast<int32_t>(free_blocks_.size()); }
  // Fraction of blocks in use, in [0, 1] (vLLM's kv_cache_usage).
  double usage() const;

  // Blocks that hold num_tokens positions.
  int32_t num_blocks_for(int64_t num_tokens) const;
  // Whether a sequence with no blocks yet could get blocks for num_tokens positions now.
  bool can_allocate(int64_t num_tokens) const;
  // Whether seq's block table can grow to cover num_tokens positions with the free blocks.
  bool can_grow(const Sequence& seq, int64_t num_tokens) const;
  // Grows seq's block table to cover num_tokens positions (no-op when it already does).
  // Throws bf::Error when there are not enough free blocks: callers check can_grow first.
  void grow(Sequence& seq, int64_t num_tokens);
  // Returns all of seq's blocks to the free list and clears its block table.
  void free(Sequence& seq);

  // Throws bf::Error unless every block is free or in exactly one of owners' block tables.
  void check_integrity(const std::vector<const Sequence*>& owners) const;

 private:
  int32_t num_blocks_;
  int32_t block_size_;
  std::deque<int32_t> free_blocks_;  // taken from the front, returned to the back
};

}  // namespace bf
