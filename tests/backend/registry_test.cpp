// Kernel selection on the CPU: the builtin registry and a synthetic one with Hopper- and
// sm_12x-specific kernels, for sm_90 (H100/H200, 227 KB), sm_120 (RTX 5090) and sm_121
// (DGX Spark), 99 KB shared memory per block on both, at head_dim 128 and 256.
#include <gtest/gtest.h>

#include <cstdlib>

#include "backend/registry.h"
#include "core/error.h"

namespace bf {
namespace {

DeviceCaps device(int cc) {
  DeviceCaps d;
  d.present = true;
  d.cc = cc;
  d.name = "sm_" + std::to_string(cc);
  d.smem_per_block = cc == 90 ? 227 * 1024 : 99 * 1024;
  return d;
}

LayerNeeds attention(int hd, bool causal = true, bool window = false) {
  return LayerNeeds{.family = KernelFamily::kAttention, .head_dim = hd, .causal = causal,
                    .sliding_window = window};
}

// A registry shaped like the planned one: portable, an mma.sync kernel whose head_dim 256
// tile needs 144 KB, a Hopper-only kernel, and one without sliding window.
KernelRegistry synthetic() {
  KernelRegistry r;
  r.add(KernelCaps{.name = "portable", .min_cc = 70, .head_dims = {64, 128, 256},
                   .smem_bytes = {{256, 8 * 1024}}, .priority = 0});
  r.add(KernelCaps{.name = "mma-sm80", .min_cc = 80, .head_dims = {64, 128, 256},
                   .smem_bytes = {{64, 48 * 1024}, {128, 80 * 1024}, {256, 144 * 1024}},
                   .specialized = true, .priority = 10});
  r.add(KernelCaps{.name = "wgmma-sm90", .min_cc = 90, .max_cc = 90, .head_dims = {128, 256},
                   .smem_bytes = {{128, 160 * 1024}, {256, 200 * 1024}}, .sliding_window = false,
                   .specialized = true, .priority = 20});
  r.add(KernelCaps{.name = "gdn", .family = KernelFamily::kGatedDeltaNet, .head_dims = {128}});
  return r;
}

TEST(Registry, Sm90PrefersHopperKernel) {
  KernelRegistry r = synthetic();
  for (int hd : {128, 256})
    EXPECT_EQ(r.select(device(90), attention(hd), {}).kernel->name, "wgmma-sm90") << hd;
  // Sliding window: the Hopper kernel lacks it, the mma one serves.
  EXPECT_EQ(r.select(device(90), attention(128, true, true), {}).kernel->name, "mma-sm80");
}

TEST(Registry, Sm12xHeadDim256StaysUnder99KB) {
  KernelRegistry r = synthetic();
  for (int cc : {120, 121}) {
    EXPECT_EQ(r.select(device(cc), attention(128), {}).kernel->name, "mma-sm80") << cc;
    Selection s = r.select(device(cc), attention(256), {});
    EXPECT_EQ(s.kernel->name, "portable") << cc;
    EXPECT_NE(s.reason.find("144 KB"), std::string::npos) << s.reason;
    auto it = s.kernel->smem_bytes.find(256);
    EXPECT_LE(it == s.kernel->smem_bytes.end() ? 0 : it->second, 99u * 1024);
  }
}

TEST(Registry, ForcedKernel) {
  KernelRegistry r = synthetic();
  SelectOptions forced{.forced = "portable"};
  EXPECT_EQ(r.select(device(90), attention(128), forced).kernel->name, "portable");
  // Forcing a kernel that cannot serve is an error naming why.
  SelectOptions hopper{.forced = "wgmma-sm90"};
  try {
    r.select(device(120), attention(128), hopper);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("compute capability"), std::string::npos) << e.what();
  }
  SelectOptions mma{.forced = "mma-sm80"};
  EXPECT_THROW(r.select(device(121), attention(256), mma), Error);
  EXPECT_THROW(r.select(device(90), attention(128), SelectOptions{.forced = "nope"}), Error);
  // A forced attention kernel leaves the GDN layers to normal selection.
  LayerNeeds gdn{.family = KernelFamily::kGatedDeltaNet, .head_dim = 128};
  EXPECT_EQ(r.select(device(90), gdn, forced).kernel->name, "gdn");
}

TEST(Registry, DisableSpecializedFallsBackToPortable) {
  KernelRegistry r = synthetic();
  SelectOptions off{.disable_specialized = true};
  for (int cc : {90, 120, 121})
    for (int hd : {128, 256})
      EXPECT_EQ(r.select(device(cc), attention(hd), off).kernel->name, "portable");
  setenv("BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS", "1", 1);
  EXPECT_TRUE(SelectOptions::from_env().disable_specialized);
  unsetenv("BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS");
  EXPECT_FALSE(SelectOptions::from_env().disable_specialized);
  EXPECT_EQ(SelectOptions::from_env("auto").forced, "");
}

TEST(Registry, NoKernelIsAnError) {
  KernelRegistry r = synthetic();
  EXPECT_THROW(r.select(device(90), attention(96), {}), Error);
  EXPECT_THROW(r.select(device(61), attention(128), {}), Error);
}

TEST(Registry, BuiltinServesQwenShapesOnEveryTarget) {
  const KernelRegistry& r = builtin_kernel_registry();
  for (int cc : {90, 120, 121}) {
    for (int hd : {128, 256}) {
      for (bool causal : {true, false}) {
        Selection s = r.select(device(cc), attention(hd, causal), {});
        ASSERT_NE(s.kernel, nullptr);
        auto it = s.kernel->smem_bytes.find(hd);
        const size_t smem = it == s.kernel->smem_bytes.end() ? 0 : it->second;
        EXPECT_LE(smem, device(cc).smem_per_block) << s.kernel->name << " hd " << hd;
      }
    }
    LayerNeeds gdn{.family = KernelFamily::kGatedDeltaNet, .head_dim = 128};
    EXPECT_NO_THROW(r.select(device(cc), gdn, {}));
  }
}

// The builtin attention routing per target: Hopper with the binary's sm_90a code takes
// flash-wgmma at head_dim 256 (flash-mma at 128, and at 256 when the sm_90a code is missing);
// sm_12x never gets the Hopper kernel and stays within 99 KB; f32 storage and the
// disable switch fall back.
TEST(Registry, BuiltinAttentionRouting) {
  const KernelRegistry& r = builtin_kernel_registry();
  DeviceCaps hopper = device(90);
  hopper.wgmma = true;
  EXPECT_EQ(r.select(hopper, attention(256), {}).kernel->name, "flash-wgmma");
  EXPECT_EQ(r.select(hopper, attention(256, false, true), {}).kernel->name, "flash-wgmma");
  EXPECT_EQ(r.select(hopper, attention(128), {}).kernel->name, "flash-mma");
  Selection no_code = r.select(device(90), attention(256), {});
  EXPECT_EQ(no_code.kernel->name, "flash-mma");
  EXPECT_NE(no_code.reason.find("sm_90a"), std::string::npos) << no_code.reason;
  for (int cc : {120, 121}) {
    DeviceCaps d = device(cc);
    d.wgmma = true;  // even if a probe said so, the capability range excludes sm_12x
    for (int hd : {128, 256}) {
      Selection s = r.select(d, attention(hd), {});
      EXPECT_EQ(s.kernel->name, "flash-mma") << cc << " hd " << hd;
      EXPECT_LE(s.kernel->smem_bytes.at(hd), 99u * 1024) << cc << " hd " << hd;
    }
    EXPECT_THROW(r.select(d, attention(256), SelectOptions{.forced = "flash-wgmma"}), Error);
  }
  LayerNeeds f32 = attention(256);
  f32.f32 = true;
  EXPECT_EQ(r.select(hopper, f32, {}).kernel->name, "simt-paged");
  SelectOptions off{.disable_specialized = true};
  EXPECT_EQ(r.select(hopper, attention(256), off).kernel->name, "simt-paged");
}

TEST(Registry, SelectorLogsOncePerShape) {
  KernelRegistry r = synthetic();
  KernelSelector sel(r, device(120), {});
  EXPECT_EQ(sel.select(attention(256)).name, "portable");
  EXPECT_EQ(sel.select(attention(256)).name, "portable");
  EXPECT_EQ(sel.select(attention(128)).name, "mma-sm80");
}

// Prefill of the GDN layers takes the chunked kernel where mma.sync exists; disabling the
// specialised kernels (or an older device) falls back to the recurrent one.
TEST(Registry, BuiltinGdnChunkedAndItsFallback) {
  const KernelRegistry& r = builtin_kernel_registry();
  for (int dk : {64, 128}) {
    LayerNeeds gdn{.family = KernelFamily::kGatedDeltaNet, .head_dim = dk};
    EXPECT_EQ(r.select(device(90), gdn, {}).kernel->name, "gdn-chunked");
    EXPECT_EQ(r.select(device(120), gdn, {}).kernel->name, "gdn-chunked");
    EXPECT_EQ(r.select(device(75), gdn, {}).kernel->name, "gdn-recurrent");
    SelectOptions off;
    off.disable_specialized = true;
    EXPECT_EQ(r.select(device(90), gdn, off).kernel->name, "gdn-recurrent");
    SelectOptions forced;
    forced.forced = "gdn-recurrent";
    EXPECT_EQ(r.select(device(90), gdn, forced).kernel->name, "gdn-recurrent");
  }
}

}  // namespace
}  // namespace bf
