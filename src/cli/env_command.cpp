// `blockflash env [--model DIR]`: the build, the device, the kernel registry, and which
// kernel each layer of a model would use. Also the device flags and backend factory
// (device_options.h).
#include <cstdio>
#include <set>
#include <sstream>
#include <string>

#include "backend/registry.h"
#include "cli/commands.h"
#include "cli/device_options.h"
#include "core/log.h"
#include "model/config.h"

#ifdef BLOCKFLASH_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace bf::cli {

DeviceOptions& device_options() {
  static DeviceOptions options;
  return options;
}

void add_device_flags(CLI::App* sub) {
  DeviceOptions& o = device_options();
  sub->add_option("--attention-backend", o.attention_backend,
                  "Attention kernel from the registry (blockflash env lists them), or auto")
      ->capture_default_str();
  sub->add_option("--load-format", o.load_format,
                  "auto (safetensors) or dummy (random weights, for benchmarking shapes)")
      ->check(CLI::IsMember({"auto", "safetensors", "dummy"}))
      ->capture_default_str();
  sub->add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                  "Fraction of GPU memory for weights, activations, KV cache and states")
      ->check(CLI::Range(0.05, 1.0))
      ->capture_default_str();
  sub->add_flag("--enforce-eager", o.enforce_eager,
                "No CUDA graphs: decode steps run eagerly (graphs are recorded per batch-size "
                "bucket at start-up otherwise)");
}

