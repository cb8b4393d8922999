// Safetensors: one .safetensors file, mapped and validated. Layout: an 8-byte little-endian
// header length N, N bytes of JSON (name -> {dtype, shape, data_offsets: [begin, end]}, plus an
// optional "__metadata__" of string -> string), then the data section; offsets are relative to it.
// Invariant: after read_safetensors() returns, every TensorInfo's [data, data + size_bytes) lies
// inside the data section, size_bytes == numel * dtype_size, and no two non-empty tensors overlap.
// Gaps between tensors are allowed (the format's reference writer never leaves any, but they are
// harmless). Dtypes: BF16, F16, F32, I32, I64 load; other safetensors dtypes (F64, U8, F8_E4M3, ...)
// are rejected when the file is opened, by name, so that every TensorInfo has a real bf::DType.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "io/mapped_file.h"

namespace bf {

// Headers larger than this are refused before parsing (the reference implementation's limit).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  // Points into the file mapping. Not aligned in general (the header length is arbitrary):
  // read elements with memcpy.
  const uint8_t* data = nullptr;
  size_t size_bytes = 0;
  std::filesystem::path file;
};

struct SafetensorsFile {
  std::shared_ptr<const MappedFile> mapping;  // keeps every TensorInfo::data alive
  std::vector<TensorInfo> tensors;            // sorted by data offset
  std::map<std::string, std::string> metadata;

  const std::filesystem::path& path() const { return mapping->path(); }
};

// Maps and validates one file; throws bf::Error naming the file (and the tensor) on any defect.
SafetensorsFile read_safetensors(const std::filesystem::path& path);

// Converts a BF16, F16 or F32 tensor to f32 into `out` (info.shape's numel floats).
// Throws bf::Error for other dtypes.
void convert_to_f32(const TensorInfo& info, float* out);

}  // namespace bf
