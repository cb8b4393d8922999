// --load-format dummy: a model built from config.json alone (random weights), for
// benchmarking real shapes. It must run the same forward as a real checkpoint, give finite
// logits, and be deterministic (weights are a pure function of name and shape).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "model/dflash_drafter.h"
#include "model/model.h"
#include "test_runner.h"

namespace bf {
namespace {

std::filesystem::path goldens() { return std::filesystem::path(BLOCKFLASH_TEST_DATA_DIR) / "goldens"; }

TEST(DummyLoad, EveryLayoutRunsWithFiniteDeterministicLogits) {
  for (const char* name : {"dense_flat", "dense_nested", "moe_flat", "moe_nested"}) {
    SCOPED_TRACE(name);
    auto backend = make_cpu_backend();
    auto a = Model::load(goldens() / name, *backend, LoadFormat::kDummy);
    auto b = Model::load(goldens() / name, *backend, LoadFormat::kDummy);
    auto real = Model::load(goldens() / name, *backend);
    test::TestRunner ra(*a, 1, 64), rb(*b, 1, 64), rr(*real, 1, 64);
    const std::vector<int32_t> ids = {3, 14, 15, 92, 65, 35};
    auto la = ra.run({{.seq = 0, .tokens = ids}})[0].back();
    auto lb = rb.run({{.seq = 0, .tokens = ids}})[0].back();
    auto lr = rr.run({{.seq = 0, .tokens = ids}})[0].back();
    ASSERT_EQ(la.size(), lr.size());
    EXPECT_EQ(la, lb);
    EXPECT_NE(la, lr);  // not the checkpoint's weights
    for (float x : la) ASSERT_TRUE(std::isfinite(x));
  }
}

TEST(DummyLoad, DrafterLoadsWithoutItsWeights) {
  auto backend = make_cpu_backend();
  auto target = Model::load(goldens() / "dense_flat", *backend, LoadFormat::kDummy);
  auto drafter = DFlashDrafter::load(goldens() / "dflash_dense", *target, LoadFormat::kDummy);
  EXPECT_EQ(drafter->tap_layers().size(), drafter->config().target_layer_ids.size());
}

}  // namespace
}  // namespace bf
