// Test helpers: build .safetensors bytes in memory (valid by construction, or from a
// hand-edited header) and write them into a per-test temporary directory.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace bf::test {

struct TestTensor {
  std::string name;
  std::string dtype;  // as written in the header: "BF16", "F16", "F32", ...
  Shape shape;
  std::vector<uint8_t> bytes;
};

template <typename T>
std::vector<uint8_t> to_bytes(const std::vector<T>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// The header JSON for tensors laid out back to back in order.
inline nlohmann::json make_header(const std::vector<TestTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const TestTensor& tensor : tensors) {
    header[tensor.name] = {{"dtype", tensor.dtype},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.bytes.size()}}};
    offset += tensor.bytes.size();
  }
  return header;
}

// 8-byte little-endian length, the header text, then the data section.
inline std::vector<uint8_t> assemble(const std::string& header_text, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> file(8);
  uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(length >> (8 * i));
  file.insert(file.end(), header_text.begin(), header_text.end());
  file.insert(file.end(), data.begin(), data.end());
  return file;
}

inline std::vector<uint8_t> concat_data(const std::vector<TestTensor>& tensors) {
  std::vector<uint8_t> data;
  for (const TestTensor& tensor : tensors) data.insert(data.end(), tensor.bytes.begin(), tensor.bytes.end());
  return data;
}

inline std::vector<uint8_t> make_safetensors(const std::vector<TestTensor>& tensors) {
  return assemble(make_header(tensors).dump(), concat_data(tensors));
}

inline void write_file(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  write_file(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("bf_io_") + test->test_suite_name() + "_" + test->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace bf::test
