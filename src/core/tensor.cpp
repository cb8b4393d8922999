#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace bf {

std::string shape_string(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t count = 1;
  for (int64_t extent : shape) count *= extent;
  return count;
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  Tensor tensor;
  tensor.shape_ = std::move(shape);
  tensor.dtype_ = dtype;
  size_t bytes = tensor.size_bytes();
  // 64-byte alignment keeps SIMD loads and BLAS happy.
  size_t rounded = ((bytes == 0 ? 1 : bytes) + 63) / 64 * 64;
  void* data = std::aligned_alloc(64, rounded);
  BF_CHECK(data != nullptr, "out of host memory allocating ", rounded, " bytes");
  tensor.buffer_ = std::shared_ptr<void>(data, std::free);
  return tensor;
}

Tensor Tensor::zeros(Shape shape, DType dtype) {
  Tensor tensor = empty(std::move(shape), dtype);
  std::memset(tensor.raw(), 0, tensor.size_bytes());
  return tensor;
}

Tensor Tensor::from_floats(Shape shape, const std::vector<float>& values) {
  BF_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()), "from_floats: shape ",
           shape_string(shape), " does not hold ", values.size(), " values");
  Tensor tensor = empty(std::move(shape), DType::kF32);
  std::memcpy(tensor.raw(), values.data(), values.size() * sizeof(float));
  return tensor;
}

Tensor Tensor::wrap(void* data, Shape shape, DType dtype, Device device) {
  Tensor tensor;
  tensor.buffer_ = std::shared_ptr<void>(data, [](void*) {});
  tensor.shape_ = std::move(shape);
  tensor.dtype_ = dtype;
  tensor.device_ = device;
  return tensor;
}

Tensor Tensor::adopt(std::shared_ptr<void> buffer, Shape shape, DType dtype, Device device) {
  Tensor tensor;
  tensor.buffer_ = std::move(buffer);
  tensor.shape_ = std::move(shape);
  tensor.dtype_ = dtype;
  tensor.device_ = device;
  return tensor;
}

int64_t Tensor::dim(int index) const {
  int r = rank();
  if (index < 0) index += r;
  BF_CHECK(index >= 0 && index < r, "dim ", index, " out of range for shape ", shape_string(shape_));
  return shape_[static_cast<size_t>(index)];
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  BF_CHECK(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0],
           "rows(", begin, ", ", count, ") out of range for shape ", shape_string(shape_));
  Tensor view = *this;
  int64_t row_elems = shape_[0] == 0 ? 0 : numel() / shape_[0];
  view.offset_bytes_ += static_cast<size_t>(begin * row_elems) * dtype_size(dtype_);
  view.shape_[0] = count;
  return view;
}

Tensor Tensor::reshape(Shape shape) const {
  BF_CHECK(shape_numel(shape) == numel(), "cannot reshape ", shape_string(shape_), " to ",
           shape_string(shape));
  Tensor view = *this;
  view.shape_ = std::move(shape);
  return view;
}

}  // namespace bf
