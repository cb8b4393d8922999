// Device flags shared by the subcommands that run a model (--device is EngineOptions'):
// --attention-backend, --load-format, --gpu-memory-utilization, --enforce-eager, and the
// backend factory for --device cpu|cuda|auto. Implemented in env_command.cpp; works in the
// CPU-only build too (cuda then says it is not built).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"

namespace bf::cli {

struct DeviceOptions {
  std::string attention_backend = "auto";  // a registry kernel name, or auto
  std::string load_format = "auto";        // auto (safetensors) | dummy
  double gpu_memory_utilization = 0.9;     // fraction of device memory blockflash may use
  bool enforce_eager = false;              // no CUDA graphs of decode steps
};

DeviceOptions& device_options();
void add_device_flags(CLI::App* sub);
// cpu, cuda, or auto (cuda when built with it and a device is present, else cpu).
std::unique_ptr<Backend> make_device_backend(const std::string& device);
// Bytes for the KV cache + GDN states: on CUDA, gpu_memory_utilization x total memory minus
// what is in use now (weights loaded) minus an activation reserve; on the CPU, cpu_bytes.
size_t device_cache_bytes(Backend& backend, size_t cpu_bytes, size_t activation_reserve);
// Whether CUDA is compiled in and a device is present.
bool cuda_available();

}  // namespace bf::cli
