// Backend::sample_rows on the GPU (kernels_sample.cu) against the host sampler
// (engine/sampler.cpp sample_token) on the same values: fresh random logits rounded to bf16 on
// the host (the device reads the bf16 tensor, the host its f32 copy), vocabularies 248320 and
// small odd ones, a grid of T / top_k / top_p / min_p and random seeds and positions.
//
// Tolerances. The device computes p = expf((x - max)/T) with CUDA's expf (within 2 ulp of
// glibc's) and sums masses and the CDF in other orders than the host (double reductions; the
// CDF in exact 2^-60 fixed point). A token may therefore differ only when the draw, or a
// top-p / min_p boundary, lies within ~1e-7 relative of a decision point: the test counts
// such disagreements and asserts they stay under 0.5% of draws (they are expected to be ~0).
// Raw logprobs: within 2e-5 absolute (f32 rounding of x - log_sum_exp, expf in the sum);
// ranks and top-N ids exact (they compare logits, no arithmetic).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <random>

#include "backend/cuda/sample.h"
#include "core/error.h"
#include "cuda_test_util.h"
#include "engine/engine.h"
#include "engine/random.h"
#include "engine/sampler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace bf {
namespace {

using test::have_gpu;
using test::round_bf16;
using test::to_device;

class CudaSample : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend();
  }
  std::unique_ptr<Backend> gpu_;
};

SamplingParams params_of(const RowSampling& row) { return sampling_params_of(row); }

// Logits shaped like a model's: a normal bulk, a few strong candidates, all rounded to bf16.
Tensor model_like_logits(std::mt19937& rng, int rows, int vocab, float spread = 2.5f) {
  Tensor t = Tensor::empty({rows, vocab});
  std::normal_distribution<float> bulk(0.0f, spread);
  std::uniform_int_distribution<int> pick(0, vocab - 1);
  std::uniform_real_distribution<float> boost(4.0f, 14.0f);
  for (int r = 0; r < rows; ++r) {
    float* x = t.f32() + static_cast<int64_t>(r) * vocab;
    for (int i = 0; i < vocab; ++i) x[i] = bulk(rng);
    for (int j = 0; j < 8; ++j) x[pick(rng)] += boost(rng);
    for (int i = 0; i < vocab; ++i) x[i] = round_bf16(x[i]);
  }
  return t;
}

struct Tally {
  int draws = 0, token_mismatches = 0;
};

// Compares the device's results with sample_token's, row by row.
void compare(const Tensor& host, const std::vector<RowSampling>& rows,
             const std::vector<SampleResult>& got, Tally& tally, const std::string& what) {
  const int64_t vocab = host.dim(1);
  ASSERT_EQ(got.size(), rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    std::span<const float> x(host.f32() + r * vocab, vocab);
    const SampleResult want =
        sample_token(x, params_of(rows[r]), {}, {}, {}, rows[r].seed, rows[r].position);
    ++tally.draws;
    const SampleResult& g = got[r];
    ASSERT_GE(g.token, 0);
    ASSERT_LT(g.token, vocab);
    if (g.token != want.token) {
      ++tally.token_mismatches;
      std::printf("[sample] mismatch %s row %zu: device %d host %d (T %g k %d p %g min_p %g)\n",
                  what.c_str(), r, g.token, want.token, rows[r].temperature, rows[r].top_k,
                  rows[r].top_p, rows[r].min_p);
      // Still a token the host could draw: it has probability under processed_probs.
      std::vector<float> probs = processed_probs(x, params_of(rows[r]), {}, {}, {});
      EXPECT_GT(probs[g.token], 0.0f) << what << " row " << r;
      continue;
    }
    EXPECT_NEAR(g.logprob, want.logprob, 2e-5) << what << " row " << r;
    EXPECT_EQ(g.rank, want.rank) << what << " row " << r;
    ASSERT_EQ(g.top_logprobs.size(), want.top_logprobs.size()) << what << " row " << r;
    for (size_t i = 0; i < want.top_logprobs.size(); ++i) {
      EXPECT_EQ(g.top_logprobs[i].id, want.top_logprobs[i].id) << what << " row " << r << " #" << i;
      EXPECT_NEAR(g.top_logprobs[i].logprob, want.top_logprobs[i].logprob, 2e-5);
    }
  }
}

