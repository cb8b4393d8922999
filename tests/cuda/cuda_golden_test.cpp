// The whole model on the GPU against Hugging Face transformers (float32) on the tiny goldens
// (tests/goldens), and against itself: chunked prefill == one shot, batched == alone.
//
// Two storage modes of the CUDA backend run the same kernels:
//  - F32 (BLOCKFLASH_CUDA_DTYPE=f32 / CudaBackendOptions::dtype): the strict end-to-end check.
//    Teacher-forced logprobs within 5e-3 of transformers (the CPU f32 path meets 2e-3; the GPU
//    sums in other orders and uses __expf in attention), greedy tokens identical unless the
//    reference's top-2 gap is under 5e-3, chunked == one-shot and batched == alone within 2e-3.
//  - BF16 (serving): measured and printed (worst logprob diff per prompt), asserted only to be
//    finite. No tolerance is asserted because none would be meaningful on these checkpoints:
//    tiny random models are chaotic under rounding. The CPU reference with every op output
//    rounded to bf16 (a probe run on the CPU, the same rounding points as this backend) is off
//    from transformers by 0.04-0.15 nats at prompt length 1 and by up to 10-18 nats at lengths
//    64-300; the GPU's bf16 run lands in the same range (0.07-0.27 at length 1, up to 10 at
//    300 on 2026-12-01). The f32 mode, same kernels except the bf16-only flash-mma attention
//    (checked op by op in cuda_ops_test), is what proves the path right end to end.
#include <gtest/gtest.h>

#include <cstdlib>

#include <cmath>
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

struct Mode {
  DType dtype;
  double logprob_tol, self_tol;
  bool strict;
};
Mode mode_of(const std::string& dtype) {
  return dtype == "f32" ? Mode{DType::kF32, 5e-3, 2e-3, true} : Mode{DType::kBF16, 0.5, 0.5, false};
}

// BLOCKFLASH_TEST_DATA_DIR in the environment overrides the build's path (packed binaries).
fs::path goldens_dir() {
  const char* dir = std::getenv("BLOCKFLASH_TEST_DATA_DIR");
  return fs::path(dir != nullptr ? dir : BLOCKFLASH_TEST_DATA_DIR) / "goldens";
}

using Param = std::tuple<std::string, std::string>;  // case, dtype

std::vector<Param> golden_cases() {
  std::vector<Param> cases;
  for (const char* dtype : {"f32", "bf16"})
    for (const char* name : {"dense_flat", "dense_nested", "moe_flat", "moe_nested"})
      if (fs::exists(goldens_dir() / name / "golden.json")) cases.emplace_back(name, dtype);
  return cases;
}

class CudaGolden : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!query_cuda_device(0).present) GTEST_SKIP() << "no CUDA device";
    name_ = std::get<0>(GetParam()) + "/" + std::get<1>(GetParam());
    mode_ = mode_of(std::get<1>(GetParam()));
    dir_ = goldens_dir() / std::get<0>(GetParam());
    std::ifstream in(dir_ / "golden.json");
    golden_ = nlohmann::json::parse(in);
    backend_ = make_cuda_backend(CudaBackendOptions{.dtype = mode_.dtype});
    model_ = Model::load(dir_, *backend_);
  }
  std::string name_;
  Mode mode_;
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
    double worst = 0, worst0 = 0;
    for (size_t pos = 0; pos < tokens.size(); ++pos) {
      std::vector<double> lp = test::log_softmax(rows[pos]);
      for (const auto& entry : prompt["teacher_forced"][pos]) {
        double diff = std::abs(lp[entry["id"].get<int32_t>()] - entry["logprob"].get<double>());
        ASSERT_FALSE(std::isnan(diff)) << "position " << pos;
        worst = std::max(worst, diff);
        if (pos == 0) worst0 = std::max(worst0, diff);
        if (mode_.strict)
          ASSERT_LT(diff, mode_.logprob_tol) << "prompt length " << tokens.size() << ", position "
                                             << pos << ", token " << entry["id"];
      }
    }
    std::printf("[golden %s] prompt length %zu: worst teacher-forced logprob diff %.5f "
                "(position 0: %.5f)\n", name_.c_str(), tokens.size(), worst, worst0);
    if (mode_.strict) EXPECT_LT(worst0, mode_.logprob_tol);
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
        if (mode_.strict)
          ASSERT_LT(gap, mode_.logprob_tol) << "greedy token " << step << " differs (" << token
                                            << " vs " << expected[step] << "), top-2 gap " << gap;
        break;
      }
      ++matched;
      logits = runner.run({{.seq = 0, .tokens = {token}}})[0].back();
    }
    std::printf("[golden %s] prompt length %zu: %zu/%zu greedy tokens identical\n",
                name_.c_str(), tokens.size(), matched, expected.size());
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
    double worst = 0;
    for (size_t r = 0; r < got.size(); ++r) worst = std::max(worst, max_logprob_diff(got[r], expected[r]));
    std::printf("[golden %s] chunked vs one-shot, prompt length %zu: worst logprob diff %.2e\n",
                name_.c_str(), tokens.size(), worst);
    if (mode_.strict) EXPECT_LT(worst, mode_.self_tol);
    EXPECT_FALSE(std::isnan(worst));
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
    const double d1 = max_logprob_diff(together[s].back(), single);
    const double d2 = max_logprob_diff(together_decode[s].back(), single_decode);
    std::printf("[golden %s] batched vs alone, sequence %zu: prefill %.2e, decode %.2e\n",
                name_.c_str(), s, d1, d2);
    if (mode_.strict) {
      EXPECT_LT(d1, mode_.self_tol) << "sequence " << s;
      EXPECT_LT(d2, mode_.self_tol) << "sequence " << s;
    }
    EXPECT_FALSE(std::isnan(d1) || std::isnan(d2));
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, CudaGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param);
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudaGolden);

}  // namespace
}  // namespace bf
