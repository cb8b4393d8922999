// The whole model on the GPU against Hugging Face transformers (float32) on the tiny goldens
// (tests/goldens), and against itself: chunked prefill == one shot, batched == alone.
//
// Tolerance: 0.1 nats on teacher-forced logprobs (the CPU f32 path meets 2e-3). The GPU stores
// every activation, the KV cache and the weights of rank >= 2 in bf16 (relative rounding up to
// 2^-9 ≈ 0.2%) at ~10 rounding points per layer x 6 layers; the logits of these tiny random
// models span several nats, so logit errors of a few 1e-2 are expected from rounding alone;
// 0.1 leaves margin while still catching any real bug (a wrong mask, state or routing moves
// logprobs by whole nats). Greedy tokens: identical unless the reference's top-2 gap is < 0.1.
// GPU vs GPU comparisons (chunked, batched) use 0.05: the same bf16 ops, only GEMM shapes and
// therefore cuBLASLt algorithms (summation orders) differ.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../model/test_runner.h"
#include "backend/cuda/cuda_backend.h"
#include "model/model.h"

namespace bf {
namespace {

namespace fs = std::filesystem;
using test::TestRunner;

constexpr double kLogprobTolerance = 0.1;
constexpr double kSelfTolerance = 0.05;

fs::path goldens_dir() { return fs::path(BLOCKFLASH_TEST_DATA_DIR) / "goldens"; }

std::vector<std::string> golden_cases() {
  std::vector<std::string> cases;
  for (const char* name : {"dense_flat", "dense_nested", "moe_flat", "moe_nested"})
    if (fs::exists(goldens_dir() / name / "golden.json")) cases.push_back(name);
  return cases;
}

class CudaGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!query_cuda_device(0).present) GTEST_SKIP() << "no CUDA device";
    dir_ = goldens_dir() / GetParam();
    std::ifstream in(dir_ / "golden.json");
    golden_ = nlohmann::json::parse(in);
    backend_ = make_cuda_backend();
    model_ = Model::load(dir_, *backend_);
  }
  std::vector<int32_t> ids(const nlohmann::json& prompt) const {
    return prompt["ids"].get<std::vector<int32_t>>();
  }
  fs::path dir_;
  nlohmann::json golden_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
};

double max_logprob_diff(const std::vector<float>& a, const std::vector<float>& b) {
  auto la = test::log_softmax(a), lb = test::log_softmax(b);
  double worst = 0;
  for (size_t i = 0; i < la.size(); ++i)
    if (lb[i] > -20) worst = std::max(worst, std::abs(la[i] - lb[i]));
  return worst;
}

TEST_P(CudaGolden, TeacherForcedLogprobsMatchTransformers) {
  for (const auto& prompt : golden_["prompts"]) {
    std::vector<int32_t> tokens = ids(prompt);
    TestRunner runner(*model_, 1, static_cast<int32_t>(tokens.size()) + 64);
    auto rows = runner.run({{.seq = 0, .tokens = tokens, .all_logits = true}})[0];
    ASSERT_EQ(rows.size(), tokens.size());
    double worst = 0;
    for (size_t pos = 0; pos < tokens.size(); ++pos) {
      std::vector<double> lp = test::log_softmax(rows[pos]);
      for (const auto& entry : prompt["teacher_forced"][pos]) {
        double diff = std::abs(lp[entry["id"].get<int32_t>()] - entry["logprob"].get<double>());
        worst = std::max(worst, diff);
        ASSERT_LT(diff, kLogprobTolerance) << "prompt length " << tokens.size() << ", position "
                                           << pos << ", token " << entry["id"];
      }
    }
    std::printf("[golden %s] prompt length %zu: worst teacher-forced logprob diff %.5f\n",
                GetParam().c_str(), tokens.size(), worst);
    RecordProperty("worst_logprob_diff_len" + std::to_string(tokens.size()), std::to_string(worst));
  }
}