TEST_F(CudaSample, RandomBitsMatchHostBitForBit) {
  std::mt19937_64 rng(5);
  std::vector<uint64_t> seed(4096), position(4096), stream(4096);
  for (size_t i = 0; i < seed.size(); ++i) {
    seed[i] = i < 4 ? std::vector<uint64_t>{0, 1, ~0ull, 7}[i] : rng();
    position[i] = i % 3 == 0 ? i : rng();
    stream[i] = i % 4;
  }
  const int64_t n = static_cast<int64_t>(seed.size());
  uint64_t *d_seed, *d_pos, *d_stream, *d_bits;
  double* d_u;
  cudaMalloc(&d_seed, n * 8);
  cudaMalloc(&d_pos, n * 8);
  cudaMalloc(&d_stream, n * 8);
  cudaMalloc(&d_bits, n * 8);
  cudaMalloc(&d_u, n * 8);
  cudaMemcpy(d_seed, seed.data(), n * 8, cudaMemcpyHostToDevice);
  cudaMemcpy(d_pos, position.data(), n * 8, cudaMemcpyHostToDevice);
  cudaMemcpy(d_stream, stream.data(), n * 8, cudaMemcpyHostToDevice);
  cudaMemset(d_bits, 0xff, n * 8);
  cudaMemset(d_u, 0xff, n * 8);  // NaN
  cuda::launch_random_bits(d_seed, d_pos, d_stream, n, d_bits, d_u, nullptr);
  std::vector<uint64_t> bits(n);
  std::vector<double> u(n);
  cudaMemcpy(bits.data(), d_bits, n * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(u.data(), d_u, n * 8, cudaMemcpyDeviceToHost);
  for (void* p : {(void*)d_seed, (void*)d_pos, (void*)d_stream, (void*)d_bits, (void*)d_u})
    cudaFree(p);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(bits[i], random_bits(seed[i], position[i], stream[i])) << i;
    ASSERT_EQ(u[i], uniform(seed[i], position[i], stream[i])) << i;  // exact
  }
}

// The grid of the brief: T 0.3/1/1.7, top_k 1/20/vocab, top_p 0.1/0.9/1, min_p 0/0.1.
TEST_F(CudaSample, MatchesHostSamplerOnGrid) {
  std::mt19937 rng(2024);
  Tally tally;
  for (int vocab : {248320, 4099, 37}) {
    const int rows_per_combo = vocab > 100000 ? 2 : 6;
    for (float t : {0.3f, 1.0f, 1.7f})
      for (int k : {1, 20, vocab})
        for (float p : {0.1f, 0.9f, 1.0f})
          for (float min_p : {0.0f, 0.1f}) {
            Tensor host = model_like_logits(rng, rows_per_combo, vocab);
            std::vector<RowSampling> rows(rows_per_combo);
            for (RowSampling& row : rows) {
              row = RowSampling{.temperature = t, .top_k = k, .top_p = p, .min_p = min_p,
                                .seed = (uint64_t{rng()} << 32) | rng(), .position = rng() % 4096,
                                .num_logprobs = static_cast<int32_t>(rng() % 21)};
            }
            Tensor dev = to_device(*gpu_, host, DType::kBF16);
            char what[96];
            std::snprintf(what, sizeof what, "V%d T%g k%d p%g minp%g", vocab, t, k, p, min_p);
            compare(host, rows, gpu_->sample_rows(dev, rows), tally, what);
          }
  }
  std::printf("[sample] grid: %d draws, %d token mismatches\n", tally.draws,
              tally.token_mismatches);
  EXPECT_LE(tally.token_mismatches, tally.draws / 200);
}

// Greedy rows, f32 rows (32-bit keys), and heavy ties (logits on a coarse grid) that make
// top-k, top-p and top-N cut through runs of equal logits (ties go to lower ids).
TEST_F(CudaSample, GreedyF32AndTies) {
  std::mt19937 rng(77);
  Tally tally;
  for (int vocab : {248320, 1001}) {
    const int count = 12;
    Tensor host = model_like_logits(rng, count, vocab);
    for (int r = count / 2; r < count; ++r)  // coarse: only 9 distinct values
      for (int i = 0; i < vocab; ++i) {
        float& x = host.f32()[static_cast<int64_t>(r) * vocab + i];
        x = std::round(std::clamp(x, -4.0f, 4.0f));
      }
    std::vector<RowSampling> rows(count);
    for (int r = 0; r < count; ++r)
      rows[r] = RowSampling{.temperature = r % 4 == 0 ? 0.0f : 0.7f,
                            .top_k = r % 3 == 0 ? 0 : 15, .top_p = r % 2 ? 0.8f : 1.0f,
                            .min_p = 0.0f, .seed = 11u + r, .position = 3u * r,
                            .num_logprobs = 20};
    for (DType dtype : {DType::kBF16, DType::kF32}) {
      Tensor dev = to_device(*gpu_, host, dtype);
      compare(host, rows, gpu_->sample_rows(dev, rows), tally,
              std::string("ties V") + std::to_string(vocab) + " " + dtype_name(dtype));
    }
  }
  // f32 values that bf16 cannot hold.
  Tensor host = Tensor::empty({6, 3001});
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (int64_t i = 0; i < host.numel(); ++i) host.f32()[i] = normal(rng);
  std::vector<RowSampling> rows(6);
  for (int r = 0; r < 6; ++r)
    rows[r] = RowSampling{.temperature = 1.0f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f,
                          .seed = 5u + r, .position = 0, .num_logprobs = 5};
  compare(host, rows, gpu_->sample_rows(to_device(*gpu_, host, DType::kF32), rows), tally,
          "f32 values");
  std::printf("[sample] greedy/f32/ties: %d draws, %d token mismatches\n", tally.draws,
              tally.token_mismatches);
  EXPECT_LE(tally.token_mismatches, std::max(1, tally.draws / 200));
}

