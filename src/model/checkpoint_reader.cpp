#include "model/checkpoint_reader.h"

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
  return backend_.upload(take_host(name, shape));
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
