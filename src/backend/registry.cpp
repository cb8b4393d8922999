#include "backend/registry.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "core/error.h"
#include "core/log.h"

namespace bf {

const char* kernel_family_name(KernelFamily family) {
  return family == KernelFamily::kAttention ? "attention" : "gated-deltanet";
}

std::string LayerNeeds::describe() const {
  std::ostringstream out;
  out << (family == KernelFamily::kAttention ? "head_dim=" : "k_head_dim=") << head_dim;
  if (family == KernelFamily::kAttention) {
    out << (causal ? " causal" : " non-causal");
    if (sliding_window) out << " sliding-window";
  }
  if (f32) out << " f32";
  return out.str();
}

SelectOptions SelectOptions::from_env(const std::string& forced) {
  SelectOptions options;
  options.forced = forced == "auto" ? "" : forced;
  if (const char* value = std::getenv("BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS")) {
    std::string v = value;
    options.disable_specialized = v == "1" || v == "true" || v == "yes" || v == "on";
  }
  return options;
}

void KernelRegistry::add(KernelCaps caps) {
  BF_CHECK(find(caps.name) == nullptr, "kernel registry: '", caps.name, "' registered twice");
  kernels_.push_back(std::move(caps));
}

const KernelCaps* KernelRegistry::find(const std::string& name) const {
  for (const KernelCaps& k : kernels_)
    if (k.name == name) return &k;
  return nullptr;
}

std::string KernelRegistry::why_not(const KernelCaps& k, const DeviceCaps& device,
                                    const LayerNeeds& needs) {
  std::ostringstream why;
  if (k.family != needs.family) {
    why << "is a " << kernel_family_name(k.family) << " kernel";
  } else if (device.cc < k.min_cc || device.cc > k.max_cc) {
    why << "needs compute capability " << k.min_cc / 10 << "." << k.min_cc % 10;
    if (k.max_cc < 1000 && k.max_cc != k.min_cc) why << " to " << k.max_cc / 10 << "." << k.max_cc % 10;
    why << ", the device is " << device.cc / 10 << "." << device.cc % 10;
  } else if (k.needs_wgmma && !device.wgmma) {
    why << "needs sm_90a (wgmma) code for the device, which this binary lacks";
  } else if (std::find(k.head_dims.begin(), k.head_dims.end(), needs.head_dim) ==
             k.head_dims.end()) {
    why << "has no head_dim " << needs.head_dim;
  } else if (needs.family == KernelFamily::kAttention && needs.causal && !k.causal) {
    why << "is not causal";
  } else if (needs.family == KernelFamily::kAttention && !needs.causal && !k.non_causal) {
    why << "has no non-causal mode";
  } else if (needs.sliding_window && !k.sliding_window) {
    why << "has no sliding window";
  } else if (needs.f32 && !k.f32) {
    why << "has no f32 mode";
  } else {
    auto it = k.smem_bytes.find(needs.head_dim);
    const size_t smem = it == k.smem_bytes.end() ? 0 : it->second;
    if (smem > device.smem_per_block)
      why << "needs " << smem / 1024 << " KB of shared memory per block at head_dim "
          << needs.head_dim << ", the device allows " << device.smem_per_block / 1024 << " KB";
  }
  return why.str();
}

Selection KernelRegistry::select(const DeviceCaps& device, const LayerNeeds& needs,
                                 const SelectOptions& options) const {
  Selection result;
  if (!options.forced.empty()) {
    const KernelCaps* k = find(options.forced);
    if (k == nullptr) {
      std::string names;
      for (const KernelCaps& c : kernels_)
        if (c.family == needs.family) names += (names.empty() ? "" : ", ") + c.name;
      fail("--attention-backend ", options.forced, ": no such kernel (", kernel_family_name(needs.family),
           " kernels: ", names, ")");
    }
    if (k->family != needs.family) {
      // A forced attention kernel says nothing about the GDN layers: select those normally.
      SelectOptions rest = options;
      rest.forced.clear();
      return select(device, needs, rest);
    }
    std::string why = why_not(*k, device, needs);
    BF_CHECK(why.empty(), "--attention-backend ", k->name, " cannot serve this model's ",
             kernel_family_name(needs.family), " layers (", needs.describe(), "): it ", why);
    result.kernel = k;
    result.reason = "forced by --attention-backend";
    return result;
  }
  std::vector<std::string> skipped;
  for (const KernelCaps& k : kernels_) {
    if (k.family != needs.family) continue;
    std::string why;
    if (options.disable_specialized && k.specialized)
      why = "is disabled by BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS";
    else
      why = why_not(k, device, needs);
    if (!why.empty()) {
      skipped.push_back(k.name + " " + why);
      continue;
    }
    if (result.kernel == nullptr || k.priority > result.kernel->priority) result.kernel = &k;
  }
  if (result.kernel == nullptr) {
    std::string all;
    for (const std::string& s : skipped) all += (all.empty() ? "" : "; ") + s;
    fail("no ", kernel_family_name(needs.family), " kernel can serve ", needs.describe(),
         " on ", device.present ? device.name : "this device", " (sm_", device.cc, "): ", all);
  }
  std::ostringstream reason;
  reason << "priority " << result.kernel->priority;
  for (const std::string& s : skipped) reason << "; " << s;
  result.reason = reason.str();
  return result;
}

const KernelCaps& KernelSelector::select(const LayerNeeds& needs) {
  const std::string key = std::string(kernel_family_name(needs.family)) + " " + needs.describe();
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = chosen_.find(key);
  if (it != chosen_.end()) return *it->second;
  Selection s = registry_.select(device_, needs, options_);
  log_info(kernel_family_name(needs.family), ": ", needs.describe(), " -> ", s.kernel->name, " (",
           s.reason, ")");
  chosen_[key] = s.kernel;
  return *s.kernel;
}

const KernelRegistry& builtin_kernel_registry() {
  static const KernelRegistry registry = [] {
    KernelRegistry r;
    r.add(KernelCaps{.name = "simt-paged",
                     .family = KernelFamily::kAttention,
                     .description = "portable SIMT paged attention: a block per (row, KV head, "
                                    "split) serves up to 8 query heads, warps over keys, online "
                                    "softmax, split-KV (FlashDecoding) with a combine kernel",
                     .min_cc = 70,
                     .head_dims = {32, 64, 128, 256},
                     .smem_bytes = {{32, 4352}, {64, 8448}, {128, 16640}, {256, 33024}},
                     .split_kv = true,
                     .priority = 0});
    r.add(KernelCaps{.name = "flash-mma",
                     .family = KernelFamily::kAttention,
                     .description = "FlashAttention-2-style mma.sync (bf16, sm_80+) for prefill "
                                    "and verify: at head_dim <= 128 tiles of 128 queries (4 warps x "
                                    "32 rows, double-buffered K/V) where shared memory allows, else "
                                    "64; at 256 tiles of 64 (single-buffered); K/V through the "
                                    "block table with cp.async; rows of sequences with under 16 "
                                    "queries (decode) go to simt-paged's split-KV path",
                     .min_cc = 80,
                     .head_dims = {64, 128, 256},
                     // The compact 64-query tile's need (the wide tile is used only above it).
                     .smem_bytes = {{64, 46080}, {128, 87040}, {256, 101376}},
                     .split_kv = true,
                     .f32 = false,
                     .specialized = true,
                     .priority = 10});
    r.add(KernelCaps{.name = "flash-wgmma",
                     .family = KernelFamily::kAttention,
                     .description = "Hopper warpgroup-MMA prefill and verify (sm_90a): two "
                                    "warpgroups over 128 queries, S = Q K^T and O += P V as "
                                    "wgmma with K/V read from 128-byte-swizzled shared memory, "
                                    "double-buffered cp.async through the block table; decode "
                                    "rows go to simt-paged's split-KV path",
                     .min_cc = 90,
                     .max_cc = 90,
                     .head_dims = {256},
                     .smem_bytes = {{256, 197632}},
                     .split_kv = true,
                     .f32 = false,
                     .specialized = true,
                     .needs_wgmma = true,
                     .priority = 20});
    r.add(KernelCaps{.name = "gdn-recurrent",
                     .family = KernelFamily::kGatedDeltaNet,
                     .description = "recurrent gated delta rule: a warp per 32 value columns, "
                                    "each lane's state column in registers, next token "
                                    "prefetched; snapshots for verify",
                     .min_cc = 70,
                     .head_dims = {16, 32, 64, 128},
                     .smem_bytes = {},
                     .paged = false,
                     .priority = 0});
    r.add(KernelCaps{.name = "gdn-chunked",
                     .family = KernelFamily::kGatedDeltaNet,
                     .description = "chunked gated delta rule for prefill (WY/UT transform, "
                                    "32-token chunks, mma.sync TF32, 3xTF32 in f32 mode): a "
                                    "parallel prep kernel per (chunk, head) inverts I + A, then "
                                    "a CTA per (sequence, value head, 32 value columns) carries "
                                    "the state in registers; decode and verify go to "
                                    "gdn-recurrent",
                     .min_cc = 80,
                     .head_dims = {16, 32, 64, 128},
                     .smem_bytes = {{16, 38400}, {32, 45056}, {64, 58368}, {128, 84992}},
                     .paged = false,
                     .specialized = true,
                     .priority = 10});
    return r;
  }();
  return registry;
}

}  // namespace bf