// Small rows through every path (bf16 8-wide loads and the scalar path, f32; top-k, top-p,
// min_p, ties, logprobs): quick enough for compute-sanitizer.
TEST_F(CudaSample, SmallVocabAllPaths) {
  std::mt19937 rng(31);
  Tally tally;
  for (int vocab : {1000, 999}) {
    const int count = 16;
    Tensor host = model_like_logits(rng, count, vocab);
    for (int i = 0; i < vocab; ++i) host.f32()[i] = std::round(std::clamp(host.f32()[i], -3.0f, 3.0f));
    std::vector<RowSampling> rows(count);
    for (int r = 0; r < count; ++r)
      rows[r] = RowSampling{.temperature = r % 5 == 0 ? 0.0f : 0.5f + 0.1f * r,
                            .top_k = r % 3 == 0 ? 0 : 3 + r, .top_p = r % 2 ? 0.7f : 1.0f,
                            .min_p = r % 4 == 1 ? 0.1f : 0.0f, .seed = 900u + r,
                            .position = 2u * r, .num_logprobs = r % 21};
    for (DType dtype : {DType::kBF16, DType::kF32})
      compare(host, rows, gpu_->sample_rows(to_device(*gpu_, host, dtype), rows), tally,
              std::string("small V") + std::to_string(vocab) + " " + dtype_name(dtype));
  }
  EXPECT_LE(tally.token_mismatches, 1) << tally.draws << " draws";
}

// Device draws follow processed_probs: chi-square goodness of fit over 40000 draws (one row
// per draw, the same logits, positions 0..N-1) with truncation active.
TEST_F(CudaSample, DrawsFollowProcessedProbs) {
  const int vocab = 64, draws = 40000;
  std::mt19937 rng(3);
  // A flat row (normal, sd 1) so that top-k, top-p and min_p each cut a long tail.
  Tensor one = Tensor::empty({1, vocab});
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < vocab; ++i) one.f32()[i] = round_bf16(normal(rng));
  Tensor host = Tensor::empty({draws, vocab});
  for (int r = 0; r < draws; ++r) std::copy_n(one.f32(), vocab, host.f32() + r * vocab);
  std::vector<RowSampling> rows(draws);
  for (int r = 0; r < draws; ++r)
    rows[r] = RowSampling{.temperature = 0.8f, .top_k = 30, .top_p = 0.95f, .min_p = 0.01f,
                          .seed = 123, .position = static_cast<uint64_t>(r)};
  std::vector<SampleResult> got = gpu_->sample_rows(to_device(*gpu_, host), rows);
  std::vector<float> probs =
      processed_probs(std::span<const float>(one.f32(), vocab), params_of(rows[0]), {}, {}, {});
  std::vector<int> counts(vocab, 0);
  for (const SampleResult& s : got) ++counts[s.token];
  double chi2 = 0.0;
  int bins = 0;
  for (int i = 0; i < vocab; ++i) {
    if (probs[i] == 0.0f) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double expected = probs[i] * draws;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++bins;
  }
  const int df = bins - 1;
  // Mean df, sd sqrt(2 df): 6 sd is far beyond chance (the draws are fixed by the seed).
  std::printf("[sample] chi-square %.1f with %d degrees of freedom\n", chi2, df);
  ASSERT_GT(df, 10);
  EXPECT_LT(chi2, df + 6.0 * std::sqrt(2.0 * df));
}

