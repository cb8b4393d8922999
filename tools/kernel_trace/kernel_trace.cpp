// A CUDA injection library that records when each kernel ran on the GPU, kernels inside CUDA
// graphs included, and writes one CSV row per kernel at exit. ncu times kernels one at a time
// (serialized, replayed), which overstates the small latency-bound kernels of a batch-1 decode
// step and hides how programmatic dependent launch overlaps them; nsys is not on the GPU box.
// This asks CUPTI's activity API for the concurrent-kernel records instead: GPU start and end
// timestamps of every kernel as it ran in the real stream or graph.
//
// Use (no change to the program): CUDA_INJECTION64_PATH=/path/libkernel_trace.so
// KERNEL_TRACE_OUT=trace.csv ./program ...  (the driver loads the library at cuInit and calls
// InitializeInjection). Columns: start_ns,end_ns,stream,graph,graph_node,grid_x,grid_y,grid_z,
// block_x,name (demangled, quoted). tools/kernel_trace/graph_breakdown.py reads it.
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

namespace {

constexpr size_t kBufferBytes = size_t{16} << 20;
FILE* g_out = nullptr;
std::mutex g_mutex;

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  std::fprintf(stderr, "kernel_trace: %s failed: %s\n", what, msg ? msg : "?");
  std::exit(1);
}

std::string demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : name;
  std::free(d);
  for (char& c : s)
    if (c == '"') c = '\'';  // the CSV quotes the name
  return s;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = kBufferBytes;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mutex);
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    std::fprintf(g_out, "%llu,%llu,%u,%u,%llu,%d,%d,%d,%d,\"%s\"\n",
                 static_cast<unsigned long long>(k->start), static_cast<unsigned long long>(k->end),
                 k->streamId, k->graphId, static_cast<unsigned long long>(k->graphNodeId),
                 k->gridX, k->gridY, k->gridZ, k->blockX, demangle(k->name).c_str());
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  if (dropped > 0) std::fprintf(stderr, "kernel_trace: %zu records dropped\n", dropped);
  std::free(buffer);
}

void flush_at_exit() {
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_out != nullptr) std::fclose(g_out);
  g_out = nullptr;
}

}  // namespace

extern "C" int InitializeInjection() {
  const char* path = std::getenv("KERNEL_TRACE_OUT");
  g_out = std::fopen(path != nullptr ? path : "kernel_trace.csv", "w");
  if (g_out == nullptr) {
    std::perror("kernel_trace: output");
    return 0;
  }
  std::fprintf(g_out, "start_ns,end_ns,stream,graph,graph_node,grid_x,grid_y,grid_z,block_x,name\n");
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "register callbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernel records");
  std::atexit(flush_at_exit);
  return 1;
}
