#include "model/decode_graphs.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "core/log.h"

namespace bf {

std::vector<int32_t> decode_graph_buckets(int32_t max_num_seqs) {
  const int32_t largest = std::min(max_num_seqs, 256);
  std::vector<int32_t> buckets;
  for (int32_t b : {1, 2, 4})
    if (b <= largest) buckets.push_back(b);
  for (int32_t b = 8; b <= largest; b += 8) buckets.push_back(b);
  if (largest >= 1 && buckets.back() != largest) buckets.push_back(largest);
  return buckets;
}

int32_t decode_graph_bucket(const std::vector<int32_t>& buckets, int32_t n) {
  auto it = std::lower_bound(buckets.begin(), buckets.end(), n);
  return it == buckets.end() || n < 1 ? 0 : *it;
}

bool is_plain_decode(const ForwardBatch& batch) {
  const int32_t n = static_cast<int32_t>(batch.seqs.size());
  if (n == 0 || batch.num_tokens() != n || static_cast<int32_t>(batch.logits_rows.size()) != n ||
      static_cast<int32_t>(batch.positions.size()) != n ||
      static_cast<int32_t>(batch.slot_mapping.size()) != n)
    return false;
  for (int32_t s = 0; s < n; ++s) {
    const BatchSequence& seq = batch.seqs[s];
    if (seq.query_start != s || seq.query_len != 1 || !seq.snapshot_slots.empty() ||
        batch.logits_rows[s] != s)
      return false;
  }
  return true;
}

void pad_decode_batch(ForwardBatch& batch, int32_t n, const GraphPadding& padding) {
  BF_CHECK(is_plain_decode(batch) || batch.seqs.empty(), "pad_decode_batch: not a plain decode");
  BF_CHECK(padding.state_slot >= 0 && padding.kv_block >= 0,
           "pad_decode_batch: no padding slot and block reserved");
  for (int32_t s = static_cast<int32_t>(batch.seqs.size()); s < n; ++s) {
    BatchSequence seq;
    seq.query_start = s;
    seq.query_len = 1;
    seq.num_computed = 0;
    seq.state_slot = padding.state_slot;
    seq.block_table = {padding.kv_block};
    batch.token_ids.push_back(0);
    batch.positions.push_back(0);
    batch.slot_mapping.push_back(-1);
    batch.logits_rows.push_back(s);
    batch.seqs.push_back(std::move(seq));
  }
}

DecodeGraphRunner::DecodeGraphRunner(const Model& model, ModelCache& cache,
                                     std::vector<int32_t> buckets, GraphPadding padding,
                                     int32_t max_model_len)
    : model_(model), cache_(cache), buckets_(std::move(buckets)), padding_(padding) {
  std::sort(buckets_.begin(), buckets_.end());
  BF_CHECK(!buckets_.empty() && buckets_.front() >= 1, "decode graphs: no batch sizes");
  BF_CHECK(max_model_len >= 1, "decode graphs: max_model_len must be positive");
  const int32_t block_size = cache.sizes.block_size;
  max_blocks_per_seq_ = (max_model_len + block_size - 1) / block_size;
  BF_CHECK(padding.state_slot >= 0 && padding.state_slot < cache.sizes.num_state_slots &&
               padding.kv_block >= 0 && padding.kv_block < cache.sizes.num_blocks,
           "decode graphs: the padding slot ", padding.state_slot, " and block ", padding.kv_block,
           " must lie in the cache (", cache.sizes.num_state_slots, " slots, ",
           cache.sizes.num_blocks, " blocks)");
}

void DecodeGraphRunner::capture() {
  Backend& be = model_.backend();
  BF_CHECK(be.supports_graphs(), "decode graphs: the ", be.name(), " backend has none");
  const auto t0 = std::chrono::steady_clock::now();
  graphs_.clear();
  graphs_.resize(buckets_.size());
  // Largest first: it sizes the backend's shared metadata buffer, and the smaller graphs reuse
  // its memory.
  for (size_t i = buckets_.size(); i-- > 0;) {
    ForwardBatch batch;
    pad_decode_batch(batch, buckets_[i], padding_);
    Tensor logits;
    graphs_[i].graph = be.capture_graph(batch, max_blocks_per_seq_, [&] {
      logits = model_.forward(batch, cache_, {}, LogitsOutput::kDevice).device_logits;
    });
    // Keep only the address: the memory goes back to the graph pool, where the next (smaller)
    // graph may take it; a graph's logits are read before another graph runs.
    graphs_[i].logits = Tensor::wrap(logits.raw(), logits.shape(), logits.dtype(), logits.device());
  }
  std::string sizes;
  for (int32_t b : buckets_) sizes += (sizes.empty() ? "" : " ") + std::to_string(b);
  log_info("decode graphs: recorded ", buckets_.size(), " graphs (batch sizes ", sizes, ") in ",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
           " s (--enforce-eager turns them off)");
}

bool DecodeGraphRunner::can_run(const ForwardBatch& batch) const {
  if (graphs_.empty() || !is_plain_decode(batch)) return false;
  if (decode_graph_bucket(buckets_, static_cast<int32_t>(batch.seqs.size())) == 0) return false;
  // A replay reads these on the device without the eager ops' host checks: anything out of
  // range runs eagerly instead, where the op names the problem.
  const int32_t vocab = model_.config().vocab_size;
  const int64_t block_size = cache_.sizes.block_size, num_blocks = cache_.sizes.num_blocks;
  for (const BatchSequence& seq : batch.seqs) {
    if (static_cast<int32_t>(seq.block_table.size()) > max_blocks_per_seq_ ||
        seq.kv_len() > static_cast<int64_t>(seq.block_table.size()) * block_size ||
        seq.state_slot < 0 || seq.state_slot >= cache_.sizes.num_state_slots)
      return false;
    for (int32_t block : seq.block_table)
      if (block < 0 || block >= num_blocks) return false;
  }
  for (int32_t slot : batch.slot_mapping)
    if (slot < -1 || slot >= num_blocks * block_size) return false;
  for (int32_t id : batch.token_ids)
    if (id < 0 || id >= vocab) return false;
  return true;
}

ForwardOutput DecodeGraphRunner::forward(const ForwardBatch& batch, LogitsOutput output) {
  BF_CHECK(can_run(batch), "decode graphs: this batch needs the eager path");
  const int32_t n = static_cast<int32_t>(batch.seqs.size());
  const int32_t bucket = decode_graph_bucket(buckets_, n);
  const size_t index = std::lower_bound(buckets_.begin(), buckets_.end(), bucket) - buckets_.begin();
  Backend& be = model_.backend();
  if (bucket == n) {
    be.replay_graph(*graphs_[index].graph, batch);
  } else {
    ForwardBatch padded = batch;
    pad_decode_batch(padded, bucket, padding_);
    be.replay_graph(*graphs_[index].graph, padded);
  }
  // Padding rows' logits are never looked at.
  const Tensor logits = graphs_[index].logits.rows(0, n);
  ForwardOutput out;
  if (output == LogitsOutput::kArgmax)
    out.argmax = be.argmax_rows(logits);
  else if (output == LogitsOutput::kDevice)
    out.device_logits = logits;
  else
    out.logits = be.to_host(logits);
  return out;
}

}  // namespace bf
