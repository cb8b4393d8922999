// Decode steps replayed as CUDA graphs against the same steps run eagerly, on the tiny goldens
// (tests/goldens: dense and MoE), in the f32 mode and in bf16:
//  - a graph replay equals an eager forward of the same (padded) batch bit for bit, step
//    after step with growing contexts that cross the split-KV threshold (512 keys), so the
//    split layout a replay computes on the device is the eager one;
//  - greedy decoding through graphs gives the eager tokens for batch sizes that pad (3 -> 4,
//    5 -> 8) and for a stream where prefill steps (eager) alternate with decode steps (graphs).
//    Against an unpadded eager batch the GEMMs see another row count (cuBLASLt may pick
//    another algorithm), so logits may differ in the last bits: f32 asserts the tokens and
//    logits within 1e-3 (observed differences are printed); bf16 prints them (tiny random
//    models are chaotic under bf16 rounding, see cuda_golden_test.cpp);
//  - padding rows write no KV entry (not even in the null block) and no state slot but the
//    scratch one: every other byte of the cache is unchanged by a padded replay.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "backend/cuda/cuda_backend.h"
#include "model/decode_graphs.h"
#include "model/model.h"

namespace bf {
namespace {

namespace fs = std::filesystem;

fs::path goldens_dir() {
  const char* dir = std::getenv("BLOCKFLASH_TEST_DATA_DIR");
  return fs::path(dir != nullptr ? dir : BLOCKFLASH_TEST_DATA_DIR) / "goldens";
}

constexpr int32_t kBlockSize = 16;
constexpr int32_t kMaxLen = 640;  // past 512: long contexts take the split-KV path

// A cache for max_seqs sequences plus the graph padding's slot and block (the last ones),
// each sequence with its own shuffled blocks, and the batches of its steps.
class Driver {
 public:
  Driver(const Model& model, int32_t max_seqs) : model_(model) {
    const int32_t per_seq = (kMaxLen + kBlockSize - 1) / kBlockSize;
    CacheSizes sizes{.num_blocks = max_seqs * per_seq + 1, .block_size = kBlockSize,
                     .num_state_slots = max_seqs + 1};
    cache_ = ModelCache::allocate(model.backend(), model.config(), sizes);
    padding_ = GraphPadding{.state_slot = max_seqs, .kv_block = sizes.num_blocks - 1};
    std::vector<int32_t> blocks(max_seqs * per_seq);
    std::iota(blocks.begin(), blocks.end(), 0);
    std::shuffle(blocks.begin(), blocks.end(), std::mt19937(11));
    for (int32_t s = 0; s < max_seqs; ++s) {
      tables_.emplace_back(blocks.begin() + s * per_seq, blocks.begin() + (s + 1) * per_seq);
      computed_.push_back(0);
    }
  }

  // New tokens per sequence (seq index -> tokens); logits of each chunk's last row. Block
  // tables hold exactly the blocks the context needs, as the engine's do.
  ForwardBatch batch(const std::vector<std::pair<int32_t, std::vector<int32_t>>>& chunks) {
    ForwardBatch b;
    for (const auto& [s, tokens] : chunks) {
      BatchSequence seq;
      seq.query_start = b.num_tokens();
      seq.query_len = static_cast<int32_t>(tokens.size());
      seq.num_computed = computed_[s];
      seq.state_slot = s;
      const int32_t need = (seq.kv_len() + kBlockSize - 1) / kBlockSize;
      seq.block_table.assign(tables_[s].begin(), tables_[s].begin() + need);
      for (int32_t i = 0; i < seq.query_len; ++i) {
        const int32_t pos = seq.num_computed + i;
        b.token_ids.push_back(tokens[i]);
        b.positions.push_back(pos);
        b.slot_mapping.push_back(tables_[s][pos / kBlockSize] * kBlockSize + pos % kBlockSize);
      }
      b.logits_rows.push_back(seq.query_start + seq.query_len - 1);
      b.seqs.push_back(std::move(seq));
    }
    return b;
  }
  void advance(const ForwardBatch& b) {
    for (size_t i = 0; i < b.seqs.size(); ++i) computed_[b.seqs[i].state_slot] += b.seqs[i].query_len;
  }
  ModelCache& cache() { return cache_; }
  const GraphPadding& padding() const { return padding_; }

