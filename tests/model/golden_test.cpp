// The model against Hugging Face transformers (float32) on tiny random checkpoints of every
// Qwen3.5 layout (tests/goldens, made by tools/make_goldens.py):
//  - teacher-forced logprobs of the reference's top-5 at every prompt position within 2e-3;
//  - 32 greedy tokens identical, until a step where the reference's top two are closer than
//    2e-3 (a legitimate flip under float rounding; comparison stops there);
//  - chunked prefill (odd chunk sizes) == one-shot prefill; a batch of all prompts == each alone.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "test_runner.h"

namespace bf {
namespace {

namespace fs = std::filesystem;
using test::TestRunner;

constexpr double kLogprobTolerance = 2e-3;

fs::path goldens_dir() { return fs::path(BLOCKFLASH_TEST_DATA_DIR) / "goldens"; }

std::vector<std::string> golden_cases() {
  std::vector<std::string> cases;
  if (!fs::exists(goldens_dir())) return cases;
  for (const auto& entry : fs::directory_iterator(goldens_dir()))
    // dflash_* hold drafter goldens (tests/engine/dflash_golden_test.cpp), not targets.
    if (fs::exists(entry.path() / "golden.json") &&
        entry.path().filename().string().rfind("dflash_", 0) != 0)
      cases.push_back(entry.path().filename());
  std::sort(cases.begin(), cases.end());
  return cases;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = goldens_dir() / GetParam();
    std::ifstream in(dir_ / "golden.json");
    golden_ = nlohmann::json::parse(in);
    backend_ = make_cpu_backend();
    model_ = Model::load(dir_, *backend_);
  }

  std::vector<int32_t> prompt_ids(const nlohmann::json& prompt) const {
    return prompt["ids"].get<std::vector<int32_t>>();
  }