bool cuda_available() {
#ifdef BLOCKFLASH_HAVE_CUDA
  return query_cuda_device(0).present;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_device_backend(const std::string& device) {
  const DeviceOptions& o = device_options();
  if (device == "cpu" || (device == "auto" && !cuda_available())) {
    if (o.attention_backend != "auto" && !o.attention_backend.empty())
      log_warn("--attention-backend ", o.attention_backend, " is ignored on the CPU backend");
    return make_cpu_backend();
  }
  if (device == "cuda" || device == "auto") {
#ifdef BLOCKFLASH_HAVE_CUDA
    BF_CHECK(query_cuda_device(0).present, "--device cuda: no CUDA device is visible");
    return make_cuda_backend(CudaBackendOptions{.device = 0,
                                                .attention_backend = o.attention_backend});
#else
    fail("--device cuda: this build has no CUDA backend (configure with -DBLOCKFLASH_CUDA=ON)");
#endif
  }
  fail("unknown --device '", device, "' (expected cpu, cuda or auto)");
}

size_t device_cache_bytes(Backend& backend, size_t cpu_bytes, size_t activation_reserve) {
#ifdef BLOCKFLASH_HAVE_CUDA
  if (backend.device() == Device::kCUDA) {
    size_t free_bytes = 0, total = 0;
    cuda_memory_info(free_bytes, total);
    const double budget = device_options().gpu_memory_utilization * static_cast<double>(total);
    const double used = static_cast<double>(total - free_bytes);
    const double left = budget - used - static_cast<double>(activation_reserve);
    BF_CHECK(left > 0, "--gpu-memory-utilization ", device_options().gpu_memory_utilization,
             " leaves no memory for the KV cache (", used / (1 << 30), " GiB in use of ",
             total / (1 << 30), " GiB)");
    log_info("cuda: ", left / (1 << 30), " GiB for the KV cache and states (",
             device_options().gpu_memory_utilization, " x ", total / (1 << 30), " GiB, ",
             used / (1 << 30), " GiB in use, ", activation_reserve >> 20, " MiB reserved)");
    return static_cast<size_t>(left);
  }
#endif
  return cpu_bytes;
}

namespace {

std::string cc_string(int cc) { return std::to_string(cc / 10) + "." + std::to_string(cc % 10); }

void print_registry(const KernelRegistry& r) {
  std::printf("kernel registry:\n");
  for (const KernelCaps& k : r.kernels()) {
    std::ostringstream dims;
    for (size_t i = 0; i < k.head_dims.size(); ++i) dims << (i ? "/" : "") << k.head_dims[i];
    std::printf("  %-16s %-14s sm %s%s  head_dim %s%s%s%s%s%s\n", k.name.c_str(),
                kernel_family_name(k.family), cc_string(k.min_cc).c_str(),
                k.max_cc == k.min_cc ? " only" : k.max_cc < 1000 ? ("-" + cc_string(k.max_cc)).c_str() : "+", dims.str().c_str(),
                k.paged ? " paged" : "", k.split_kv ? " split-kv" : "",
                k.family == KernelFamily::kAttention && k.non_causal ? " non-causal" : "",
                k.family == KernelFamily::kAttention && k.sliding_window ? " sliding-window" : "",
                k.specialized ? " (specialized)" : "");
    std::printf("  %-16s   %s\n", "", k.description.c_str());
  }
}

void print_layers(const ModelConfig& c, const DeviceCaps& device, const SelectOptions& options) {
  std::set<std::string> seen;
  for (size_t i = 0; i < c.layer_types.size(); ++i) {
    LayerNeeds needs;
    if (c.layer_types[i] == LayerType::kFullAttention) {
      needs = LayerNeeds{.family = KernelFamily::kAttention, .head_dim = c.head_dim};
    } else {
      needs = LayerNeeds{.family = KernelFamily::kGatedDeltaNet, .head_dim = c.linear_key_head_dim};
    }
    std::string choice;
    try {
      Selection s = builtin_kernel_registry().select(device, needs, options);
      choice = s.kernel->name + "  (" + s.reason + ")";
    } catch (const Error& e) {
      choice = std::string("ERROR: ") + e.what();
    }
    std::printf("    layer %2zu %-16s %-22s -> %s\n", i,
                c.layer_types[i] == LayerType::kFullAttention ? "full_attention" : "linear_attention",
                needs.describe().c_str(), choice.c_str());
  }
}

}  // namespace

Command add_env_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("env", "Print the build, the device, the kernel registry "
                                            "and per-layer kernel choices for a model");
  auto model = std::make_shared<std::string>();
  auto attention = std::make_shared<std::string>("auto");
  sub->add_option("--model", *model, "Model directory (config.json) to route");
  sub->add_option("--attention-backend", *attention, "Force an attention kernel (as serve's flag)");
  return [model, attention]() -> int {
#ifdef BLOCKFLASH_HAVE_CUDA
    std::printf("build: CUDA backend built (architectures %s)\n", BLOCKFLASH_CUDA_ARCHS);
    DeviceCaps device = query_cuda_device(0);
#else
    std::printf("build: CUDA is not built (CPU reference backend only; configure with "
                "-DBLOCKFLASH_CUDA=ON)\n");
    DeviceCaps device;
#endif
    if (device.present) {
      std::printf("device: %s, compute capability %s, %d SMs, %.1f GiB, %zu KB shared memory per "
                  "block\n",
                  device.name.c_str(), cc_string(device.cc).c_str(), device.num_sms,
                  static_cast<double>(device.total_memory) / (1 << 30), device.smem_per_block / 1024);
    } else {
      std::printf("device: no CUDA device\n");
    }
    SelectOptions options = SelectOptions::from_env(*attention);
    if (options.disable_specialized)
      std::printf("BLOCKFLASH_DISABLE_SPECIALIZED_KERNELS is set: portable kernels only\n");
    print_registry(builtin_kernel_registry());
    if (model->empty()) return 0;
    ModelConfig config = load_model_config(*model);
    std::printf("model: %s\n", config.summary().c_str());
    if (device.present) {
      std::printf("  on this device (%s):\n", device.name.c_str());
      print_layers(config, device, options);
    } else {
      // No device: what each build target would use, for this build's architectures (a
      // CPU-only build shows what the default CUDA build, 90a;120a;121a, would do).
#ifdef BLOCKFLASH_HAVE_CUDA
      const std::string archs = BLOCKFLASH_CUDA_ARCHS;
#else
      const std::string archs = "90a,120a,121a";
#endif
      const bool has_sm90a = archs.find("90a") != std::string::npos;
      std::printf("  (no device: routing per target for architectures %s)\n", archs.c_str());
      for (auto [cc, smem, name] : {std::tuple{90, 227, "sm_90 (H100/H200)"},
                                    {120, 99, "sm_120 (RTX 5090)"},
                                    {121, 99, "sm_121 (DGX Spark)"}}) {
        DeviceCaps target;
        target.present = true;
        target.name = name;
        target.cc = cc;
        target.smem_per_block = static_cast<size_t>(smem) * 1024;
        target.wgmma = cc == 90 && has_sm90a;  // what the probe finds on such a GPU
        std::printf("  on %s, %d KB shared memory per block:\n", name, smem);
        print_layers(config, target, options);
      }
    }
    return 0;
  };
}

}  // namespace bf::cli
