// Bulk element conversion (dtype.h): the loader's path from checkpoint bytes to storage.
#include "core/dtype.h"

#include "core/error.h"

namespace bf {
namespace {

// Element i of a 16-bit or 32-bit source as f32; memcpy because the source may be unaligned.
float load_as_f32(const uint8_t* src, DType dtype, int64_t i) {
  if (dtype == DType::kF32) {
    float value;
    std::memcpy(&value, src + 4 * i, 4);
    return value;
  }
  uint16_t bits;
  std::memcpy(&bits, src + 2 * i, 2);
  return dtype == DType::kBF16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}

}  // namespace

void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  BF_CHECK(src_dtype == DType::kF32 || src_dtype == DType::kBF16 || src_dtype == DType::kF16,
           "convert_elements: cannot read ", dtype_name(src_dtype), " (F32, BF16 or F16 only)");
  BF_CHECK(dst_dtype == DType::kF32 || dst_dtype == DType::kBF16,
           "convert_elements: cannot write ", dtype_name(dst_dtype), " (F32 or BF16 only)");
  if (n <= 0) return;
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype));
    return;
  }
  const auto* in = static_cast<const uint8_t*>(src);
  if (dst_dtype == DType::kF32) {
    auto* out = static_cast<float*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = load_as_f32(in, src_dtype, i);
  } else {
    auto* out = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(load_as_f32(in, src_dtype, i));
  }
}

}  // namespace bf
