// Decode steps as replayed graphs (CUDA graphs; vLLM's CUDA-graph runner, adapted). A plain
// decode step (one new token per sequence) launches ~20 small kernels per layer; recorded once
// per batch-size bucket at start-up, a step is one graph launch instead. A step of B sequences
// runs the graph of the smallest bucket >= B, padded with dummy decodes that touch nothing
// real (a scratch state slot and a null KV block reserved for them, KV slot -1). Prefill,
// mixed and verify steps, and steps that need hidden-state taps, run eagerly.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace bf {

// Batch sizes with a graph, as vLLM's: 1, 2, 4, 8, then multiples of 8 up to
// min(max_num_seqs, 256) (max_num_seqs itself last when it is not one of them).
std::vector<int32_t> decode_graph_buckets(int32_t max_num_seqs);

// The smallest bucket (ascending list) holding n sequences, or 0 when none does.
int32_t decode_graph_bucket(const std::vector<int32_t>& buckets, int32_t n);

// What the padding entries of a graph batch use: a state slot and a KV block that belong to
// no sequence (reserved by the cache's owner).
struct GraphPadding {
  int32_t state_slot = -1;
  int32_t kv_block = -1;
};

// Whether every sequence of batch is a plain decode: one new token, no GDN snapshots, and
// the logits of every row in order (what a graph records).
bool is_plain_decode(const ForwardBatch& batch);

// Appends dummy decodes to a plain decode batch until it has n sequences: token 0 at position
// 0, KV slot -1 (kv_write skips it), the padding state slot, a block table of the null block.
void pad_decode_batch(ForwardBatch& batch, int32_t n, const GraphPadding& padding);

class DecodeGraphRunner {
 public:
  // cache must hold padding's slot and block; max_model_len bounds the block tables.
  DecodeGraphRunner(const Model& model, ModelCache& cache, std::vector<int32_t> buckets,
                    GraphPadding padding, int32_t max_model_len);

  // Records one graph per bucket, largest first (each after one eager warm-up forward of a
  // padding-only batch); logs the buckets and the time taken.
  void capture();

  // Whether forward() can run batch: a plain decode of at most the largest bucket's size
  // whose contexts fit max_model_len.
  bool can_run(const ForwardBatch& batch) const;

  // Model::forward(batch, cache, {}, output) by replaying the bucket's graph. kDevice logits
  // are a view of the graph's output: valid until the next forward.
  ForwardOutput forward(const ForwardBatch& batch, LogitsOutput output);

  const std::vector<int32_t>& buckets() const { return buckets_; }

 private:
  struct Recorded {
    std::unique_ptr<Backend::Graph> graph;
    Tensor logits;  // [bucket, vocab]: where each replay leaves the logits (not owned)
  };

  const Model& model_;
  ModelCache& cache_;
  std::vector<int32_t> buckets_;  // ascending
  GraphPadding padding_;
  int32_t max_blocks_per_seq_;
  std::vector<Recorded> graphs_;  // per bucket, in buckets_ order
};

}  // namespace bf
