// WeightStore over a model directory: single file, two shards with an index, and the
// index's consistency errors (missing shard, missing tensor, a name in two shards).
#include "io/weight_store.h"

#include <cstring>
#include <functional>
#include <optional>

#include <gtest/gtest.h>

#include "core/error.h"
#include "safetensors_writer.h"

namespace bf {
namespace {

using test::TestTensor;
using test::TempDir;

TestTensor f32_tensor(const std::string& name, Shape shape, float start) {
  std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < values.size(); ++i) values[i] = start + static_cast<float>(i);
  return {name, "F32", std::move(shape), test::to_bytes(values)};
}

// Writes shard files and an index mapping each tensor to the shard it was written to.
void write_sharded(const TempDir& dir, const std::vector<std::vector<TestTensor>>& shards) {
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    std::string shard = "model-0000" + std::to_string(s + 1) + "-of-0000" +
                        std::to_string(shards.size()) + ".safetensors";
    test::write_file(dir / shard, test::make_safetensors(shards[s]));
    for (const TestTensor& tensor : shards[s]) weight_map[tensor.name] = shard;
  }
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  test::write_text(dir / "model.safetensors.index.json", index.dump(2));
}

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no bf::Error thrown";
  return "";
}

void expect_mentions(const std::string& message, const std::vector<std::string>& pieces) {
  for (const std::string& piece : pieces) {
    EXPECT_NE(message.find(piece), std::string::npos) << "missing '" << piece << "' in: " << message;
  }
}

TEST(WeightStore, OpensSingleFileDirectory) {
  TempDir dir;
  test::write_file(dir / "model.safetensors",
                   test::make_safetensors({f32_tensor("a", {2, 3}, 0), f32_tensor("b", {4}, 10)}));
  WeightStore store = WeightStore::open(dir.path());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(store.contains("a"));
  EXPECT_FALSE(store.contains("c"));
  EXPECT_EQ(store.read_f32("a", {2, 3}).f32()[5], 5.0f);
  EXPECT_EQ(store.read_f32("b").f32()[3], 13.0f);
}

TEST(WeightStore, OpensTwoShardsThroughIndex) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("layers.0.w", {2, 2}, 0), f32_tensor("embed", {3}, 100)},
                      {f32_tensor("layers.1.w", {2, 2}, 50)}});
  WeightStore store = WeightStore::open(dir.path());
  EXPECT_EQ(store.num_tensors(), 3u);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"embed", "layers.0.w", "layers.1.w"}));
  EXPECT_EQ(store.info("layers.1.w").file, dir / "model-00002-of-00002.safetensors");
  EXPECT_EQ(store.info("embed").file, dir / "model-00001-of-00002.safetensors");
  EXPECT_EQ(store.read_f32("layers.1.w", {2, 2}).f32()[3], 53.0f);
  EXPECT_EQ(store.read_f32("embed", {3}).f32()[0], 100.0f);
}

TEST(WeightStore, MappingOutlivesTheOriginalStore) {
  TempDir dir;
  test::write_file(dir / "model.safetensors", test::make_safetensors({f32_tensor("a", {2}, 7)}));
  const TensorInfo* info = nullptr;
  std::optional<WeightStore> copy;
  {
    WeightStore store = WeightStore::open(dir.path());
    copy = store;
  }
  info = &copy->info("a");
  float value;
  std::memcpy(&value, info->data + 4, sizeof(value));
  EXPECT_EQ(value, 8.0f);
}

TEST(WeightStore, ShapeMismatchNamesTensorFileAndShapes) {
  TempDir dir;
  test::write_file(dir / "model.safetensors", test::make_safetensors({f32_tensor("proj", {2, 3}, 0)}));
  WeightStore store = WeightStore::open(dir.path());
  expect_mentions(error_of([&] { store.read_f32("proj", {3, 2}); }),
                  {"tensor \"proj\"", "model.safetensors", "has shape [2, 3], expected [3, 2]"});
  expect_mentions(error_of([&] { store.read_f32("nope", {1}); }),
                  {"tensor \"nope\" not found", dir.path().string()});
  expect_mentions(error_of([&] { store.info("nope"); }), {"tensor \"nope\" not found"});
}

TEST(WeightStore, DirectoryErrors) {
  TempDir dir;
  expect_mentions(error_of([&] { WeightStore::open(dir / "missing"); }), {"does not exist"});
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"neither model.safetensors nor model.safetensors.index.json"});
}

