// CPU reference of paged attention. Cache layout [num_blocks, block_size, Hkv, hd]; token
// position p of a sequence lives in slot block_table[p / block_size] * block_size +
// p % block_size. Each new query i (absolute position num_computed + i) attends to positions
// [0, num_computed + i] when causal, else to all kv_len positions (a sliding window of W
// drops positions <= num_computed + i - W); softmax in f32 with max
// subtraction. kv_write skips slot -1 (padding). GQA: query head h reads kv head
// h / (Hq / Hkv). out may alias q.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_util.h"

namespace bf::cpu {
namespace {

void check_cache(const KvCache& cache, const char* op) {
  check_f32(cache.k, op, "cache.k");
  BF_CHECK(cache.k.rank() == 4, op, ": cache.k must be [num_blocks, block_size, Hkv, hd], got ",
           shape_string(cache.k.shape()));
  check_shape(cache.v, cache.k.shape(), op, "cache.v");
}

}  // namespace

void kv_write(const Tensor& k, const Tensor& v, const ForwardBatch& batch, KvCache& cache) {
  check_cache(cache, "kv_write");
  const int64_t num_slots = cache.k.dim(0) * cache.k.dim(1);
  const int64_t row = cache.k.dim(2) * cache.k.dim(3);  // Hkv * hd
  const int64_t num_tokens = static_cast<int64_t>(batch.slot_mapping.size());
  check_rows(k, num_tokens, row, "kv_write", "k [T, Hkv, hd]");
  check_rows(v, num_tokens, row, "kv_write", "v [T, Hkv, hd]");
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t slot = batch.slot_mapping[t];
    if (slot == -1) continue;  // padding token (vLLM's PAD_SLOT_ID): nothing to write
    BF_CHECK(slot >= 0 && slot < num_slots, "kv_write: token ", t, " maps to slot ", slot,
             ", the cache has ", num_slots, " slots");
    std::copy_n(k.f32() + t * row, row, cache.k.f32() + slot * row);
    std::copy_n(v.f32() + t * row, row, cache.v.f32() + slot * row);
  }
}

void paged_attention(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
                     const AttentionParams& params, Tensor& out) {
  const char* op = "paged_attention";
  check_cache(cache, op);
  const int64_t num_blocks = cache.k.dim(0), block_size = cache.k.dim(1);
  const int64_t hkv = cache.k.dim(2), hd = cache.k.dim(3);
  check_f32(q, op, "q");
  BF_CHECK(q.rank() == 3 && q.dim(2) == hd && q.dim(1) % hkv == 0, op,
           ": q must be [T, Hq, hd=", hd, "] with Hq a multiple of Hkv=", hkv, ", got ",
           shape_string(q.shape()));
  const int64_t num_tokens = q.dim(0), hq = q.dim(1), group = hq / hkv;
  check_shape(out, q.shape(), op, "out");
  check_batch_sequences(batch, num_tokens, op);

  std::vector<float> scores, acc(hd);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    const int64_t kv_len = seq.kv_len();
    const int64_t blocks_needed = (kv_len + block_size - 1) / block_size;
    BF_CHECK(static_cast<int64_t>(seq.block_table.size()) >= blocks_needed, op, ": sequence ", s,
             " has ", kv_len, " kv positions but a block table of ", seq.block_table.size(),
             " blocks of ", block_size);
    // Cache row (slot * Hkv) of every position of this sequence.
    std::vector<int64_t> slot_of(kv_len);
    for (int64_t p = 0; p < kv_len; ++p) {
      const int32_t block = seq.block_table[p / block_size];
      BF_CHECK(block >= 0 && block < num_blocks, op, ": sequence ", s, " block table entry ",
               p / block_size, " is block ", block, ", the cache has ", num_blocks);
      slot_of[p] = block * block_size + p % block_size;
    }
    scores.resize(kv_len);
    for (int64_t i = 0; i < seq.query_len; ++i) {
      const int64_t t = seq.query_start + i;
      const int64_t position = seq.num_computed + i;
      const int64_t visible = params.causal ? position + 1 : kv_len;
      // Sliding window: keys at positions <= position - window are out of sight.
      const int64_t first = params.sliding_window > 0
                                ? std::max<int64_t>(0, position - params.sliding_window + 1)
                                : 0;
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kvh = h / group;
        const float* qh = q.f32() + (t * hq + h) * hd;
        float max_score = -INFINITY;
        for (int64_t p = first; p < visible; ++p) {
          const float* kp = cache.k.f32() + (slot_of[p] * hkv + kvh) * hd;
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += qh[d] * kp[d];
          scores[p] = dot * params.scale;
          max_score = std::max(max_score, scores[p]);
        }
        float sum = 0.0f;
        for (int64_t p = first; p < visible; ++p) sum += scores[p] = std::exp(scores[p] - max_score);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t p = first; p < visible; ++p) {
          const float weight = scores[p] / sum;
          const float* vp = cache.v.f32() + (slot_of[p] * hkv + kvh) * hd;
          for (int64_t d = 0; d < hd; ++d) acc[d] += weight * vp[d];
        }
        std::copy(acc.begin(), acc.end(), out.f32() + (t * hq + h) * hd);
      }
    }
  }
}

}  // namespace bf::cpu
