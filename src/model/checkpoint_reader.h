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

class CheckpointReader {
 public:
  CheckpointReader(const WeightStore& store, Backend& backend);

  bool contains(const std::string& name) const { return store_.contains(name); }
  // Reads `name` (full tensor name), checks its shape, uploads it. Missing -> error.
  Tensor take(const std::string& name, const Shape& shape);
  // The same without the upload: a host f32 tensor, for weights re-laid out before upload.
  Tensor take_host(const std::string& name, const Shape& shape);
  // Marks a tensor as consumed without loading it (e.g. an lm_head tied to the embedding).
  void mark_used(const std::string& name) { used_.insert(name); }
  // Errors on tensors nobody took, except the skipped multimodal / MTP groups.
  void check_all_used() const;

 private:
  const WeightStore& store_;
  Backend& backend_;
  std::set<std::string> used_;
};

}  // namespace bf
