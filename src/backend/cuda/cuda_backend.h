// The CUDA backend (bf16 storage, f32 accumulation; Gated DeltaNet states f32). Include only
// when BLOCKFLASH_HAVE_CUDA is defined; the declarations are plain C++.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "backend/registry.h"

namespace bf {

struct CudaBackendOptions {
  int device = 0;
  std::string attention_backend;  // --attention-backend: "" / "auto" selects
  // Storage of weights, activations and the KV cache: BF16 (serving) or F32 (an exact mode
  // for checking the kernels end to end against f32 references). BLOCKFLASH_CUDA_DTYPE=f32
  // overrides.
  DType dtype = DType::kBF16;
};

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options = {});

// The device's capabilities; present = false when there is no usable CUDA device.
DeviceCaps query_cuda_device(int device = 0);

// Free and total device memory in bytes (cudaMemGetInfo).
void cuda_memory_info(size_t& free_bytes, size_t& total_bytes);

// Fills a CUDA tensor (bf16 or f32) with uniform random values in [-scale, scale) generated
// on the device (dummy weights for benchmarks); deterministic in seed.
void cuda_fill_uniform(Tensor& tensor, float scale, uint64_t seed);

// Waits for all work queued by the CUDA backend.
void cuda_synchronize();

}  // namespace bf

namespace bf {
// Copies a host F32 tensor into an existing CUDA tensor of the same element count,
// converting to its dtype (F32 or BF16). For tests and tools.
void cuda_copy_from_host(Tensor& device, const Tensor& host_f32);
}  // namespace bf
