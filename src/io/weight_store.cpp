#include "io/weight_store.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "io/json_read.h"

namespace bf {

namespace {

namespace fs = std::filesystem;

constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexFileName = "model.safetensors.index.json";

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  BF_CHECK(in.good(), "cannot open ", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  BF_CHECK(!in.bad(), "cannot read ", path.string());
  return text.str();
}

// Shard names come from a downloaded file: keep them inside the model directory.
void check_shard_name(const std::string& shard, const std::string& tensor, const fs::path& index) {
  fs::path shard_path(shard);
  bool escapes = shard.empty() || shard_path.is_absolute();
  for (const fs::path& part : shard_path) escapes = escapes || part == "..";
  BF_CHECK(!escapes, index.string(), ": tensor \"", tensor, "\" maps to shard \"", shard,
           "\", which is not a file name inside the model directory");
}

}  // namespace

void WeightStore::add_file(SafetensorsFile file) {
  for (TensorInfo& info : file.tensors) {
    auto [existing, inserted] = tensors_.try_emplace(info.name, info);
    BF_CHECK(inserted, "tensor \"", info.name, "\" appears in both ", existing->second.file.string(),
             " and ", info.file.string());
  }
  mappings_.push_back(std::move(file.mapping));
}

WeightStore WeightStore::open_file(const fs::path& path) {
  WeightStore store;
  store.source_ = path;
  store.add_file(read_safetensors(path));
  return store;
}

WeightStore WeightStore::open(const fs::path& model_dir) {
  BF_CHECK(fs::is_directory(model_dir), "model directory ", model_dir.string(), " does not exist");
  const fs::path single = model_dir / kSingleFileName;
  const fs::path index_path = model_dir / kIndexFileName;
  if (fs::exists(single)) {
    WeightStore store = open_file(single);
    store.source_ = model_dir;
    return store;
  }
  BF_CHECK(fs::exists(index_path), "model directory ", model_dir.string(), " has neither ",
           kSingleFileName, " nor ", kIndexFileName);

  nlohmann::json index = parse_json_object(read_text_file(index_path), index_path.string());
  auto weight_map = index.find("weight_map");
  BF_CHECK(weight_map != index.end(), index_path.string(), ": missing \"weight_map\"");
  BF_CHECK(weight_map->is_object(), index_path.string(), ": \"weight_map\" must be an object, found ",
           json_type_name(*weight_map));
  BF_CHECK(!weight_map->empty(), index_path.string(), ": \"weight_map\" lists no tensors");

  // shard file name -> tensor names the index places there
  std::map<std::string, std::vector<std::string>> shards;
  for (auto item = weight_map->begin(); item != weight_map->end(); ++item) {
    BF_CHECK(item.value().is_string(), index_path.string(), ": tensor \"", item.key(),
             "\" maps to a ", json_type_name(item.value()), ", expected a shard file name");
    std::string shard = item.value().get<std::string>();
    check_shard_name(shard, item.key(), index_path);
    shards[shard].push_back(item.key());
  }

  WeightStore store;
  store.source_ = model_dir;
  for (const auto& [shard, listed] : shards) {
    const fs::path shard_path = model_dir / shard;
    BF_CHECK(fs::exists(shard_path), index_path.string(), " lists shard ", shard,
             " (for tensor \"", listed.front(), "\"), but ", shard_path.string(), " does not exist");
    store.add_file(read_safetensors(shard_path));
  }
  size_t num_unlisted = store.tensors_.size();
  for (const auto& [shard, listed] : shards) {
    for (const std::string& name : listed) {
      auto found = store.tensors_.find(name);
      BF_CHECK(found != store.tensors_.end(), index_path.string(), " places tensor \"", name,
               "\" in ", shard, ", but no shard contains it");
      BF_CHECK(found->second.file == model_dir / shard, index_path.string(),
               " places tensor \"", name, "\" in ", shard, ", but it is in ",
               found->second.file.string());
      --num_unlisted;
    }
  }
  // Unlisted tensors are kept (they are still valid data), but say so: the index is stale.
  if (num_unlisted > 0) {
    log_warn(model_dir.string(), ": ", num_unlisted, " tensor(s) in the shards are not listed in ",
             kIndexFileName);
  }
  return store;
}

bool WeightStore::contains(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& WeightStore::info(const std::string& name) const {
  auto found = tensors_.find(name);
  BF_CHECK(found != tensors_.end(), "tensor \"", name, "\" not found in ", source_.string());
  return found->second;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& entry : tensors_) out.push_back(entry.first);
  return out;
}

Tensor WeightStore::read_f32(const std::string& name, const Shape& expected_shape) const {
  const TensorInfo& tensor_info = info(name);
  BF_CHECK(tensor_info.shape == expected_shape, "tensor \"", name, "\" in ",
           tensor_info.file.string(), " has shape ", shape_string(tensor_info.shape), ", expected ",
           shape_string(expected_shape));
  return read_f32(name);
}

Tensor WeightStore::read_f32(const std::string& name) const {
  const TensorInfo& tensor_info = info(name);
  BF_CHECK(tensor_info.dtype == DType::kBF16 || tensor_info.dtype == DType::kF16 ||
               tensor_info.dtype == DType::kF32,
           "tensor \"", name, "\" in ", tensor_info.file.string(), " has dtype ",
           dtype_name(tensor_info.dtype), ", which cannot be read as f32 (BF16, F16 or F32 only)");
  Tensor out = Tensor::empty(tensor_info.shape, DType::kF32);
  convert_to_f32(tensor_info, out.f32());
  return out;
}

}  // namespace bf
