// CheckpointReader: takes the tensors a model needs out of a WeightStore, by name and with
// the expected shape, uploads them to the backend, and at the end checks that nothing was
// left over: weights under model.visual.* and mtp.* are skipped (one log line each group);
// any other unused tensor is an error naming it.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/weight_store.h"

namespace bf {

// How weights are obtained: from the checkpoint's safetensors, or random (vLLM's
// --load-format dummy: config.json alone gives the shapes; for benchmarking).
enum class LoadFormat { kSafetensors, kDummy };

class CheckpointReader {
 public:
  CheckpointReader(const WeightStore& store, Backend& backend);
  // Dummy weights: every take() is a random tensor of the asked shape. The dummy checkpoint
  // has the canonical layout: fused experts and no optional copies (contains() is true only
  // for "...experts.gate_up_proj"), so loaders take the same path they take for real files.
  static CheckpointReader dummy(Backend& backend) { return CheckpointReader(nullptr, backend); }

  bool contains(const std::string& name) const;
  // Reads `name` (full tensor name), checks its shape, uploads it. Missing -> error.
  Tensor take(const std::string& name, const Shape& shape);
  // The same without the upload: a host f32 tensor, for weights re-laid out before upload.
  Tensor take_host(const std::string& name, const Shape& shape);
  // Several 2-D tensors with one column count, stacked by rows in the order given, uploaded as
  // one: projections that read the same input become one GEMM (one pass over x, one larger
  // and more efficient weight read). Each part is checked against its expected shape.
  Tensor take_fused_rows(const std::vector<std::string>& names, const std::vector<Shape>& shapes);
  // Uploads a host tensor assembled from take_host() pieces.
  Tensor upload(const Tensor& host) { return backend_.upload(host); }
  // Marks a tensor as consumed without loading it (e.g. an lm_head tied to the embedding).
  void mark_used(const std::string& name) { used_.insert(name); }
  // Errors on tensors nobody took, except the skipped multimodal / MTP groups.
  void check_all_used() const;

 private:
  CheckpointReader(const WeightStore* store, Backend& backend) : store_(store), backend_(backend) {}
  // Checks `name` against `shape` and copies it into dst (a tensor or row view of the
  // backend's), converting to dst's dtype.
  void copy_into(const std::string& name, const Shape& shape, Tensor& dst);

  const WeightStore* store_;  // null: dummy weights
  Backend& backend_;
  std::set<std::string> used_;
};

}  // namespace bf
