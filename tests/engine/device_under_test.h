// What the engine-level tests run on: the CPU reference, or the CUDA backend with
// BLOCKFLASH_TEST_DEVICE=cuda (tools/gpu_dflash.sh runs them that way, in f32 and bf16 storage
// via BLOCKFLASH_CUDA_DTYPE); and where the test data is (BLOCKFLASH_TEST_DATA_DIR in the
// environment overrides the build's path, for binaries packed for another machine).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "backend/backend.h"
#ifdef BLOCKFLASH_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace bf::test {

// Whether the last backend_under_test() stores activations in bf16 (CUDA's serving mode).
inline bool& bf16_storage() {
  static bool bf16 = false;
  return bf16;
}

inline std::unique_ptr<Backend> backend_under_test() {
  const char* device = std::getenv("BLOCKFLASH_TEST_DEVICE");
  if (device != nullptr && std::string(device) == "cuda") {
#ifdef BLOCKFLASH_HAVE_CUDA
    auto backend = make_cuda_backend();
    bf16_storage() = backend->activation_dtype() == DType::kBF16;
    return backend;
#else
    throw std::runtime_error("BLOCKFLASH_TEST_DEVICE=cuda in a build without CUDA");
#endif
  }
  return make_cpu_backend();
}

inline std::filesystem::path goldens_dir() {
  const char* dir = std::getenv("BLOCKFLASH_TEST_DATA_DIR");
  return std::filesystem::path(dir != nullptr ? dir : BLOCKFLASH_TEST_DATA_DIR) / "goldens";
}

}  // namespace bf::test
