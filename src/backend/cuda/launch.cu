// Host-side launch helpers shared by the kernels: whether programmatic dependent launch is on,
// and the shared-memory request that spreads a small grid one block per SM (cuda_common.h).
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_common.h"

namespace bf::cuda {

bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("BLOCKFLASH_PDL");
    if (e != nullptr && std::string(e) == "0") return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

namespace {
struct SpreadLimits {
  bool on = false;
  std::string only;  // "": every kernel; else a comma-separated list of those spread
  int sms = 0;
  size_t alone = 0;  // bytes that leave no room for a second block on an SM
};

const SpreadLimits& spread_limits() {
  static const SpreadLimits limits = [] {
    SpreadLimits l;
    const char* e = std::getenv("BLOCKFLASH_SPREAD");
    if (e != nullptr && std::string(e) == "0") return l;
    if (e != nullptr && std::string(e) != "1") l.only = "," + std::string(e) + ",";
    int device = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaGetDeviceProperties(&p, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return l;
    }
    // Two blocks share an SM only if 2 (bytes + reserved) <= the SM's shared memory.
    const size_t alone = p.sharedMemPerMultiprocessor / 2 - p.reservedSharedMemPerBlock + 16;
    if (alone > p.sharedMemPerBlockOptin) return l;  // no such block on this device
    l.on = true;
    l.sms = p.multiProcessorCount;
    l.alone = alone;
    return l;
  }();
  return limits;
}
}  // namespace

size_t spread_smem_bytes(int64_t blocks, size_t needed, const char* kernel) {
  const SpreadLimits& l = spread_limits();
  if (!l.on || blocks > l.sms || needed >= l.alone) return needed;
  if (!l.only.empty() && l.only.find("," + std::string(kernel) + ",") == std::string::npos)
    return needed;
  return l.alone;
}

size_t spread_smem_limit() { return spread_limits().alone; }

}  // namespace bf::cuda
