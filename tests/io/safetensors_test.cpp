// Round trips through the safetensors reader (bit-exact conversions, unaligned data,
// metadata) and one named case per validation rule, each checking the error names the
// file and the tensor.
#include "io/safetensors.h"

#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "core/error.h"
#include "safetensors_writer.h"
#include "io/weight_store.h"

namespace bf {
namespace {

using test::TestTensor;
using test::TempDir;

uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Independent f16 decoding by arithmetic, to check the bit-twiddling one.
float f16_reference(uint16_t bits) {
  int sign = (bits >> 15) ? -1 : 1;
  int exponent = (bits >> 10) & 0x1f;
  int mantissa = bits & 0x3ff;
  if (exponent == 31) return mantissa ? NAN : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -24);
  return sign * std::ldexp(1.0f + mantissa / 1024.0f, exponent - 15);
}

TEST(Safetensors, RoundTripsBf16BitExact) {
  TempDir dir;
  // Every bf16 bit pattern: zeros, subnormals, infinities, NaNs included.
  std::vector<uint16_t> bits(65536);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(i);
  test::write_file(dir / "a.safetensors",
                   test::make_safetensors({{"w", "BF16", {256, 256}, test::to_bytes(bits)}}));
  WeightStore store = WeightStore::open_file(dir / "a.safetensors");
  Tensor values = store.read_f32("w", {256, 256});
  ASSERT_EQ(values.numel(), 65536);
  for (size_t i = 0; i < bits.size(); ++i) {
    ASSERT_EQ(float_bits(values.f32()[i]), static_cast<uint32_t>(bits[i]) << 16) << "bf16 bits " << i;
  }
}

TEST(Safetensors, RoundTripsF16AgainstArithmeticReference) {
  TempDir dir;
  std::vector<uint16_t> bits(65536);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(i);
  test::write_file(dir / "a.safetensors",
                   test::make_safetensors({{"h", "F16", {65536}, test::to_bytes(bits)}}));
  Tensor values = WeightStore::open_file(dir / "a.safetensors").read_f32("h");
  for (size_t i = 0; i < bits.size(); ++i) {
    float expected = f16_reference(static_cast<uint16_t>(i));
    float got = values.f32()[i];
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(got)) << "f16 bits " << i;
    } else {
      ASSERT_EQ(float_bits(got), float_bits(expected)) << "f16 bits " << i;
    }
  }
  EXPECT_EQ(values.f32()[0x3c00], 1.0f);
  EXPECT_EQ(values.f32()[0x7bff], 65504.0f);
}

TEST(Safetensors, RoundTripsMixedFileWithUnalignedDataAndMetadata) {
  TempDir dir;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> f32_values(6);
  for (float& value : f32_values) value = normal(rng);
  std::vector<uint16_t> bf16_values = {f32_to_bf16(1.5f), f32_to_bf16(-2.25f), f32_to_bf16(3.0e-3f)};
  std::vector<TestTensor> tensors = {
      {"odd.bf16", "BF16", {3}, test::to_bytes(bf16_values)},   // 6 bytes: misaligns what follows
      {"model.norm.weight", "F32", {2, 3}, test::to_bytes(f32_values)},
      {"scalar", "F32", {}, test::to_bytes(std::vector<float>{42.0f})},
      {"empty", "F16", {0, 4}, {}},
      {"positions", "I64", {2}, test::to_bytes(std::vector<int64_t>{5, -1})},
  };
  nlohmann::json header = test::make_header(tensors);
  header["__metadata__"] = {{"format", "pt"}};
  std::string text = header.dump() + "   ";  // writers pad the header with spaces
  if (text.size() % 2 == 0) text += " ";     // odd header length: nothing is aligned
  test::write_file(dir / "mixed.safetensors", test::assemble(text, test::concat_data(tensors)));

  SafetensorsFile file = read_safetensors(dir / "mixed.safetensors");
  EXPECT_EQ(file.metadata.at("format"), "pt");
  ASSERT_EQ(file.tensors.size(), 5u);
  EXPECT_EQ(file.tensors[0].name, "odd.bf16");  // sorted by offset

  WeightStore store = WeightStore::open_file(dir / "mixed.safetensors");
  EXPECT_EQ(store.names(), (std::vector<std::string>{"empty", "model.norm.weight", "odd.bf16",
                                                      "positions", "scalar"}));
  Tensor norm = store.read_f32("model.norm.weight", {2, 3});
  EXPECT_EQ(std::memcmp(norm.f32(), f32_values.data(), sizeof(float) * 6), 0);
  Tensor odd = store.read_f32("odd.bf16", {3});
  EXPECT_EQ(odd.f32()[0], 1.5f);
  EXPECT_EQ(odd.f32()[1], -2.25f);
  EXPECT_EQ(odd.f32()[2], bf16_to_f32(bf16_values[2]));
  EXPECT_EQ(store.read_f32("scalar", {}).f32()[0], 42.0f);
  EXPECT_EQ(store.read_f32("empty", {0, 4}).numel(), 0);

  const TensorInfo& positions = store.info("positions");
  EXPECT_EQ(positions.dtype, DType::kI64);
  EXPECT_EQ(positions.shape, (Shape{2}));
  EXPECT_EQ(positions.size_bytes, 16u);
  EXPECT_EQ(positions.file, dir / "mixed.safetensors");
  int64_t second;
  std::memcpy(&second, positions.data + 8, sizeof(second));
  EXPECT_EQ(second, -1);
  try {
    store.read_f32("positions");
    FAIL() << "I64 read as f32";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("dtype I64"), std::string::npos) << error.what();
  }
}