TEST(WeightStore, MissingShardIsAnError) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("a", {1}, 0)}, {f32_tensor("b", {1}, 0)}});
  std::filesystem::remove(dir / "model-00002-of-00002.safetensors");
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"model-00002-of-00002.safetensors", "tensor \"b\"", "does not exist"});
}

TEST(WeightStore, TensorListedButMissingFromShard) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("a", {1}, 0)}, {f32_tensor("b", {1}, 0)}});
  nlohmann::json index = {{"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00002-of-00002.safetensors"},
                            {"ghost", "model-00002-of-00002.safetensors"}}}};
  test::write_text(dir / "model.safetensors.index.json", index.dump());
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"tensor \"ghost\"", "model-00002-of-00002.safetensors", "no shard contains it"});
}

TEST(WeightStore, TensorInWrongShard) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("a", {1}, 0)}, {f32_tensor("b", {1}, 0)}});
  nlohmann::json index = {{"weight_map",
                           {{"a", "model-00002-of-00002.safetensors"},
                            {"b", "model-00002-of-00002.safetensors"}}}};
  test::write_text(dir / "model.safetensors.index.json", index.dump());
  // Shard 1 is not listed, so "a" is nowhere the index looks.
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"tensor \"a\"", "no shard contains it"});
  index["weight_map"]["c"] = "model-00001-of-00002.safetensors";
  test::write_file(dir / "model-00001-of-00002.safetensors",
                   test::make_safetensors({f32_tensor("a", {1}, 0), f32_tensor("c", {1}, 0)}));
  test::write_text(dir / "model.safetensors.index.json", index.dump());
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"tensor \"a\"", "places", "but it is in", "model-00001-of-00002.safetensors"});
}

TEST(WeightStore, NameInTwoShardsIsAnError) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("a", {1}, 0), f32_tensor("dup", {1}, 0)},
                      {f32_tensor("b", {1}, 0), f32_tensor("dup", {1}, 0)}});
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"tensor \"dup\" appears in both", "model-00001-of-00002.safetensors",
                   "model-00002-of-00002.safetensors"});
}

TEST(WeightStore, UnlistedTensorsAreKept) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("a", {1}, 0)}, {f32_tensor("b", {1}, 0)}});
  test::write_file(dir / "model-00002-of-00002.safetensors",
                   test::make_safetensors({f32_tensor("b", {1}, 0), f32_tensor("extra", {1}, 3)}));
  WeightStore store = WeightStore::open(dir.path());
  EXPECT_EQ(store.read_f32("extra", {1}).f32()[0], 3.0f);
}

TEST(WeightStore, BadIndexFiles) {
  TempDir dir;
  const std::string index_name = "model.safetensors.index.json";
  struct Case {
    std::string text;
    std::vector<std::string> pieces;
  };
  std::vector<Case> cases = {
      {"{", {index_name, "not valid JSON"}},
      {"[]", {index_name, "must be a JSON object"}},
      {R"({"metadata": {}})", {index_name, "missing \"weight_map\""}},
      {R"({"weight_map": []})", {index_name, "\"weight_map\" must be an object"}},
      {R"({"weight_map": {}})", {index_name, "lists no tensors"}},
      {R"({"weight_map": {"a": 3}})", {index_name, "tensor \"a\"", "expected a shard file name"}},
      {R"({"weight_map": {"a": "../x.safetensors"}})", {index_name, "tensor \"a\"", "inside the model directory"}},
      {R"({"weight_map": {"a": "/etc/passwd"}})", {index_name, "tensor \"a\"", "inside the model directory"}},
      {R"({"weight_map": {"a": ""}})", {index_name, "tensor \"a\"", "inside the model directory"}},
  };
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.text);
    test::write_text(dir / index_name, bad.text);
    expect_mentions(error_of([&] { WeightStore::open(dir.path()); }), bad.pieces);
  }
}

TEST(WeightStore, CorruptShardErrorNamesShard) {
  TempDir dir;
  write_sharded(dir, {{f32_tensor("a", {1}, 0)}, {f32_tensor("b", {1}, 0)}});
  test::write_file(dir / "model-00002-of-00002.safetensors", {1, 2, 3});
  expect_mentions(error_of([&] { WeightStore::open(dir.path()); }),
                  {"model-00002-of-00002.safetensors", "shorter than the 8-byte"});
}

}  // namespace
}  // namespace bf