TEST_P(CudaGolden, GreedyContinuationMatchesTransformers) {
  for (const auto& prompt : golden_["prompts"]) {
    std::vector<int32_t> tokens = ids(prompt);
    const auto& expected = prompt["greedy"];
    const auto& top2 = prompt["greedy_top2"];
    TestRunner runner(*model_, 1, static_cast<int32_t>(tokens.size() + expected.size()) + 16);
    std::vector<float> logits = runner.run({{.seq = 0, .tokens = tokens}})[0].back();
    size_t matched = 0;
    for (size_t step = 0; step < expected.size(); ++step) {
      int32_t token = test::argmax(logits);
      double gap = top2[step][0].get<double>() - top2[step][1].get<double>();
      if (token != expected[step].get<int32_t>()) {
        ASSERT_LT(gap, kLogprobTolerance) << "greedy token " << step << " differs (" << token
                                          << " vs " << expected[step] << "), top-2 gap " << gap;
        break;
      }
      ++matched;
      logits = runner.run({{.seq = 0, .tokens = {token}}})[0].back();
    }
    std::printf("[golden %s] prompt length %zu: %zu/%zu greedy tokens identical\n",
                GetParam().c_str(), tokens.size(), matched, expected.size());
  }
}

TEST_P(CudaGolden, ChunkedPrefillEqualsOneShot) {
  for (const auto& prompt : golden_["prompts"]) {
    std::vector<int32_t> tokens = ids(prompt);
    if (tokens.size() < 2) continue;
    TestRunner one_shot(*model_, 1, static_cast<int32_t>(tokens.size()) + 16);
    auto expected = one_shot.run({{.seq = 0, .tokens = tokens, .all_logits = true}})[0];
    TestRunner chunked(*model_, 1, static_cast<int32_t>(tokens.size()) + 16);
    std::vector<std::vector<float>> got;
    const int32_t sizes[] = {1, 50, 3, 64, 17, 65, 100};
    size_t begin = 0;
    for (int i = 0; begin < tokens.size(); ++i) {
      size_t len = std::min<size_t>(sizes[i % 7], tokens.size() - begin);
      std::vector<int32_t> part(tokens.begin() + begin, tokens.begin() + begin + len);
      auto result = chunked.run({{.seq = 0, .tokens = part, .all_logits = true}});
      for (auto& row : result[0]) got.push_back(std::move(row));
      begin += len;
    }
    ASSERT_EQ(got.size(), expected.size());
    for (size_t r = 0; r < got.size(); ++r)
      ASSERT_LT(max_logprob_diff(got[r], expected[r]), kSelfTolerance) << "row " << r;
  }
}

TEST_P(CudaGolden, BatchedSequencesEqualEachAlone) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& prompt : golden_["prompts"]) prompts.push_back(ids(prompt));
  int32_t max_len = 0;
  for (const auto& p : prompts) max_len = std::max<int32_t>(max_len, p.size() + 8);
  TestRunner batched(*model_, static_cast<int32_t>(prompts.size()), max_len);
  std::vector<TestRunner::Chunk> chunks, decodes;
  for (size_t s = 0; s < prompts.size(); ++s) {
    chunks.push_back({.seq = static_cast<int32_t>(s), .tokens = prompts[s]});
    decodes.push_back({.seq = static_cast<int32_t>(s), .tokens = {prompts[s][0]}});
  }
  auto together = batched.run(chunks);
  auto together_decode = batched.run(decodes);
  for (size_t s = 0; s < prompts.size(); ++s) {
    TestRunner alone(*model_, 1, max_len);
    auto single = alone.run({{.seq = 0, .tokens = prompts[s]}})[0].back();
    auto single_decode = alone.run({{.seq = 0, .tokens = {prompts[s][0]}}})[0].back();
    EXPECT_LT(max_logprob_diff(together[s].back(), single), kSelfTolerance) << "sequence " << s;
    EXPECT_LT(max_logprob_diff(together_decode[s].back(), single_decode), kSelfTolerance)
        << "sequence " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudaGolden);

}  // namespace
}  // namespace bf