TEST(Safetensors, AllowsGapsBetweenTensors) {
  TempDir dir;
  nlohmann::json header = {
      {"a", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 4}}}},
      {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {12, 16}}}}};
  std::vector<float> data = {1.0f, -7.0f, -7.0f, 2.0f};
  test::write_file(dir / "gap.safetensors", test::assemble(header.dump(), test::to_bytes(data)));
  WeightStore store = WeightStore::open_file(dir / "gap.safetensors");
  EXPECT_EQ(store.read_f32("a").f32()[0], 1.0f);
  EXPECT_EQ(store.read_f32("b").f32()[0], 2.0f);
}

// ---- one named case per rule -------------------------------------------------------------

struct BadCase {
  std::string label;
  std::vector<uint8_t> bytes;
  std::vector<std::string> must_mention;  // besides the file name
};

std::vector<uint8_t> with_header(const std::string& header_text, size_t data_bytes = 16) {
  return test::assemble(header_text, std::vector<uint8_t>(data_bytes, 0));
}

std::string entry(const std::string& name, const std::string& body) {
  return "{\"" + name + "\": " + body + "}";
}

std::vector<BadCase> bad_cases() {
  std::vector<uint8_t> long_header = with_header("{}");
  long_header[0] = 200;  // claims 200 header bytes, the file has 2 + 16
  std::vector<uint8_t> absurd = with_header("{}");
  absurd[5] = 1;  // 2^40 bytes
  const std::string ok_entry = R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]})";
  return {
      {"empty file", {}, {"0 bytes", "shorter than the 8-byte header length"}},
      {"five bytes", {1, 0, 0, 0, 0}, {"5 bytes"}},
      {"header past end", long_header, {"header length 200", "runs past the end"}},
      {"absurd header", absurd, {"header length 1099511627778", "absurd"}},
      {"not json", with_header("{\"w\": "), {"not valid JSON"}},
      {"binary garbage", with_header(std::string("\x01\xff\x00{", 4)), {"not valid JSON"}},
      {"array top level", with_header("[1, 2]"), {"must be a JSON object", "array"}},
      {"duplicate name", with_header(R"({"w": )" + ok_entry + R"(, "w": )" + ok_entry + "}"),
       {"\"w\"", "more than once"}},
      {"entry not object", with_header(entry("w", "3")), {"tensor \"w\"", "must be an object"}},
      {"empty name", with_header(entry("", ok_entry)), {"empty name"}},
      {"missing dtype", with_header(entry("w", R"({"shape": [2], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "missing \"dtype\""}},
      {"missing shape", with_header(entry("w", R"({"dtype": "F32", "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "missing \"shape\""}},
      {"missing offsets", with_header(entry("w", R"({"dtype": "F32", "shape": [2]})")),
       {"tensor \"w\"", "missing \"data_offsets\""}},
      {"dtype not string",
       with_header(entry("w", R"({"dtype": 5, "shape": [2], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "\"dtype\" must be a string", "integer"}},
      {"unknown dtype",
       with_header(entry("w", R"({"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "unknown dtype \"Q4_K\""}},
      {"unsupported dtype",
       with_header(entry("w", R"({"dtype": "F64", "shape": [1], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "unsupported dtype F64"}},
      {"shape not array",
       with_header(entry("w", R"({"dtype": "F32", "shape": 2, "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "\"shape\" must be an array"}},
      {"negative extent",
       with_header(entry("w", R"({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "negative (-2)"}},
      {"float extent",
       with_header(entry("w", R"({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "non-negative integer, found float"}},
      {"string extent",
       with_header(entry("w", R"({"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "found string"}},
      {"overflowing shape",
       with_header(entry("w", R"({"dtype": "F32", "shape": [4294967296, 4294967296],
                                  "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "too many elements"}},
      {"huge extent",
       with_header(entry("w", R"({"dtype": "F32", "shape": [18446744073709551615],
                                  "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "too many elements"}},
      {"offsets not array",
       with_header(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": 8})")),
       {"tensor \"w\"", "array of two integers"}},
      {"three offsets",
       with_header(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]})")),
       {"tensor \"w\"", "array of two integers"}},
      {"negative offset",
       with_header(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]})")),
       {"tensor \"w\"", "data_offsets begin is negative"}},
      {"null offset",
       with_header(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [0, null]})")),
       {"tensor \"w\"", "data_offsets end must be a non-negative integer, found null"}},
      {"begin after end",
       with_header(entry("w", R"({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]})")),
       {"tensor \"w\"", "begin 8 is after end 0"}},
      {"end beyond data",
       with_header(entry("w", R"({"dtype": "F32", "shape": [6], "data_offsets": [0, 24]})")),
       {"tensor \"w\"", "end 24 is beyond the data section (16 bytes)"}},
      {"size mismatch",
       with_header(entry("w", R"({"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]})")),
       {"tensor \"w\"", "hold 8 bytes", "[2, 3]", "needs 12"}},
      {"overlap",
       with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})"),
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"contained overlap",
       with_header(R"({"big": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                       "small": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})"),
       {"tensor \"small\"", "overlap tensor \"big\""}},
      {"metadata not object", with_header(R"({"__metadata__": [1]})"),
       {"\"__metadata__\" must be an object"}},
      {"metadata value not string", with_header(R"({"__metadata__": {"format": 1}})"),
       {"\"__metadata__\" value of \"format\" must be a string"}},
  };
}

TEST(Safetensors, NamedBadCasesNameFileAndTensor) {
  TempDir dir;
  const std::filesystem::path path = dir / "bad.safetensors";
  for (const BadCase& bad : bad_cases()) {
    SCOPED_TRACE(bad.label);
    test::write_file(path, bad.bytes);
    try {
      WeightStore::open_file(path);
      ADD_FAILURE() << "opened without error";
    } catch (const Error& error) {
      std::string message = error.what();
      EXPECT_NE(message.find(path.string()), std::string::npos) << message;
      for (const std::string& piece : bad.must_mention) {
        EXPECT_NE(message.find(piece), std::string::npos) << "missing '" << piece << "' in: " << message;
      }
    }
  }
}

TEST(Safetensors, MissingFileAndDirectoryAreErrors) {
  TempDir dir;
  EXPECT_THROW(
      {
        try {
          read_safetensors(dir / "nope.safetensors");
        } catch (const Error& error) {
          EXPECT_NE(std::string(error.what()).find("cannot open"), std::string::npos);
          EXPECT_NE(std::string(error.what()).find("nope.safetensors"), std::string::npos);
          throw;
        }
      },
      Error);
  EXPECT_THROW(read_safetensors(dir.path()), Error);
}

}  // namespace
}  // namespace bf