TEST_F(CudaSample, SeededAndBatchIndependent) {
  std::mt19937 rng(9);
  const int vocab = 248320, count = 8;
  Tensor host = model_like_logits(rng, count, vocab);
  std::vector<RowSampling> rows(count);
  for (int r = 0; r < count; ++r)
    rows[r] = RowSampling{.temperature = 1.0f, .top_k = 0, .top_p = 0.95f, .min_p = 0.0f,
                          .seed = 42, .position = static_cast<uint64_t>(r), .num_logprobs = 3};
  Tensor dev = to_device(*gpu_, host);
  std::vector<SampleResult> a = gpu_->sample_rows(dev, rows), b = gpu_->sample_rows(dev, rows);
  for (int r = 0; r < count; ++r) {
    EXPECT_EQ(a[r].token, b[r].token);
    EXPECT_EQ(a[r].logprob, b[r].logprob);
  }
  // Row 5 alone gives what it gave in the batch.
  Tensor single = Tensor::empty({1, vocab});
  std::copy_n(host.f32() + 5 * vocab, vocab, single.f32());
  EXPECT_EQ(gpu_->sample_rows(to_device(*gpu_, single), {rows[5]})[0].token, a[5].token);
}

TEST_F(CudaSample, RowWithoutFiniteLogitIsAnError) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (float fill : {neg_inf, std::numeric_limits<float>::quiet_NaN()}) {
    Tensor host = model_like_logits(*std::make_unique<std::mt19937>(1), 2, 1000);
    for (int i = 0; i < 1000; ++i) host.f32()[1000 + i] = fill;
    try {
      gpu_->sample_rows(to_device(*gpu_, host), {RowSampling{}, RowSampling{}});
      ADD_FAILURE() << "no error for a row of " << fill;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("row 1: no token can be sampled"), std::string::npos)
          << e.what();
    }
  }
  // A row count that does not match the logits is named too.
  EXPECT_THROW(gpu_->sample_rows(to_device(*gpu_, Tensor::empty({2, 8})), {RowSampling{}}), Error);
}

// The engine samples on the device and on the host alike: f32 storage, temperature 0.8,
// seed 7 (and a truncated, logprobs-reporting variant) on dense_nested.
TEST(CudaSampleEngine, DeviceSamplerEqualsHostSampler) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  namespace fs = std::filesystem;
  const char* data = std::getenv("BLOCKFLASH_TEST_DATA_DIR");
  const fs::path dir = fs::path(data != nullptr ? data : BLOCKFLASH_TEST_DATA_DIR) / "goldens" /
                       "dense_nested";
  auto backend = make_cuda_backend(CudaBackendOptions{.dtype = DType::kF32});
  auto tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_model_dir(dir));
  auto generate = [&](bool device_sampling) {
    EngineConfig config;
    config.max_model_len = 256;
    config.cache_memory_bytes = size_t{256} << 20;
    config.device_sampling = device_sampling;
    Engine engine(Model::load(dir, *backend), tokenizer, config);
    std::vector<std::vector<int32_t>> ids(4);
    std::vector<std::vector<PositionLogprobs>> logprobs(4);
    for (int i = 0; i < 4; ++i) {
      EngineRequest request;
      request.request_id = i;
      request.prompt_token_ids = {11, 200 + 17 * i, 5, 99, 3 + i};
      request.params.temperature = 0.8f;
      request.params.seed = 7;
      request.params.max_tokens = 24;
      request.params.ignore_eos = true;
      if (i >= 2) {
        request.params.top_k = 20;
        request.params.top_p = 0.9f;
        request.params.logprobs = 3;
      }
      engine.add_request(request, [&, i](const SequenceUpdate& u) {
        ids[i].insert(ids[i].end(), u.new_token_ids.begin(), u.new_token_ids.end());
        logprobs[i].insert(logprobs[i].end(), u.new_logprobs.begin(), u.new_logprobs.end());
      });
    }
    for (int guard = 0; engine.has_work() && guard < 10000; ++guard) engine.step();
    return std::make_pair(ids, logprobs);
  };
  auto [device_ids, device_lp] = generate(true);
  auto [host_ids, host_lp] = generate(false);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(device_ids[i], host_ids[i]) << "request " << i;
    EXPECT_EQ(device_ids[i].size(), 24u);
    ASSERT_EQ(device_lp[i].size(), host_lp[i].size());
    for (size_t t = 0; t < device_lp[i].size(); ++t) {
      EXPECT_NEAR(device_lp[i][t].logprob, host_lp[i][t].logprob, 2e-5);
      EXPECT_EQ(device_lp[i][t].rank, host_lp[i][t].rank);
      ASSERT_EQ(device_lp[i][t].top.size(), host_lp[i][t].top.size());
      for (size_t j = 0; j < host_lp[i][t].top.size(); ++j)
        EXPECT_EQ(device_lp[i][t].top[j].id, host_lp[i][t].top[j].id);
    }
  }
}

}  // namespace
}  // namespace bf
