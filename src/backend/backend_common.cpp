// Host implementations of the small layout ops that every backend has in the same form
// on the CPU; a device backend overrides them.
#include <cmath>
#include <cstring>

#include "backend/backend.h"

namespace bf {

void Backend::slice_columns(const Tensor& x, int64_t begin, Tensor& out) {
  BF_CHECK(x.device() == Device::kCPU && out.device() == Device::kCPU,
           "slice_columns: host tensors only in the default implementation");
  BF_CHECK(x.rank() == 2 && out.rank() == 2 && x.dim(0) == out.dim(0) && begin >= 0 &&
               begin + out.dim(1) <= x.dim(1),
           "slice_columns: cannot take ", shape_string(out.shape()), " at column ", begin,
           " of ", shape_string(x.shape()));
  int64_t rows = x.dim(0), cols = x.dim(1), width = out.dim(1);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out.f32() + r * width, x.f32() + r * cols + begin, width * sizeof(float));
}

void Backend::sigmoid_scale_rows(Tensor& x, const Tensor& gate) {
  BF_CHECK(x.device() == Device::kCPU && gate.device() == Device::kCPU,
           "sigmoid_scale_rows: host tensors only in the default implementation");
  BF_CHECK(x.rank() == 2 && gate.numel() == x.dim(0), "sigmoid_scale_rows: gate ",
           shape_string(gate.shape()), " does not match rows of ", shape_string(x.shape()));
  int64_t rows = x.dim(0), cols = x.dim(1);
  for (int64_t r = 0; r < rows; ++r) {
    float scale = 1.0f / (1.0f + std::exp(-gate.f32()[r]));
    for (int64_t c = 0; c < cols; ++c) x.f32()[r * cols + c] *= scale;
  }
}

}  // namespace bf
