// Fuzz-style robustness: a valid file, corrupted a few hundred ways with a fixed seed
// (truncations, header byte flips, header length edits, structured JSON edits of offsets,
// shapes, dtypes and field types). Each must load with its invariants intact or throw
// bf::Error: never crash, never read out of bounds (run under ASan), never another exception.
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "safetensors_writer.h"
#include "io/weight_store.h"

namespace bf {
namespace {

using test::TestTensor;

std::vector<TestTensor> base_tensors() {
  std::vector<float> f32_values = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> half_values = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000};  // odd count: misaligns
  std::vector<int32_t> ids = {7, 8, 9};
  return {{"a.bf16", "BF16", {5}, test::to_bytes(half_values)},
          {"b.f32", "F32", {2, 3}, test::to_bytes(f32_values)},
          {"c.f16", "F16", {5, 1}, test::to_bytes(half_values)},
          {"d.i32", "I32", {3}, test::to_bytes(ids)},
          {"e.empty", "F32", {0}, {}}};
}

nlohmann::json random_scalar(std::mt19937_64& rng) {
  switch (rng() % 9) {
    case 0: return -1;
    case 1: return 0;
    case 2: return static_cast<uint64_t>(rng() % 64);
    case 3: return static_cast<uint64_t>(1) << (rng() % 64);
    case 4: return 18446744073709551615ull;
    case 5: return 2.5;
    case 6: return "7";
    case 7: return nullptr;
    default: return nlohmann::json::array();
  }
}

// Rewrites one entry of the valid header and keeps the data section as is.
std::vector<uint8_t> structured_edit(std::mt19937_64& rng, std::string& label) {
  std::vector<TestTensor> tensors = base_tensors();
  nlohmann::json header = test::make_header(tensors);
  std::vector<uint8_t> data = test::concat_data(tensors);
  const uint64_t data_size = data.size();
  const std::string& name = tensors[rng() % tensors.size()].name;
  const std::string& other = tensors[rng() % tensors.size()].name;
  nlohmann::json& entry = header[name];
  auto small = [&](uint64_t limit) { return static_cast<uint64_t>(rng() % (limit + 1)); };
  switch (rng() % 10) {
    case 0: {
      uint64_t begin = small(data_size + 8), end = small(data_size + 8);
      entry["data_offsets"] = {begin, end};
      label = "random offsets";
      break;
    }
    case 1:
      entry["data_offsets"] = header[other]["data_offsets"];
      label = "offsets copied from another tensor";
      break;
    case 2: {
      int64_t shift = static_cast<int64_t>(rng() % 7) - 3;
      uint64_t begin = entry["data_offsets"][0].get<uint64_t>();
      uint64_t end = entry["data_offsets"][1].get<uint64_t>();
      entry["data_offsets"] = {static_cast<int64_t>(begin) + shift, static_cast<int64_t>(end) + shift};
      label = "offsets shifted";
      break;
    }
    case 3: {
      nlohmann::json shape = nlohmann::json::array();
      for (uint64_t i = rng() % 4; i > 0; --i) {
        shape.push_back(rng() % 3 ? nlohmann::json(static_cast<int64_t>(rng() % 8) - 1) : random_scalar(rng));
      }
      entry["shape"] = shape;
      label = "random shape";
      break;
    }
    case 4: {
      static const char* const kDtypes[] = {"BF16", "F16", "F32", "I32", "I64", "F64", "U8", "bf16", ""};
      entry["dtype"] = kDtypes[rng() % 9];
      label = "dtype changed";
      break;
    }
    case 5: {
      static const char* const kFields[] = {"dtype", "shape", "data_offsets"};
      entry.erase(kFields[rng() % 3]);
      label = "field removed";
      break;
    }
    case 6: {
      static const char* const kFields[] = {"dtype", "shape", "data_offsets"};
      entry[kFields[rng() % 3]] = random_scalar(rng);
      label = "field of wrong type";
      break;
    }
    case 7:
      entry["data_offsets"].push_back(random_scalar(rng));
      label = "three offsets";
      break;
    case 8:
      entry["data_offsets"][rng() % 2] = random_scalar(rng);
      label = "offset replaced";
      break;
    default:
      header[name] = random_scalar(rng);
      label = "entry replaced";
      break;
  }
  if (rng() % 4 == 0) data.resize(small(data.size()));
  return test::assemble(header.dump(), data);
}

std::vector<uint8_t> corrupt(const std::vector<uint8_t>& valid, uint64_t header_size, std::mt19937_64& rng,
                             std::string& label) {
  std::vector<uint8_t> bytes = valid;
  switch (rng() % 5) {
    case 0:
      bytes.resize(rng() % bytes.size());
      label = "truncated to " + std::to_string(bytes.size());
      return bytes;
    case 1: {
      for (uint64_t flips = 1 + rng() % 4; flips > 0; --flips) {
        size_t at = 8 + rng() % header_size;
        bytes[at] = rng() % 2 ? static_cast<uint8_t>(rng()) : static_cast<uint8_t>(bytes[at] ^ (1u << (rng() % 8)));
      }
      label = "header bytes flipped";
      return bytes;
    }
    case 2: {
      uint64_t length;
      switch (rng() % 3) {
        case 0: length = header_size + (rng() % 33) - 16; break;
        case 1: length = rng() % (bytes.size() + 8); break;
        default: length = rng(); break;
      }
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(length >> (8 * i));
      label = "header length set to " + std::to_string(length);
      return bytes;
    }
    case 3: {
      // Insert or delete a header byte, adjusting the length field so the JSON itself is damaged.
      size_t at = 8 + rng() % header_size;
      uint64_t length = header_size;
      if (rng() % 2) {
        bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng()));
        ++length;
      } else {
        bytes.erase(bytes.begin() + static_cast<std::ptrdiff_t>(at));
        --length;
      }
      for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(length >> (8 * i));
      label = "header byte inserted/deleted";
      return bytes;
    }
    default:
      return structured_edit(rng, label);
  }
}

