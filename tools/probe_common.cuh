// Pieces the GPU probes under tools/ share (staging_probe, persistent_gemv_probe): random
// bf16 fills, the stream that evicts a weight from L2 before each timed trial, and the
// comparison of two results.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace probe {

// The shape both probes time: the Qwen3.5-35B-A3B GDN input projection, [12352, 2048] bf16.
constexpr int kRows = 12352, kCols = 2048;
constexpr int kChunks = kCols / 8;  // 16-byte chunks per row
constexpr size_t kRowBytes = kCols * 2;

// Bytes streamed before every trial: several times the L2 (50 MB on an H100 / H200).
constexpr size_t kFlushBytes = size_t{256} << 20;

// p[i] = a hash of (i, seed) mapped to [-0.05, 0.05).
__global__ void fill_kernel(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16((static_cast<float>(h & 0xffff) / 65535.0f - 0.5f) * 0.1f);
  }
}

// Reads n 16-byte chunks through L2 (the sink keeps the reads from being removed).
__global__ void flush_kernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldcg(p + i);
    acc ^= v.x ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// The largest |a - b| relative to the largest |b|.
inline float max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0.0f, scale = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::fabs(b[i]));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return scale > 0 ? worst / scale : worst;
}

}  // namespace probe
