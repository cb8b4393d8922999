// The LM head over more rows than one pass holds (Model::kLogitsRowsPerPass: prompt logprobs
// over a long prefill chunk) gives the same rows as a single pass, in full and argmax form.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "model/model.h"

namespace bf {
namespace {

ForwardBatch prefill(int32_t T, const std::vector<int32_t>& logits_rows) {
  ForwardBatch batch;
  BatchSequence seq{.query_start = 0, .query_len = T, .num_computed = 0, .state_slot = 0};
  for (int32_t b = 0; b < (T + 15) / 16; ++b) seq.block_table.push_back(b);
  for (int32_t t = 0; t < T; ++t) {
    batch.token_ids.push_back((t * 37 + 11) % 1000);
    batch.positions.push_back(t);
    batch.slot_mapping.push_back(t);
  }
  batch.seqs.push_back(seq);
  batch.logits_rows = logits_rows;
  return batch;
}

TEST(LmHeadPasses, ManyRowsEqualOnePass) {
  auto be = make_cpu_backend();
  auto model = Model::load(std::filesystem::path(BLOCKFLASH_TEST_DATA_DIR) / "goldens" / "dense_flat",
                           *be);
  const int32_t T = static_cast<int32_t>(Model::kLogitsRowsPerPass) + 77;
  const CacheSizes sizes{.num_blocks = (T + 15) / 16, .block_size = 16, .num_state_slots = 1};
  std::vector<int32_t> all(T), tail;
  for (int32_t t = 0; t < T; ++t) all[t] = t;
  for (int32_t t = T - 100; t < T; ++t) tail.push_back(t);  // crosses the first pass's end

  ModelCache cache_all = ModelCache::allocate(*be, model->config(), sizes);
  ForwardOutput full = model->forward(prefill(T, all), cache_all, {}, LogitsOutput::kFull);
  ModelCache cache_tail = ModelCache::allocate(*be, model->config(), sizes);
  ForwardOutput one_pass = model->forward(prefill(T, tail), cache_tail, {}, LogitsOutput::kFull);
  ModelCache cache_ids = ModelCache::allocate(*be, model->config(), sizes);
  ForwardOutput ids = model->forward(prefill(T, all), cache_ids, {}, LogitsOutput::kArgmax);

  const int64_t vocab = model->config().vocab_size;
  ASSERT_EQ(full.logits.dim(0), T);
  ASSERT_EQ(static_cast<int32_t>(ids.argmax.size()), T);
  for (size_t i = 0; i < tail.size(); ++i)
    for (int64_t v = 0; v < vocab; ++v)
      ASSERT_NEAR(full.logits.f32()[tail[i] * vocab + v], one_pass.logits.f32()[i * vocab + v],
                  1e-4)
          << "row " << tail[i] << " token " << v;
  for (int32_t t = 0; t < T; ++t) {
    const float* row = full.logits.f32() + t * vocab;
    const int32_t best = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    EXPECT_EQ(ids.argmax[t], best) << "row " << t;
  }
}

}  // namespace
}  // namespace bf
