// Kernel registry (shared/DESIGN.md "Attention kernels and their registry"): every attention
// and Gated DeltaNet implementation declares what it can do; selection takes the device and a
// layer's needs and picks the best match, explaining why. Pure C++ (no CUDA): the CPU build,
// `blockflash env` and the unit tests use it without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace bf {

enum class KernelFamily { kAttention, kGatedDeltaNet };
const char* kernel_family_name(KernelFamily family);

// What selection needs to know about the device.
struct DeviceCaps {
  bool present = false;
  std::string name;
  int cc = 0;                       // compute capability major*10 + minor (90, 120, 121)
  size_t smem_per_block = 0;        // opt-in shared memory limit per block, bytes
  int num_sms = 0;
  size_t total_memory = 0;
  bool wgmma = false;               // the binary has sm_90a (wgmma) code this device can run
};

struct KernelCaps {
  std::string name;
  KernelFamily family = KernelFamily::kAttention;
  std::string description;
  int min_cc = 0, max_cc = 1000;    // inclusive
  std::vector<int> head_dims;       // supported head dims (attention: head_dim; GDN: k_head_dim)
  // Dynamic + static shared memory per block the kernel needs for a head dim (0: little).
  std::map<int, size_t> smem_bytes;
  bool paged = true, split_kv = false, causal = true, non_causal = true, sliding_window = true,
       verify = true;
  bool f32 = true;                  // also runs with f32 storage (the exact checking mode)
  bool specialized = false;         // disabled by BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS=1
  bool needs_wgmma = false;         // Hopper warpgroup MMA: DeviceCaps::wgmma must be set
  int priority = 0;                 // higher wins among the eligible
};

// The needs of one layer shape.
struct LayerNeeds {
  KernelFamily family = KernelFamily::kAttention;
  int head_dim = 0;
  bool causal = true;
  bool sliding_window = false;
  bool f32 = false;                 // f32 storage
  std::string describe() const;     // "head_dim=256 causal"
};

struct SelectOptions {
  std::string forced;               // --attention-backend NAME ("" or "auto": choose)
  bool disable_specialized = false;
  // Reads BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS (1/true/yes).
  static SelectOptions from_env(const std::string& forced = "");
};

struct Selection {
  const KernelCaps* kernel = nullptr;
  std::string reason;               // why this one (and why not the better ones)
};

class KernelRegistry {
 public:
  void add(KernelCaps caps);
  const std::vector<KernelCaps>& kernels() const { return kernels_; }
  const KernelCaps* find(const std::string& name) const;

  // Empty when `kernel` can serve `needs` on `device`, else the reason it cannot.
  static std::string why_not(const KernelCaps& kernel, const DeviceCaps& device,
                             const LayerNeeds& needs);
  // The best eligible kernel. A forced name that cannot serve throws bf::Error naming why;
  // no eligible kernel at all throws too.
  Selection select(const DeviceCaps& device, const LayerNeeds& needs,
                   const SelectOptions& options) const;

 private:
  std::vector<KernelCaps> kernels_;
};

// The kernels the CUDA backend implements (declared here so CPU-only builds can list them).
const KernelRegistry& builtin_kernel_registry();

// Selects through a registry and logs each distinct layer shape's choice once:
// "attention: head_dim=256 causal -> simt-paged (why)".
class KernelSelector {
 public:
  KernelSelector(const KernelRegistry& registry, DeviceCaps device, SelectOptions options)
      : registry_(registry), device_(std::move(device)), options_(std::move(options)) {}
  const KernelCaps& select(const LayerNeeds& needs);
  const DeviceCaps& device() const { return device_; }
  const SelectOptions& options() const { return options_; }

 private:
  const KernelRegistry& registry_;
  DeviceCaps device_;
  SelectOptions options_;
  std::mutex mutex_;
  std::map<std::string, const KernelCaps*> chosen_;
};

}  // namespace bf
