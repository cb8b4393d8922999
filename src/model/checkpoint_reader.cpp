#include "model/checkpoint_reader.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "core/log.h"

namespace bf {
namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// Groups of tensors a text-only engine ignores on purpose: the vision tower of the
// multimodal checkpoints and the MTP head (an alternative drafter we do not run).
const std::vector<std::string>& skipped_prefixes() {
  static const std::vector<std::string> prefixes = {"model.visual.", "visual.", "mtp.",
                                                    "model.mtp."};
  return prefixes;
}

}  // namespace

CheckpointReader::CheckpointReader(const WeightStore& store, Backend& backend)
    : store_(&store), backend_(backend) {}

bool CheckpointReader::contains(const std::string& name) const {
  if (store_ == nullptr) {
    const std::string fused = "experts.gate_up_proj";
    return name.size() >= fused.size() && name.compare(name.size() - fused.size(), fused.size(), fused) == 0;
  }
  return store_->contains(name);
}

namespace {

// Dummy weights: scaled like an initialiser (1/sqrt(fan_in)) so activations stay finite
// through many layers; vectors (norms, gates, biases) small. Seeded by the name.
float dummy_scale(const Shape& shape) {
  if (shape.size() < 2) return 0.1f;
  return 1.0f / std::sqrt(static_cast<float>(shape.back()));
}

uint64_t name_seed(const std::string& name) { return std::hash<std::string>{}(name) | 1; }

}  // namespace

Tensor CheckpointReader::take(const std::string& name, const Shape& shape) {
  if (store_ == nullptr) {
    used_.insert(name);
    return backend_.random_weight(shape, dummy_scale(shape), name_seed(name));
  }
  Tensor t = backend_.empty(shape, backend_.weight_dtype(shape));
  copy_into(name, shape, t);
  return t;
}

// Straight from the mapped file into the backend's storage: no f32 host copy.
void CheckpointReader::copy_into(const std::string& name, const Shape& shape, Tensor& dst) {
  BF_CHECK(store_->contains(name), "checkpoint is missing tensor '", name, "' (expected shape ",
           shape_string(shape), ")");
  const TensorInfo& info = store_->info(name);
  BF_CHECK(info.shape == shape, "tensor \"", name, "\" in ", info.file.string(), " has shape ",
           shape_string(info.shape), ", expected ", shape_string(shape));
  BF_CHECK(info.dtype == DType::kBF16 || info.dtype == DType::kF16 || info.dtype == DType::kF32,
           "tensor \"", name, "\" in ", info.file.string(), " has dtype ", dtype_name(info.dtype),
           " (BF16, F16 or F32 only)");
  used_.insert(name);
  advise_will_need(info.data, info.size_bytes);
  backend_.copy_from_host(dst, info.data, info.dtype);
}

Tensor CheckpointReader::take_fused_rows(const std::vector<std::string>& names,
                                         const std::vector<Shape>& shapes) {
  BF_CHECK(!names.empty() && names.size() == shapes.size(), "take_fused_rows: ", names.size(),
           " names for ", shapes.size(), " shapes");
  int64_t rows = 0;
  const int64_t cols = shapes[0].size() == 2 ? shapes[0][1] : -1;
  for (const Shape& shape : shapes) {
    BF_CHECK(shape.size() == 2 && shape[1] == cols, "take_fused_rows: parts must be 2-D with ",
             cols, " columns, got ", shape_string(shape));
    rows += shape[0];
  }
  const Shape fused{rows, cols};
  if (store_ == nullptr) {
    used_.insert(names.begin(), names.end());
    return backend_.random_weight(fused, dummy_scale(fused), name_seed(names[0]));
  }
  Tensor t = backend_.empty(fused, backend_.weight_dtype(fused));
  int64_t row = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    Tensor part = t.rows(row, shapes[i][0]);
    copy_into(names[i], shapes[i], part);
    row += shapes[i][0];
  }
  return t;
}

Tensor CheckpointReader::take_host(const std::string& name, const Shape& shape) {
  if (store_ == nullptr) {
    used_.insert(name);
    return random_host_tensor(shape, dummy_scale(shape), name_seed(name));
  }
  BF_CHECK(store_->contains(name), "checkpoint is missing tensor '", name, "' (expected shape ",
           shape_string(shape), ")");
  used_.insert(name);
  return store_->read_f32(name, shape);
}

void CheckpointReader::check_all_used() const {
  if (store_ == nullptr) return;
  std::vector<size_t> skipped_counts(skipped_prefixes().size(), 0);
  std::vector<std::string> unknown;
  for (const std::string& name : store_->names()) {
    if (used_.count(name)) continue;
    bool skipped = false;
    for (size_t i = 0; i < skipped_prefixes().size() && !skipped; ++i) {
      if (starts_with(name, skipped_prefixes()[i])) {
        ++skipped_counts[i];
        skipped = true;
      }
    }
    if (!skipped) unknown.push_back(name);
  }
  for (size_t i = 0; i < skipped_prefixes().size(); ++i)
    if (skipped_counts[i] > 0)
      log_info("skipping ", skipped_counts[i], " tensors under ", skipped_prefixes()[i],
               " (not used by the text model)");
  if (!unknown.empty()) {
    std::string listed;
    for (size_t i = 0; i < unknown.size() && i < 5; ++i) listed += (i ? ", " : "") + unknown[i];
    fail("checkpoint has ", unknown.size(), " unexpected tensor(s): ", listed,
         unknown.size() > 5 ? ", ..." : "");
  }
}

}  // namespace bf