 private:
  const Model& model_;
  ModelCache cache_;
  GraphPadding padding_;
  std::vector<std::vector<int32_t>> tables_;
  std::vector<int32_t> computed_;
};

std::vector<float> host_floats(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  return std::vector<float>(h.f32(), h.f32() + h.numel());
}

int32_t argmax_row(const Tensor& logits, int64_t row) {
  const int64_t n = logits.dim(1);
  const float* p = logits.f32() + row * n;
  return static_cast<int32_t>(std::max_element(p, p + n) - p);
}

double max_abs_diff(const Tensor& a, int64_t rows_a, const Tensor& b) {
  double worst = 0;
  const int64_t n = a.dim(1) * rows_a;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, double(std::abs(a.f32()[i] - b.f32()[i])));
  return worst;
}

bool bitwise_equal(const Tensor& a, const Tensor& b, int64_t rows) {
  return std::memcmp(a.f32(), b.f32(), rows * a.dim(1) * sizeof(float)) == 0;
}

using Param = std::tuple<std::string, std::string>;  // golden, dtype

class CudaGraphs : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!query_cuda_device(0).present) GTEST_SKIP() << "no CUDA device";
    const fs::path dir = goldens_dir() / std::get<0>(GetParam());
    if (!fs::exists(dir / "config.json")) GTEST_SKIP() << "no golden " << dir;
    f32_ = std::get<1>(GetParam()) == "f32";
    name_ = std::get<0>(GetParam()) + "/" + std::get<1>(GetParam());
    backend_ = make_cuda_backend(CudaBackendOptions{.dtype = f32_ ? DType::kF32 : DType::kBF16});
    model_ = Model::load(dir, *backend_);
  }
  std::vector<int32_t> prompt(int32_t len, uint32_t seed) const {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> id(0, model_->config().vocab_size - 1);
    std::vector<int32_t> ids(len);
    for (auto& t : ids) t = id(rng);
    return ids;
  }
  bool f32_ = true;
  std::string name_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
};

// Decodes B sequences greedily for 14 steps three times, on three caches filled by the same
// prefill: through graphs, eagerly on the padded batch (must be bit-identical) and eagerly on
// the batch itself (the same tokens).
TEST_P(CudaGraphs, GreedyDecodeThroughGraphsEqualsEager) {
  const int32_t max_seqs = 8, steps = 14;
  for (int32_t B : {8, 1, 3, 5}) {  // 8 first: the largest graph sizes the backend's buffer
    Driver graphed(*model_, max_seqs), eager(*model_, max_seqs), unpadded(*model_, max_seqs);
    DecodeGraphRunner runner(*model_, graphed.cache(), decode_graph_buckets(max_seqs),
                             graphed.padding(), kMaxLen);
    runner.capture();
    // Prompts of 500 + 2s tokens: the steps cross 512 keys (one split, then several).
    std::vector<std::pair<int32_t, std::vector<int32_t>>> prompts;
    std::vector<int32_t> next(B);
    for (int32_t s = 0; s < B; ++s) prompts.emplace_back(s, prompt(500 + 2 * s, 100 * B + s));
    for (Driver* d : {&graphed, &eager, &unpadded}) {
      ForwardBatch b = d->batch(prompts);
      ForwardOutput out = model_->forward(b, d->cache());
      d->advance(b);
      for (int32_t s = 0; s < B; ++s) next[s] = argmax_row(out.logits, s);
    }
    double worst_unpadded = 0;
    int32_t same_tokens = 0;
    const int32_t bucket = decode_graph_bucket(runner.buckets(), B);
    for (int32_t step = 0; step < steps; ++step) {
      std::vector<std::pair<int32_t, std::vector<int32_t>>> decode;
      for (int32_t s = 0; s < B; ++s) decode.emplace_back(s, std::vector<int32_t>{next[s]});
      ForwardBatch gb = graphed.batch(decode), eb = eager.batch(decode), ub = unpadded.batch(decode);
      ASSERT_TRUE(runner.can_run(gb));
      Tensor g = runner.forward(gb, LogitsOutput::kFull).logits;
      pad_decode_batch(eb, bucket, eager.padding());
      Tensor e = model_->forward(eb, eager.cache()).logits;
      Tensor u = model_->forward(ub, unpadded.cache()).logits;
      for (Driver* d : {&graphed, &eager, &unpadded}) d->advance(ub);
      ASSERT_TRUE(bitwise_equal(g, e, B))
          << name_ << " B=" << B << " step " << step << ": graph replay differs from the eager "
          << "forward of the same padded batch by " << max_abs_diff(g, B, e);
      worst_unpadded = std::max(worst_unpadded, max_abs_diff(g, B, u));
      for (int32_t s = 0; s < B; ++s) {
        const int32_t tg = argmax_row(g, s), tu = argmax_row(u, s);
        same_tokens += tg == tu;
        if (f32_) EXPECT_EQ(tg, tu) << name_ << " B=" << B << " step " << step << " seq " << s;
        next[s] = tg;
      }
    }
    std::printf("[graphs %s] B=%d (bucket %d): %d steps bit-identical to eager padded; vs eager "
                "unpadded %d/%d tokens equal, max logit diff %.3g\n",
                name_.c_str(), B, bucket, steps, same_tokens, B * steps, worst_unpadded);
    if (f32_) EXPECT_LT(worst_unpadded, 1e-3) << name_ << " B=" << B;
    EXPECT_FALSE(std::isnan(worst_unpadded));
  }
}

