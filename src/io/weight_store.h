// WeightStore: every tensor of a checkpoint by name, over one model.safetensors or the shards
// named by model.safetensors.index.json. The files stay mapped for the store's lifetime, so
// TensorInfo::data pointers are valid as long as the WeightStore (or a copy of it) lives.
// Invariant: each name lives in exactly one file, and every name the index lists was found in
// the shard the index names.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace bf {

class WeightStore {
 public:
  // Opens model_dir/model.safetensors if present (as HF transformers does), else the shards
  // listed in model_dir/model.safetensors.index.json.
  static WeightStore open(const std::filesystem::path& model_dir);
  // Opens one .safetensors file.
  static WeightStore open_file(const std::filesystem::path& path);

  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws bf::Error if absent
  std::vector<std::string> names() const;                 // sorted
  size_t num_tensors() const { return tensors_.size(); }
  const std::filesystem::path& source() const { return source_; }  // dir or file

  // Converts a BF16/F16/F32 tensor to a new f32 host tensor, after checking its shape.
  Tensor read_f32(const std::string& name, const Shape& expected_shape) const;
  Tensor read_f32(const std::string& name) const;

 private:
  void add_file(SafetensorsFile file);

  std::filesystem::path source_;
  std::vector<std::shared_ptr<const MappedFile>> mappings_;  // owners of TensorInfo::data
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace bf