  fs::path dir_;
  nlohmann::json golden_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
};

TEST_P(GoldenTest, TeacherForcedLogprobsMatchTransformers) {
  for (const auto& prompt : golden_["prompts"]) {
    std::vector<int32_t> ids = prompt_ids(prompt);
    TestRunner runner(*model_, 1, static_cast<int32_t>(ids.size()) + 64);
    auto rows = runner.run({{.seq = 0, .tokens = ids, .all_logits = true}})[0];
    ASSERT_EQ(rows.size(), ids.size());
    double worst = 0;
    for (size_t pos = 0; pos < ids.size(); ++pos) {
      std::vector<double> lp = test::log_softmax(rows[pos]);
      for (const auto& entry : prompt["teacher_forced"][pos]) {
        double diff = std::abs(lp[entry["id"].get<int32_t>()] - entry["logprob"].get<double>());
        worst = std::max(worst, diff);
        ASSERT_LT(diff, kLogprobTolerance) << "prompt length " << ids.size() << ", position "
                                           << pos << ", token " << entry["id"];
      }
    }
    RecordProperty("worst_logprob_diff_len" + std::to_string(ids.size()), std::to_string(worst));
  }
}

TEST_P(GoldenTest, GreedyContinuationMatchesTransformers) {
  for (const auto& prompt : golden_["prompts"]) {
    std::vector<int32_t> ids = prompt_ids(prompt);
    const auto& expected = prompt["greedy"];
    const auto& top2 = prompt["greedy_top2"];
    TestRunner runner(*model_, 1, static_cast<int32_t>(ids.size() + expected.size()) + 16);
    std::vector<float> logits = runner.run({{.seq = 0, .tokens = ids}})[0].back();
    for (size_t step = 0; step < expected.size(); ++step) {
      int32_t token = test::argmax(logits);
      double gap = top2[step][0].get<double>() - top2[step][1].get<double>();
      if (token != expected[step].get<int32_t>()) {
        ASSERT_LT(gap, kLogprobTolerance)
            << "greedy token " << step << " differs (" << token << " vs " << expected[step]
            << ") although the reference's top-2 gap is " << gap;
        break;  // a legitimate near-tie flip: the continuations diverge from here
      }
      logits = runner.run({{.seq = 0, .tokens = {token}}})[0].back();
    }
  }
}

TEST_P(GoldenTest, ChunkedPrefillEqualsOneShot) {
  for (const auto& prompt : golden_["prompts"]) {
    std::vector<int32_t> ids = prompt_ids(prompt);
    if (ids.size() < 2) continue;
    TestRunner one_shot(*model_, 1, static_cast<int32_t>(ids.size()) + 16);
    auto expected = one_shot.run({{.seq = 0, .tokens = ids, .all_logits = true}})[0];
    TestRunner chunked(*model_, 1, static_cast<int32_t>(ids.size()) + 16);
    std::vector<std::vector<float>> got;
    const int32_t chunk_sizes[] = {1, 50, 3, 64, 17, 65, 100};
    size_t begin = 0;
    for (int i = 0; begin < ids.size(); ++i) {
      size_t len = std::min<size_t>(chunk_sizes[i % 7], ids.size() - begin);
      std::vector<int32_t> part(ids.begin() + begin, ids.begin() + begin + len);
      // Keep the result alive: a range-for over run(...)[0] would dangle (the temporary
      // returned by run() dies before the loop body runs).
      auto result = chunked.run({{.seq = 0, .tokens = part, .all_logits = true}});
      for (auto& row : result[0]) got.push_back(std::move(row));
      begin += len;
    }
    ASSERT_EQ(got.size(), expected.size());
    for (size_t r = 0; r < got.size(); ++r)
      for (size_t v = 0; v < got[r].size(); ++v)
        ASSERT_NEAR(got[r][v], expected[r][v], 1e-3) << "row " << r << " of " << ids.size();
  }
}

TEST_P(GoldenTest, BatchedSequencesEqualEachAlone) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& prompt : golden_["prompts"]) prompts.push_back(prompt_ids(prompt));
  int32_t max_len = 0;
  for (const auto& ids : prompts) max_len = std::max<int32_t>(max_len, ids.size() + 8);
  TestRunner batched(*model_, static_cast<int32_t>(prompts.size()), max_len);
  std::vector<TestRunner::Chunk> chunks;
  for (size_t s = 0; s < prompts.size(); ++s)
    chunks.push_back({.seq = static_cast<int32_t>(s), .tokens = prompts[s]});
  auto together = batched.run(chunks);
  // One decode step for all of them together as well.
  std::vector<TestRunner::Chunk> decodes;
  for (size_t s = 0; s < prompts.size(); ++s)
    decodes.push_back({.seq = static_cast<int32_t>(s), .tokens = {prompts[s][0]}});
  auto together_decode = batched.run(decodes);
  for (size_t s = 0; s < prompts.size(); ++s) {
    TestRunner alone(*model_, 1, max_len);
    auto single = alone.run({{.seq = 0, .tokens = prompts[s]}})[0].back();
    auto single_decode = alone.run({{.seq = 0, .tokens = {prompts[s][0]}}})[0].back();
    for (size_t v = 0; v < single.size(); ++v) {
      ASSERT_NEAR(together[s].back()[v], single[v], 1e-4) << "sequence " << s;
      ASSERT_NEAR(together_decode[s].back()[v], single_decode[v], 1e-4) << "sequence " << s;
    }
  }
}

TEST(Goldens, EveryLayoutIsPresent) {
  // dense/MoE x flat/nested: a missing directory would silently skip its checks.
  std::vector<std::string> cases = golden_cases();
  for (const char* name : {"dense_flat", "dense_nested", "moe_flat", "moe_nested"})
    EXPECT_NE(std::find(cases.begin(), cases.end(), name), cases.end()) << name;
}

INSTANTIATE_TEST_SUITE_P(Goldens, GoldenTest, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenTest);

}  // namespace
}  // namespace bf
