// A minimal driver for Model in tests: owns a cache, hands each sequence its own KV blocks
// (deliberately out of order, so block tables are exercised) and a state slot, and runs
// chunks of tokens through the model. The engine does this for real; this stays tiny.
#pragma once

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "model/model.h"

namespace bf::test {

class TestRunner {
 public:
  TestRunner(const Model& model, int32_t max_seqs, int32_t max_len, int32_t block_size = 16)
      : model_(model), block_size_(block_size) {
    int32_t blocks_per_seq = (max_len + block_size - 1) / block_size;
    CacheSizes sizes{.num_blocks = max_seqs * blocks_per_seq, .block_size = block_size,
                     .num_state_slots = max_seqs};
    cache_ = ModelCache::allocate(model.backend(), model.config(), sizes);
    std::vector<int32_t> blocks(sizes.num_blocks);
    std::iota(blocks.begin(), blocks.end(), 0);
    std::shuffle(blocks.begin(), blocks.end(), std::mt19937(7));
    for (int32_t s = 0; s < max_seqs; ++s) {
      tables_.emplace_back(blocks.begin() + s * blocks_per_seq,
                           blocks.begin() + (s + 1) * blocks_per_seq);
      computed_.push_back(0);
    }
  }

  struct Chunk {
    int32_t seq;                  // sequence index in [0, max_seqs)
    std::vector<int32_t> tokens;  // the next tokens of that sequence
    bool all_logits = false;      // logits for every row, else only the last
  };

  // Runs the chunks as one flattened batch; returns logits rows per chunk.
  std::vector<std::vector<std::vector<float>>> run(const std::vector<Chunk>& chunks) {
    ForwardBatch batch;
    std::vector<std::pair<size_t, size_t>> row_ranges;  // into logits rows, per chunk
    for (const Chunk& chunk : chunks) {
      BatchSequence seq;
      seq.query_start = batch.num_tokens();
      seq.query_len = static_cast<int32_t>(chunk.tokens.size());
      seq.num_computed = computed_[chunk.seq];
      seq.state_slot = chunk.seq;
      seq.block_table = tables_[chunk.seq];
      for (int32_t i = 0; i < seq.query_len; ++i) {
        int32_t pos = seq.num_computed + i;
        batch.token_ids.push_back(chunk.tokens[i]);
        batch.positions.push_back(pos);
        batch.slot_mapping.push_back(tables_[chunk.seq][pos / block_size_] * block_size_ +
                                     pos % block_size_);
      }
      size_t first = batch.logits_rows.size();
      for (int32_t i = chunk.all_logits ? 0 : seq.query_len - 1; i < seq.query_len; ++i)
        batch.logits_rows.push_back(seq.query_start + i);
      row_ranges.emplace_back(first, batch.logits_rows.size());
      computed_[chunk.seq] += seq.query_len;
      batch.seqs.push_back(seq);
    }
    ForwardOutput out = model_.forward(batch, cache_);
    const int64_t vocab = model_.config().vocab_size;
    std::vector<std::vector<std::vector<float>>> result;
    for (auto [first, last] : row_ranges) {
      std::vector<std::vector<float>> rows;
      for (size_t r = first; r < last; ++r)
        rows.emplace_back(out.logits.f32() + r * vocab, out.logits.f32() + (r + 1) * vocab);
      result.push_back(std::move(rows));
    }
    return result;
  }

 private:
  const Model& model_;
  int32_t block_size_;
  ModelCache cache_;
  std::vector<std::vector<int32_t>> tables_;
  std::vector<int32_t> computed_;
};

inline std::vector<double> log_softmax(const std::vector<float>& logits) {
  double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(x - max);
  double lse = max + std::log(sum);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
  return out;
}

inline int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace bf::test
