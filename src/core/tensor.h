// Tensor: a dense, row-major block of elements with a shape, owned through a shared
// buffer so that row slices are cheap views. The CPU backend computes in f32; the CUDA
// backend will keep bf16 storage. Shapes are written outermost first: [tokens, hidden].
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace bf {

enum class Device : uint8_t { kCPU, kCUDA };

using Shape = std::vector<int64_t>;

std::string shape_string(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;

  // Allocates a host tensor (uninitialised).
  static Tensor empty(Shape shape, DType dtype = DType::kF32);
  // Allocates a host tensor filled with zeros.
  static Tensor zeros(Shape shape, DType dtype = DType::kF32);
  // Copies host floats into a new f32 tensor.
  static Tensor from_floats(Shape shape, const std::vector<float>& values);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int index) const;  // negative index counts from the end
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t size_bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return buffer_ != nullptr; }

  void* raw() { return static_cast<uint8_t*>(buffer_.get()) + offset_bytes_; }
  const void* raw() const { return static_cast<const uint8_t*>(buffer_.get()) + offset_bytes_; }

  float* f32() { return static_cast<float*>(raw()); }
  const float* f32() const { return static_cast<const float*>(raw()); }
  int32_t* i32() { return static_cast<int32_t*>(raw()); }
  const int32_t* i32() const { return static_cast<const int32_t*>(raw()); }

  // A view of rows [begin, begin + count) along dim 0, sharing the buffer.
  Tensor rows(int64_t begin, int64_t count) const;
  // The same buffer seen with another shape of the same element count.
  Tensor reshape(Shape shape) const;

  // Wraps memory owned elsewhere (e.g. a device pool) without taking ownership.
  static Tensor wrap(void* data, Shape shape, DType dtype, Device device);
  // Takes shared ownership of memory allocated elsewhere (e.g. a device allocation whose
  // deleter returns it to a pool).
  static Tensor adopt(std::shared_ptr<void> buffer, Shape shape, DType dtype, Device device);

 private:
  std::shared_ptr<void> buffer_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
};

}  // namespace bf