// Everything a successful load promises; reading every byte lets ASan catch a bad pointer.
void check_loaded(const std::filesystem::path& path) {
  SafetensorsFile file = read_safetensors(path);
  const uint8_t* begin = file.mapping->data();
  const uint8_t* end = begin + file.mapping->size_bytes();
  for (const TensorInfo& info : file.tensors) {
    ASSERT_EQ(info.size_bytes, static_cast<size_t>(shape_numel(info.shape)) * dtype_size(info.dtype));
    if (info.size_bytes == 0) continue;
    ASSERT_GE(info.data, begin + 8);
    ASSERT_LE(info.data + info.size_bytes, end);
  }
  WeightStore store = WeightStore::open_file(path);
  for (const std::string& name : store.names()) {
    const TensorInfo& info = store.info(name);
    if (info.dtype == DType::kI32 || info.dtype == DType::kI64) {
      uint64_t checksum = 0;
      for (size_t i = 0; i < info.size_bytes; ++i) checksum += info.data[i];
      EXPECT_GE(checksum, 0u);
    } else {
      Tensor values = store.read_f32(name, info.shape);
      EXPECT_EQ(values.numel(), shape_numel(info.shape));
    }
  }
}

TEST(SafetensorsFuzz, CorruptionsLoadOrThrowBfError) {
  test::TempDir dir;
  const std::filesystem::path path = dir / "fuzz.safetensors";
  const std::vector<uint8_t> valid = test::make_safetensors(base_tensors());
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | valid[i];

  test::write_file(path, valid);
  check_loaded(path);

  std::mt19937_64 rng(20240611);
  int num_loaded = 0, num_rejected = 0;
  constexpr int kIterations = 600;
  for (int iteration = 0; iteration < kIterations; ++iteration) {
    std::string label;
    std::vector<uint8_t> bytes = corrupt(valid, header_size, rng, label);
    SCOPED_TRACE("iteration " + std::to_string(iteration) + ": " + label);
    test::write_file(path, bytes);
    try {
      check_loaded(path);
      ++num_loaded;
    } catch (const Error& error) {
      ++num_rejected;
      EXPECT_NE(std::string(error.what()).find("fuzz.safetensors"), std::string::npos) << error.what();
    } catch (const std::exception& error) {
      ADD_FAILURE() << "non-bf::Error exception: " << error.what();
    } catch (...) {
      ADD_FAILURE() << "unknown exception";
    }
    if (HasFatalFailure()) return;
  }
  // Both outcomes must occur, or the corruptions are not exercising anything.
  EXPECT_GT(num_rejected, kIterations / 2);
  EXPECT_GT(num_loaded, 0);
  std::printf("fuzz: %d loaded, %d rejected\n", num_loaded, num_rejected);
}

}  // namespace
}  // namespace bf