// Prefill and mixed steps (eager) between decode steps (graphs) of a growing set of
// sequences, against the same stream run eagerly throughout.
TEST_P(CudaGraphs, MixedStreamPrefillEagerDecodeGraphs) {
  Driver graphed(*model_, 4), eager(*model_, 4);
  DecodeGraphRunner runner(*model_, graphed.cache(), decode_graph_buckets(4), graphed.padding(),
                           kMaxLen);
  runner.capture();
  std::vector<int32_t> next(4, 0);
  int32_t graph_steps = 0, eager_steps = 0;
  double worst = 0;
  // One step on both drivers; the graphed run's tokens feed both.
  auto step = [&](const std::vector<std::pair<int32_t, std::vector<int32_t>>>& chunks) {
    ForwardBatch gb = graphed.batch(chunks), eb = eager.batch(chunks);
    const bool graph = runner.can_run(gb);
    (graph ? graph_steps : eager_steps)++;
    Tensor g = graph ? runner.forward(gb, LogitsOutput::kFull).logits : model_->forward(gb, graphed.cache()).logits;
    Tensor e = model_->forward(eb, eager.cache()).logits;
    graphed.advance(gb);
    eager.advance(eb);
    worst = std::max(worst, max_abs_diff(g, static_cast<int64_t>(chunks.size()), e));
    for (size_t i = 0; i < chunks.size(); ++i) {
      const int32_t tg = argmax_row(g, i);
      if (f32_) EXPECT_EQ(tg, argmax_row(e, i)) << name_ << " sequence " << chunks[i].first;
      next[chunks[i].first] = tg;
    }
  };
  auto decodes = [&](std::vector<int32_t> seqs) {
    std::vector<std::pair<int32_t, std::vector<int32_t>>> chunks;
    for (int32_t s : seqs) chunks.emplace_back(s, std::vector<int32_t>{next[s]});
    return chunks;
  };
  step({{0, prompt(30, 1)}});
  for (int i = 0; i < 3; ++i) step(decodes({0}));
  step({{0, {next[0]}}, {1, prompt(20, 2)}});  // mixed: a decode and a prefill
  for (int i = 0; i < 3; ++i) step(decodes({0, 1}));
  step({{2, prompt(560, 3)}});  // a long prefill alone: the next decodes split the keys
  for (int i = 0; i < 4; ++i) step(decodes({0, 1, 2}));  // 3 -> bucket 4
  step({{3, {5}}});  // a one-token prompt is a plain decode shape: a graph runs it
  for (int i = 0; i < 3; ++i) step(decodes({0, 1, 2, 3}));
  std::printf("[graphs %s] mixed stream: %d graph steps, %d eager steps, max logit diff %.3g\n",
              name_.c_str(), graph_steps, eager_steps, worst);
  EXPECT_EQ(graph_steps, 14);
  EXPECT_EQ(eager_steps, 3);
  if (f32_) EXPECT_LT(worst, 1e-3);
  EXPECT_FALSE(std::isnan(worst));
}

// A padded replay (3 sequences in the graph of 4) changes the cache only where the three
// real decodes write: their new KV slots and their state slots (and the padding's scratch
// slot). Everything else, the null block included, keeps its random contents; so does
// recording the graph (which runs a padding-only batch).
TEST_P(CudaGraphs, PaddingRowsTouchNothingReal) {
  const int32_t max_seqs = 4;
  Driver d(*model_, max_seqs);
  uint64_t seed = 5;
  for (KvCache& kv : d.cache().kv) {
    cuda_fill_uniform(kv.k, 1.0f, seed++);
    cuda_fill_uniform(kv.v, 1.0f, seed++);
  }
  for (GdnStatePool& g : d.cache().gdn) {
    cuda_fill_uniform(g.conv, 0.5f, seed++);
    cuda_fill_uniform(g.recurrent, 0.05f, seed++);
  }
  auto snapshot = [&] {
    std::vector<std::vector<float>> all;
    for (KvCache& kv : d.cache().kv) {
      all.push_back(host_floats(*backend_, kv.k));
      all.push_back(host_floats(*backend_, kv.v));
    }
    for (GdnStatePool& g : d.cache().gdn) {
      all.push_back(host_floats(*backend_, g.conv));
      all.push_back(host_floats(*backend_, g.recurrent));
    }
    return all;
  };
  const ModelConfig& c = model_->config();
  const int64_t kv_row = int64_t{c.num_key_value_heads} * c.head_dim;  // one KV slot
  // Asserts that only KV slots in `kv_slots` and state slots in `state_slots` (and the
  // padding's) changed; returns how many values of those changed.
  auto changes = [&](const std::vector<std::vector<float>>& before,
                     const std::vector<std::vector<float>>& after,
                     const std::vector<int32_t>& kv_slots, const std::vector<int32_t>& state_slots) {
    size_t t = 0;
    int64_t changed = 0;
    for (size_t layer = 0; layer < d.cache().kv.size(); ++layer) {
      for (int part = 0; part < 2; ++part, ++t) {
        for (size_t i = 0; i < before[t].size(); ++i) {
          const int64_t slot = static_cast<int64_t>(i) / kv_row;
          if (std::find(kv_slots.begin(), kv_slots.end(), slot) != kv_slots.end()) {
            changed += before[t][i] != after[t][i];
          } else {
            EXPECT_EQ(before[t][i], after[t][i]) << name_ << " KV layer " << layer << " slot "
                                                 << slot << " changed (null block "
                                                 << d.padding().kv_block << ")";
            if (before[t][i] != after[t][i]) return changed;
          }
        }
      }
    }
    for (size_t layer = 0; layer < d.cache().gdn.size(); ++layer) {
      for (int part = 0; part < 2; ++part, ++t) {
        const int64_t per_slot = static_cast<int64_t>(before[t].size()) / (max_seqs + 1);
        for (size_t i = 0; i < before[t].size(); ++i) {
          const int64_t slot = static_cast<int64_t>(i) / per_slot;
          if (std::find(state_slots.begin(), state_slots.end(), slot) != state_slots.end()) {
            changed += before[t][i] != after[t][i];
          } else if (slot != d.padding().state_slot) {
            EXPECT_EQ(before[t][i], after[t][i]) << name_ << " GDN layer " << layer << " slot "
                                                 << slot << " changed";
            if (before[t][i] != after[t][i]) return changed;
          }
        }
      }
    }
    return changed;
  };

  const auto filled = snapshot();
  DecodeGraphRunner runner(*model_, d.cache(), {4}, d.padding(), kMaxLen);
  runner.capture();
  EXPECT_EQ(changes(filled, snapshot(), {}, {}), 0);

  std::vector<std::pair<int32_t, std::vector<int32_t>>> prompts;
  for (int32_t s = 0; s < 3; ++s) prompts.emplace_back(s, prompt(17 + s, 40 + s));
  ForwardBatch pb = d.batch(prompts);
  model_->forward(pb, d.cache());
  d.advance(pb);
  const auto before = snapshot();
  ForwardBatch b = d.batch({{0, {1}}, {1, {2}}, {2, {3}}});
  ASSERT_TRUE(runner.can_run(b));
  runner.forward(b, LogitsOutput::kArgmax);
  const int64_t changed = changes(before, snapshot(), b.slot_mapping, {0, 1, 2});
  EXPECT_GT(changed, 0) << "the real decodes wrote nothing";
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaGraphs,
                         ::testing::Combine(::testing::Values("dense_flat", "moe_flat"),
                                            ::testing::Values("f32", "bf16")),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param);
                         });

}  // namespace
}  // namespace bf
