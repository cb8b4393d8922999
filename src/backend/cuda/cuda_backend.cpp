// CudaBackend: every Backend op on one CUDA stream. Storage: bf16 for weights of rank >= 2 and
// activations, f32 for 1-D weights (norms, gates' A_log / dt_bias: they are tiny and their
// precision matters) and for the Gated DeltaNet states; all kernels accumulate in f32.
// Device memory comes from a caching pool (the model allocates its temporaries per forward);
// freed blocks are reused in stream order. Batch metadata is uploaded once per forward batch
// (cached by address and content hash). GEMMs go through cuBLASLt (bf16 in, f32 compute).
#include "backend/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <chrono>
#include <cstring>
#include <thread>
#include <functional>
#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "backend/cuda/argmax.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/sample.h"
#include "core/log.h"

namespace bf {
namespace {

using namespace bf::cuda;

#define BF_CUBLAS_CHECK(expr)                                                              \
  do {                                                                                     \
    cublasStatus_t bf_st_ = (expr);                                                        \
    if (bf_st_ != CUBLAS_STATUS_SUCCESS)                                                   \
      ::bf::fail("cuBLASLt error ", static_cast<int>(bf_st_), " at ", __FILE__, ":", __LINE__, \
                 ": ", #expr);                                                             \
  } while (0)

// Caching device allocator: size classes (powers of two up to 1 MiB, then 2 MiB steps),
// free lists per class. Freed blocks go back to their list and are handed out again; since
// every kernel runs on the one stream, reuse is ordered after earlier users.
// A graph-private pool (for_graphs) serves only what recorded graphs allocate: it never frees
// its cached blocks (a graph replays their addresses) and takes the smallest free block of at
// least the size, up to twice it, so graphs of smaller batches reuse the larger ones' blocks.
class DevicePool : public std::enable_shared_from_this<DevicePool> {
 public:
  explicit DevicePool(bool for_graphs = false) : for_graphs_(for_graphs) {}
  std::shared_ptr<void> allocate(size_t bytes) {
    size_t size = round(bytes);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(size);
      if (for_graphs_) {
        for (it = free_.lower_bound(size); it != free_.end() && it->first < 2 * size; ++it)
          if (!it->second.empty()) break;
        if (it != free_.end() && it->first >= 2 * size) it = free_.end();
      }
      if (it != free_.end() && !it->second.empty()) {
        size = it->first;
        p = it->second.back();
        it->second.pop_back();
        cached_ -= size;
      }
    }
    if (p == nullptr) {
      cudaError_t err = cudaMalloc(&p, size);
      if (err != cudaSuccess && !for_graphs_) {
        (void)cudaGetLastError();
        release_cached();
        err = cudaMalloc(&p, size);
      }
      BF_CHECK(err == cudaSuccess, "CUDA out of memory allocating ", size, " bytes (",
               in_use_ / (1 << 20), " MiB in use)");
    }
    in_use_ += size;
    peak_ = std::max(peak_, in_use_);
    std::weak_ptr<DevicePool> self = shared_from_this();
    return std::shared_ptr<void>(p, [self, size](void* q) {
      if (auto pool = self.lock()) {
        pool->release(q, size);
      } else {
        cudaFree(q);
      }
    });
  }
  void release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    cudaDeviceSynchronize();
    for (auto& [size, list] : free_)
      for (void* p : list) cudaFree(p);
    free_.clear();
    cached_ = 0;
  }
  size_t in_use() const { return in_use_; }
  size_t peak() const { return peak_; }
  void reset_peak() { peak_ = in_use_; }
  size_t cached() const { return cached_; }

 private:
  static size_t round(size_t bytes) {
    if (bytes <= 512) return 512;
    if (bytes <= (size_t{1} << 20)) {
      size_t s = 512;
      while (s < bytes) s <<= 1;
      return s;
    }
    const size_t step = size_t{2} << 20;
    return (bytes + step - 1) / step * step;
  }
  void release(void* p, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[size].push_back(p);
    cached_ += size;
    in_use_ -= size;
  }
  const bool for_graphs_;
  std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0, in_use_ = 0, peak_ = 0;
};

// Process-wide CUDA state: the stream, the pool, cuBLASLt.
struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  std::shared_ptr<DevicePool> pool = std::make_shared<DevicePool>();
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t workspace_size = size_t{32} << 20;
  // The skinny tensor-core GEMM's split-K partial tiles and per-tile counters (zero between
  // launches: each launch's last block of a tile re-arms its counter). Ops run in stream order,
  // so one of each serves every backend of the process.
  float* skinny_workspace = nullptr;
  size_t skinny_workspace_size = size_t{16} << 20;
  unsigned* skinny_counters = nullptr;
  int64_t skinny_counter_count = int64_t{1} << 16;
  DeviceCaps caps;
  // Pinned staging ring for small host->device uploads (batch metadata, ids, positions):
  // copies from pageable memory would synchronise the stream and stop the host running ahead.
  uint8_t* ring = nullptr;
  size_t ring_size = size_t{16} << 20, ring_head = 0;
  cudaEvent_t ring_event = nullptr;
  bool ring_event_pending = false;

  // Copies `bytes` from host `src` to device `dst`, asynchronously in stream order.
  void upload_async(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    if (bytes > ring_size / 2) {  // large: plain synchronous copy
      BF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
      BF_CUDA_CHECK(cudaStreamSynchronize(stream));
      return;
    }
    const size_t need = (bytes + 255) / 256 * 256;
    if (ring_head + need > ring_size) {
      // Wrap: the copies out of the ring's start must be done before it is overwritten. The
      // event was recorded at the previous wrap, so everything from before it is complete
      // once it fires; to be safe against a full ring of copies since, wait for the stream.
      BF_CUDA_CHECK(cudaStreamSynchronize(stream));
      ring_head = 0;
    }
    uint8_t* slot = ring + ring_head;
    ring_head += need;
    std::memcpy(slot, src, bytes);
    BF_CUDA_CHECK(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, stream));
  }

  static Context& get() {
    static Context* ctx = [] {
      auto* c = new Context();
      int count = 0;
      BF_CHECK(cudaGetDeviceCount(&count) == cudaSuccess && count > 0, "no CUDA device");
      BF_CUDA_CHECK(cudaSetDevice(c->device));
      BF_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
      BF_CUBLAS_CHECK(cublasLtCreate(&c->lt));
      BF_CUDA_CHECK(cudaMalloc(&c->workspace, c->workspace_size));
      BF_CUDA_CHECK(cudaMalloc(&c->skinny_workspace, c->skinny_workspace_size));
      BF_CUDA_CHECK(cudaMalloc(&c->skinny_counters, c->skinny_counter_count * sizeof(unsigned)));
      BF_CUDA_CHECK(cudaMemset(c->skinny_counters, 0, c->skinny_counter_count * sizeof(unsigned)));
      BF_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&c->ring), c->ring_size,
                                  cudaHostAllocDefault));
      c->caps = query_cuda_device(c->device);
      return c;
    }();
    return *ctx;
  }
};

int dt_of(const Tensor& t, const char* op, const char* name) {
  BF_CHECK(t.defined(), op, ": ", name, " is not allocated");
  BF_CHECK(t.device() == Device::kCUDA, op, ": ", name, " must be a CUDA tensor");
  if (t.dtype() == DType::kF32) return kDtF32;
  if (t.dtype() == DType::kBF16) return kDtBF16;
  fail(op, ": ", name, " has dtype ", dtype_name(t.dtype()), " (CUDA ops take F32 or BF16)");
}

void check_numel(const Tensor& t, int64_t numel, const char* op, const char* name) {
  BF_CHECK(t.numel() == numel, op, ": ", name, " has shape ", shape_string(t.shape()), ", expected ",
           numel, " elements");
}

uint64_t fnv(uint64_t h, const int32_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(p[i]);
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t hash_batch(const ForwardBatch& b) {
  uint64_t h = 1469598103934665603ull;
  h = fnv(h, b.positions.data(), b.positions.size());
  h = fnv(h, b.slot_mapping.data(), b.slot_mapping.size());
  for (const BatchSequence& s : b.seqs) {
    const int32_t f[5] = {s.query_start, s.query_len, s.num_computed, s.state_slot,
                          static_cast<int32_t>(s.snapshot_slots.size())};
    h = fnv(h, f, 5);
    h = fnv(h, s.block_table.data(), s.block_table.size());
    h = fnv(h, s.snapshot_slots.data(), s.snapshot_slots.size());
  }
  return h ^ (b.positions.size() * 31 + b.seqs.size());
}

struct MatmulPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

int alignment_of(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 2 && (v % a) != 0) a /= 2;
  return a;
}

// A recorded decode forward (Backend::capture_graph). Constants uploaded while recording
// (e.g. the logits row indices) are copied from `constants`, pinned memory that lives as long
// as the graph, since a replayed host-to-device copy reads its source again.
struct CudaGraph final : Backend::Graph {
  int32_t num_seqs = 0, max_blocks = 0;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  uint8_t* constants = nullptr;
  size_t constants_size = size_t{256} << 10, constants_used = 0;
  int* live_count = nullptr;  // the backend's count of graphs alive (they must not outlive it)
  ~CudaGraph() override {
    if (live_count) --*live_count;
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    if (constants) cudaFreeHost(constants);
  }
};

// Where a graph's batch metadata lives in the shared metadata buffer (int32 offsets), for a
// batch of n sequences of one token each: positions, slot mapping, row -> sequence, token
// ids, SeqInfo (8 ints each), the live max kv length, then the block tables.
struct GraphLayout {
  int64_t n;
  int64_t positions() const { return 0; }
  int64_t slot_mapping() const { return n; }
  int64_t token_seq() const { return 2 * n; }
  int64_t token_ids() const { return 3 * n; }
  int64_t seqs() const { return 4 * n; }
  int64_t max_kv_len() const { return 12 * n; }
  int64_t tables() const { return 12 * n + 4; }
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options)
      : ctx_(Context::get()),
        act_(options.dtype),
        selector_(builtin_kernel_registry(), ctx_.caps,
                  SelectOptions::from_env(options.attention_backend)) {
    if (const char* e = std::getenv("BLOCKFLASH_CUDA_DTYPE"))
      act_ = std::string(e) == "f32" ? DType::kF32 : DType::kBF16;
    BF_CHECK(act_ == DType::kBF16 || act_ == DType::kF32, "cuda: dtype must be BF16 or F32");
    // BLOCKFLASH_GEMV=always|never pins the decode GEMM choice (tests); default: timed per shape.
    // BLOCKFLASH_FLASH_TILE=64|128 pins flash-mma's query tile (tests, benchmarks).
    if (const char* e = std::getenv("BLOCKFLASH_FLASH_TILE")) flash_tile_ = std::atoi(e);
    // BLOCKFLASH_FLASH_SPLITS=N pins flash-wgmma's key splits (flash_split_layout; tests, A/B).
    if (const char* e = std::getenv("BLOCKFLASH_FLASH_SPLITS")) {
      flash_splits_ = std::atoi(e);
      BF_CHECK(flash_splits_ >= 1 && flash_splits_ <= kDecodeMaxSplits,
               "BLOCKFLASH_FLASH_SPLITS must be in [1, ", kDecodeMaxSplits, "], got '", e, "'");
    }
    // BLOCKFLASH_ATTENTION_PREP_FOLD=1: the attention inputs' preparation folded into decode
    // attention (fused_gated_attention). Off by default until it has run on a GPU (written in
    // session 19 when no device was lent; tests and A/B runs turn it on).
    if (const char* e = std::getenv("BLOCKFLASH_ATTENTION_PREP_FOLD"))
      fold_attention_prep_ = std::string(e) == "1";
    // BLOCKFLASH_GDN_DECODE_SPLIT=1|2|4|auto: the fused GDN decode's blocks per value head.
    // Default 1: clusters of 2 and 4 lost at 35B-A3B batch 1 and 2 and tied at 27B batch 1 on
    // the H100 (bench/NOTES.md, session 19); auto is gdn_decode_split's choice.
    if (const char* e = std::getenv("BLOCKFLASH_GDN_DECODE_SPLIT")) {
      gdn_decode_split_ = std::string(e) == "auto" ? 0 : std::atoi(e);
      BF_CHECK(gdn_decode_split_ == 0 || gdn_decode_split_ == 1 || gdn_decode_split_ == 2 ||
                   gdn_decode_split_ == 4,
               "BLOCKFLASH_GDN_DECODE_SPLIT must be 1, 2, 4 or auto, got '", e, "'");
    }
    // BLOCKFLASH_FLASH_MIN_QUERY_LEN=N: sequences with at least N queries go to the flash
    // (tensor-core) kernels, shorter ones to the split-KV simt kernel (A/B runs, tests).
    if (const char* e = std::getenv("BLOCKFLASH_FLASH_MIN_QUERY_LEN")) {
      flash_min_query_len_ = std::atoi(e);
      BF_CHECK(flash_min_query_len_ >= 2, "BLOCKFLASH_FLASH_MIN_QUERY_LEN must be at least 2, got '",
               e, "'");
    }
    // BLOCKFLASH_DECODE_SPLIT_LEN=16|32|64 pins the shortest key split of decode attention
    // (default: decode_min_split_len's choice by grid size; A/B runs, tests).
    if (const char* e = std::getenv("BLOCKFLASH_DECODE_SPLIT_LEN")) {
      const int len = std::atoi(e);
      BF_CHECK(len == 16 || len == 32 || len == 64,
               "BLOCKFLASH_DECODE_SPLIT_LEN must be 16, 32 or 64, got '", e, "'");
      forced_split_len_ = len;
    }
    if (const char* e = std::getenv("BLOCKFLASH_GEMV"))
      gemv_mode_ = std::string(e) == "always" ? 1 : std::string(e) == "never" ? -1 : 0;
    if (const char* e = std::getenv("BLOCKFLASH_GEMV_CONFIG")) gemv_config_ = std::atoi(e);
    // BLOCKFLASH_SKINNY=always|never pins the tensor-core skinny GEMM on (where it applies) or
    // off, BLOCKFLASH_SKINNY_CONFIG=N its split configuration (tests, A/B runs).
    if (const char* e = std::getenv("BLOCKFLASH_SKINNY"))
      skinny_mode_ = std::string(e) == "always" ? 1 : std::string(e) == "never" ? -1 : 0;
    if (const char* e = std::getenv("BLOCKFLASH_SKINNY_CONFIG")) skinny_config_ = std::atoi(e);
    // BLOCKFLASH_GDN_FUSED=0: decode GDN layers as four ops (conv1d, gates, delta rule,
    // gated norm) instead of the fused kernel, which is faster at every batch size measured
    // (kernels_gdn_fused.cu).
    if (const char* e = std::getenv("BLOCKFLASH_GDN_FUSED")) gdn_fused_ = std::string(e) != "0";
    // BLOCKFLASH_MOE_FUSED=0: never; =1: up to the kernels' limit of tokens (tests).
    if (const char* e = std::getenv("BLOCKFLASH_MOE_FUSED")) {
      moe_fused_ = std::string(e) != "0";
      moe_fused_forced_ = std::string(e) == "1";
    }
    // Off by default: with both on, a 27B decode step measured slower (bench/NOTES.md), so
    // BLOCKFLASH_GEMV_DEEP=1 adds the deep configurations to the timing and
    // BLOCKFLASH_GEMV_GATED=1 folds the SwiGLU activation into the down gemv, for an A/B run.
    if (const char* e = std::getenv("BLOCKFLASH_GEMV_DEEP")) gemv_deep_ = std::string(e) == "1";
    if (const char* e = std::getenv("BLOCKFLASH_GEMV_GATED")) gemv_gated_ = std::string(e) == "1";
    // BLOCKFLASH_ATTENTION_GATE_FOLD=0: paged_attention_gated as separate ops (A/B runs).
    if (const char* e = std::getenv("BLOCKFLASH_ATTENTION_GATE_FOLD"))
      fold_attention_gate_ = std::string(e) != "0";
    // BLOCKFLASH_SIDE_PREFETCH=0: prefetch_weights hints are ignored.
    if (const char* e = std::getenv("BLOCKFLASH_SIDE_PREFETCH"))
      side_prefetch_ = std::string(e) != "0";
    log_info("cuda: ", ctx_.caps.name, " (sm_", ctx_.caps.cc, ", ", ctx_.caps.num_sms, " SMs, ",
             ctx_.caps.total_memory >> 30, " GiB, ", ctx_.caps.smem_per_block / 1024,
             " KB shared memory per block)");
    // A forced attention kernel must at least exist: fail now rather than at the first layer.
    if (!selector_.options().forced.empty())
      BF_CHECK(builtin_kernel_registry().find(selector_.options().forced) != nullptr,
               "--attention-backend ", selector_.options().forced, ": no such kernel");
  }

  ~CudaBackend() override {
    cudaStreamSynchronize(ctx_.stream);
    if (side_stream_) {
      cudaStreamSynchronize(side_stream_);
      cudaStreamDestroy(side_stream_);
      cudaEventDestroy(side_fork_);
      cudaEventDestroy(side_join_);
    }
    if (graph_host_) cudaFreeHost(graph_host_);
    if (graph_copied_) cudaEventDestroy(graph_copied_);
    for (int i = 0; i < 2; ++i) {
      if (staging_[i]) cudaFreeHost(staging_[i]);
      if (staging_event_[i]) cudaEventDestroy(staging_event_[i]);
    }
  }

  std::string name() const override { return "cuda"; }
  Device device() const override { return Device::kCUDA; }
  DType activation_dtype() const override { return act_; }

  // While a graph records, memory comes from the graph-private pool (see capture_graph).
  Tensor alloc(Shape shape, DType dtype) {
    const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    DevicePool& pool = recording_ != nullptr ? *graph_pool_ : *ctx_.pool;
    return Tensor::adopt(pool.allocate(bytes == 0 ? 1 : bytes), std::move(shape), dtype,
                         Device::kCUDA);
  }

  // Host f32 -> device (bf16 for rank >= 2), through copy_from_host.
  Tensor upload(const Tensor& host) override {
    BF_CHECK(host.defined() && host.device() == Device::kCPU && host.dtype() == DType::kF32,
             "upload: expected a host F32 tensor");
    Tensor t = alloc(host.shape(), weight_dtype(host.shape()));
    copy_from_host(t, host.raw(), DType::kF32);
    return t;
  }
  // Host elements (f32, bf16 or f16; a mapped checkpoint file) -> a device tensor: chunks are
  // read and converted by several host threads (in parallel: for a mapped file these are the
  // disk reads) into two pinned staging buffers that alternate, each chunk's copy to the
  // device overlapping the next chunk's reading.
  void copy_from_host(Tensor& dst, const void* src, DType src_dtype) override {
    dt_of(dst, "copy_from_host", "dst");
    const auto t0 = std::chrono::steady_clock::now();
    if (!staging_[0]) {
      for (int i = 0; i < 2; ++i) {
        BF_CUDA_CHECK(cudaHostAlloc(&staging_[i], kStagingBytes, cudaHostAllocDefault));
        BF_CUDA_CHECK(cudaEventCreateWithFlags(&staging_event_[i], cudaEventDisableTiming));
        BF_CUDA_CHECK(cudaEventRecord(staging_event_[i], ctx_.stream));
      }
    }
    const DType dtype = dst.dtype();
    const size_t esize = dtype_size(dtype), src_esize = dtype_size(src_dtype);
    const int64_t n = dst.numel();
    const int64_t chunk = static_cast<int64_t>(kStagingBytes / esize);
    const auto* in = static_cast<const uint8_t*>(src);
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t count = std::min(chunk, n - begin);
      const int buf = staging_next_;
      staging_next_ ^= 1;
      BF_CUDA_CHECK(cudaEventSynchronize(staging_event_[buf]));  // its last copy is done
      convert_parallel(in + begin * src_esize, src_dtype, count, dtype, staging_[buf]);
      BF_CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(dst.raw()) + begin * esize,
                                    staging_[buf], count * esize, cudaMemcpyHostToDevice,
                                    ctx_.stream));
      BF_CUDA_CHECK(cudaEventRecord(staging_event_[buf], ctx_.stream));
    }
    uploaded_bytes_ += dst.size_bytes();
    upload_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++uploaded_tensors_;
  }
  void convert_parallel(const uint8_t* src, DType src_dtype, int64_t count, DType dtype,
                        void* dst) {
    const int threads = count < (1 << 20) ? 1 : std::min(8u, std::max(1u, std::thread::hardware_concurrency()));
    const size_t src_esize = dtype_size(src_dtype), esize = dtype_size(dtype);
    auto work = [&](int64_t b, int64_t e) {
      convert_elements(src + b * src_esize, src_dtype, static_cast<uint8_t*>(dst) + b * esize,
                       dtype, e - b);
    };
    if (threads == 1) {
      work(0, count);
      return;
    }
    std::vector<std::thread> pool;
    const int64_t per = (count + threads - 1) / threads;
    for (int i = 0; i < threads; ++i)
      pool.emplace_back(work, std::min(count, i * per), std::min(count, (i + 1) * per));
    for (auto& th : pool) th.join();
  }
  // Logged once, at the first op after loading.
  void report_uploads() {
    if (upload_reported_ || uploaded_tensors_ == 0) return;
    upload_reported_ = true;
    BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    log_info("cuda: uploaded ", uploaded_tensors_, " tensors, ", uploaded_bytes_ / 1e9,
             " GB on the device in ", upload_seconds_, " s of upload time (",
             uploaded_bytes_ / 1e9 / std::max(upload_seconds_, 1e-9),
             " GB/s: read and converted on host threads, pinned double-buffered copies)");
  }
  Tensor empty(Shape shape, DType dtype) override { return alloc(std::move(shape), dtype); }
  size_t peak_memory_bytes() const override { return ctx_.pool->peak(); }
  void reset_peak_memory() override { ctx_.pool->reset_peak(); }
  void release_cached_memory() override { ctx_.pool->release_cached(); }
  // --load-format dummy: generated on the device, the host default's values (then stored as
  // upload() would store them: f32 vectors, bf16 matrices).
  Tensor random_weight(const Shape& shape, float scale, uint64_t seed) override {
    Tensor t = alloc(shape, shape.size() <= 1 ? DType::kF32 : act_);
    launch_fill_uniform(t.raw(), dt_of(t, "random_weight", "tensor"), t.numel(), scale, seed,
                        ctx_.stream);
    return t;
  }
  Tensor zeros(Shape shape, DType dtype) override {
    Tensor t = alloc(std::move(shape), dtype);
    BF_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.size_bytes(), ctx_.stream));
    return t;
  }
  Tensor to_host(const Tensor& t) override {
    const int dt = dt_of(t, "to_host", "tensor");
    Tensor host = Tensor::empty(t.shape());
    if (dt == kDtF32) {
      BF_CUDA_CHECK(cudaMemcpyAsync(host.raw(), t.raw(), t.size_bytes(), cudaMemcpyDeviceToHost,
                                    ctx_.stream));
      BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    } else {
      std::vector<uint16_t> staged(t.numel());
      BF_CUDA_CHECK(cudaMemcpyAsync(staged.data(), t.raw(), t.size_bytes(),
                                    cudaMemcpyDeviceToHost, ctx_.stream));
      BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
      float* dst = host.f32();
      for (int64_t i = 0; i < t.numel(); ++i) dst[i] = bf16_to_f32(staged[i]);
    }
    return host;
  }

  Tensor upload_i32(const std::vector<int32_t>& values) {
    Tensor t = alloc({static_cast<int64_t>(values.size())}, DType::kI32);
    if (recording_ != nullptr && !values.empty()) {  // a constant of the graph
      CudaGraph& g = *recording_;
      const size_t bytes = values.size() * 4, need = (bytes + 255) / 256 * 256;
      BF_CHECK(g.constants_used + need <= g.constants_size, "graph capture: more than ",
               g.constants_size, " bytes of constant uploads");
      uint8_t* src = g.constants + g.constants_used;
      g.constants_used += need;
      std::memcpy(src, values.data(), bytes);
      BF_CUDA_CHECK(cudaMemcpyAsync(t.raw(), src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
      return t;
    }
    ctx_.upload_async(t.raw(), values.data(), values.size() * 4);
    return t;
  }

  // Greedy ids without copying the logits (kernels_argmax.cu); only the ids come back.
  std::vector<int32_t> argmax_rows(const Tensor& x) override {
    const int dt = dt_of(x, "argmax_rows", "x");
    BF_CHECK(x.rank() == 2, "argmax_rows: x must be [rows, n], got ", shape_string(x.shape()));
    const int64_t rows = x.dim(0), n = x.dim(1);
    std::vector<int32_t> ids(rows);
    if (rows == 0) return ids;
    Tensor d = alloc({rows}, DType::kI32);
    launch_argmax_rows(x.raw(), dt, rows, n, d.i32(), ctx_.stream);
    BF_CUDA_CHECK(cudaMemcpyAsync(ids.data(), d.raw(), rows * 4, cudaMemcpyDeviceToHost,
                                  ctx_.stream));
    BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    for (int64_t r = 0; r < rows; ++r)
      BF_CHECK(ids[r] >= 0, "argmax_rows: row ", r, " has no number");
    return ids;
  }

  // Sampling without copying the logits (kernels_sample.cu); one result per row comes back.
  std::vector<SampleResult> sample_rows(const Tensor& logits,
                                        const std::vector<RowSampling>& rows) override {
    const int dt = dt_of(logits, "sample_rows", "logits");
    BF_CHECK(logits.rank() == 2 && logits.dim(0) == static_cast<int64_t>(rows.size()),
             "sample_rows: logits ", shape_string(logits.shape()), " must be [", rows.size(),
             ", vocab]");
    const int64_t R = logits.dim(0), vocab = logits.dim(1);
    std::vector<SampleResult> out;
    if (R == 0) return out;
    std::vector<SampleRowParams> params(R);
    for (int64_t r = 0; r < R; ++r) {
      const RowSampling& row = rows[r];
      BF_CHECK(row.num_logprobs >= 0 && row.num_logprobs <= kSampleMaxTop,
               "sample_rows: row ", r, " asks for ", row.num_logprobs, " logprobs (at most ",
               kSampleMaxTop, ")");
      const bool greedy = sampling_params_of(row).greedy();
      params[r] = SampleRowParams{.inv_temperature = greedy ? 0.0f : 1.0f / row.temperature,
                                  .min_p = row.min_p,
                                  .top_p = row.top_p,
                                  .top_k = row.top_k,
                                  .greedy = greedy ? 1 : 0,
                                  .num_top = row.num_logprobs,
                                  .seed = row.seed,
                                  .position = row.position};
    }
    std::shared_ptr<void> d_params = ctx_.pool->allocate(R * sizeof(SampleRowParams));
    std::shared_ptr<void> d_results = ctx_.pool->allocate(R * sizeof(SampleRowResult));
    ctx_.upload_async(d_params.get(), params.data(), R * sizeof(SampleRowParams));
    launch_sample_rows(logits.raw(), dt, R, vocab,
                       static_cast<const SampleRowParams*>(d_params.get()),
                       static_cast<SampleRowResult*>(d_results.get()), ctx_.stream);
    std::vector<SampleRowResult> results(R);
    BF_CUDA_CHECK(cudaMemcpyAsync(results.data(), d_results.get(), R * sizeof(SampleRowResult),
                                  cudaMemcpyDeviceToHost, ctx_.stream));
    BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    out.reserve(R);
    for (int64_t r = 0; r < R; ++r) {
      const SampleRowResult& res = results[r];
      BF_CHECK(res.token >= 0, "sample_rows: row ", r,
               ": no token can be sampled (every logit is -inf or NaN)");
      SampleResult sample{.token = res.token,
                          .logprob = static_cast<float>(res.token_logit - res.log_sum_exp),
                          .rank = res.rank,
                          .top_logprobs = {}};
      // The kernel returns the top-N unordered; order as logprobs.h top_logprobs does.
      for (int i = 0; i < res.num_top; ++i)
        sample.top_logprobs.push_back({res.top_ids[i], res.top_logits[i]});
      std::sort(sample.top_logprobs.begin(), sample.top_logprobs.end(),
                [](const TokenLogprob& a, const TokenLogprob& b) {
                  return a.logprob != b.logprob ? a.logprob > b.logprob : a.id < b.id;
                });
      for (TokenLogprob& entry : sample.top_logprobs)
        entry.logprob = static_cast<float>(entry.logprob - res.log_sum_exp);
      out.push_back(std::move(sample));
    }
    return out;
  }

  // --- dense ---
  void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out) override {
    report_uploads();
    const int tdt = dt_of(table, "embedding", "table"), odt = dt_of(out, "embedding", "out");
    BF_CHECK(table.rank() == 2, "embedding: table must be [vocab, hidden], got ",
             shape_string(table.shape()));
    const int64_t vocab = table.dim(0), hidden = table.dim(1);
    BF_CHECK(out.rank() == 2 && out.dim(0) == static_cast<int64_t>(ids.size()) &&
                 out.dim(1) == hidden,
             "embedding: out has shape ", shape_string(out.shape()), ", expected [", ids.size(),
             ", ", hidden, "]");
    for (size_t t = 0; t < ids.size(); ++t)
      BF_CHECK(ids[t] >= 0 && ids[t] < vocab, "embedding: token id ", ids[t], " at row ", t,
               " out of range [0, ", vocab, ")");
    // A graph's token ids come from its metadata buffer; other ids (the logits rows) are
    // constants of the batch shape.
    Tensor d_ids;
    const int32_t* dev_ids = nullptr;
    if (graph_batch_ != nullptr && ids.data() == graph_batch_->token_ids.data()) {
      dev_ids = graph_token_ids_;
    } else {
      d_ids = upload_i32(ids);
      dev_ids = d_ids.i32();
    }
    launch_embedding(dev_ids, static_cast<int64_t>(ids.size()), table.raw(), tdt, vocab, hidden,
                     out.raw(), odt, ctx_.stream);
  }

  const MatmulPlan* plan(int64_t m, int64_t n, int64_t k, cudaDataType_t in_type,
                         cudaDataType_t out_type, int align_a, int align_b, int align_c) {
    auto key = std::make_tuple(m, n, k, static_cast<int>(out_type) * 64 + static_cast<int>(in_type),
                               align_a, align_b, align_c);
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second.desc ? &it->second : nullptr;
    MatmulPlan p;
    BF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    BF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    BF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    // Column-major view: C[n_out, tokens] = W[k, n_out]ᵀ · X[k, tokens].
    BF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_type, k, n, k));
    BF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_type, k, m, k));
    BF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, out_type, n, m, n));
    cublasLtMatmulPreference_t pref;
    BF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    BF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ctx_.workspace_size, sizeof(size_t)));
    uint32_t aa = align_a, ab = align_b, ac = align_c;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, 4);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, 4);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx_.lt, p.desc, p.a, p.b, p.c, p.c,
                                                             pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {  // the SIMT kernel takes this shape
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.desc);
      plans_.emplace(key, MatmulPlan{});
      return nullptr;
    }
    p.algo = result.algo;
    return &plans_.emplace(key, p).first->second;
  }

  void gemm(const Tensor& x, const Tensor& w, Tensor& out) {
    const int xdt = dt_of(x, "matmul", "x");
    const int wdt = dt_of(w, "matmul", "w");
    const int odt = dt_of(out, "matmul", "out");
    BF_CHECK(x.rank() == 2 && w.rank() == 2 && x.dim(1) == w.dim(1), "matmul: x ",
             shape_string(x.shape()), " and w ", shape_string(w.shape()), " do not match");
    const int64_t m = x.dim(0), n = w.dim(0), k = x.dim(1);
    BF_CHECK(out.rank() == 2 && out.dim(0) == m && out.dim(1) == n, "matmul: out has shape ",
             shape_string(out.shape()), ", expected [", m, ", ", n, "]");
    BF_CHECK(out.raw() != x.raw(), "matmul: out must not alias x");
    if (m == 0 || n == 0) return;
    // cuBLASLt for same-type inputs and outputs at least 8 wide; the SIMT kernel otherwise
    // (the MoE shared-expert gate is [T, 1]) or where cuBLASLt has no algorithm.
    const MatmulPlan* p = nullptr;
    if (xdt == wdt && n >= 8 && k >= 8)
      p = plan(m, n, k, xdt == kDtF32 ? CUDA_R_32F : CUDA_R_16BF,
               odt == kDtF32 ? CUDA_R_32F : CUDA_R_16BF, alignment_of(w.raw()),
               alignment_of(x.raw()), alignment_of(out.raw()));
    if (p == nullptr) {
      // Under 8 outputs (the shared-expert gate): the gemv with the most column slices that
      // fit, where it applies (one warp per slice instead of one block per row).
      if (xdt == kDtBF16 && wdt == kDtBF16 &&
          gemv_supported(m, k, x.raw(), w.raw(), static_cast<int>(ctx_.caps.smem_per_block))) {
        // Chosen once per shape (these shapes never reach the timed choice below).
        const auto key = std::make_tuple(m, n, k, odt);
        auto it = gemv_choice_.find(key);
        if (it == gemv_choice_.end()) {
          int config = 0;
          for (int c = 0; c < gemv_num_configs(); ++c)
            if (gemv_config_useful(c, n, k) && !gemv_config_deep(c) &&
                gemv_config_splits(c) > gemv_config_splits(config) && gemv_config_rows(c) == 1)
              config = c;
          it = gemv_choice_.emplace(key, config).first;
        }
        launch_gemv(x.raw(), w.raw(), out.raw(), odt, m, n, k, it->second, ctx_.stream);
        return;
      }
      launch_matmul_simt(x.raw(), xdt, w.raw(), wdt, out.raw(), odt, m, n, k, ctx_.stream);
      return;
    }
    auto run_lt = [&] {
      const float alpha = 1.0f, beta = 0.0f;
      BF_CUBLAS_CHECK(cublasLtMatmul(ctx_.lt, p->desc, &alpha, w.raw(), p->a, x.raw(), p->b, &beta,
                                     out.raw(), p->c, out.raw(), p->c, &p->algo, ctx_.workspace,
                                     ctx_.workspace_size, ctx_.stream));
    };
    // Decode- and verify-sized GEMMs: the gemv (m <= 8) or the tensor-core skinny kernel
    // (m <= 32, Hopper) where one beats cuBLASLt, timed once per shape. The choice: a gemv
    // configuration (>= 0), cuBLASLt (-1) or skinny configuration c (-2 - c).
    const bool gemv_ok =
        xdt == kDtBF16 && wdt == kDtBF16 &&
        gemv_supported(m, k, x.raw(), w.raw(), static_cast<int>(ctx_.caps.smem_per_block));
    // The skinny kernel only above the gemv's rows: at 1-8 rows the gemv's timed choice
    // stays as it was (the batch-1 decode step).
    const bool skinny_ok = skinny_mode_ >= 0 && ctx_.caps.wgmma && xdt == kDtBF16 &&
                           wdt == kDtBF16 && (!gemv_ok || skinny_mode_ > 0) &&
                           skinny_wgmma_supported(m, n, k, x.raw(), w.raw());
    if (gemv_ok || skinny_ok) {
      const auto key = std::make_tuple(m, n, k, odt);
      auto it = gemv_choice_.find(key);
      BF_CHECK(it != gemv_choice_.end() || recording_ == nullptr, "matmul [", m, ", ", k,
               "]: first seen while recording a graph (the eager run should have timed it)");
      if (it == gemv_choice_.end())
        it = gemv_choice_.emplace(key, choose_skinny(x, w, out, gemv_ok, skinny_ok, run_lt)).first;
      if (it->second >= 0) {
        launch_gemv(x.raw(), w.raw(), out.raw(), odt, m, n, k, it->second, ctx_.stream);
        return;
      }
      if (it->second <= -2) {
        run_skinny(x, w, out, -2 - it->second);
        return;
      }
    }
    run_lt();
  }
  void run_skinny(const Tensor& x, const Tensor& w, Tensor& out, int config) {
    launch_skinny_wgmma(x.raw(), w.raw(), out.raw(), dt_of(out, "matmul", "out"), x.dim(0),
                        w.dim(0), x.dim(1), config, ctx_.skinny_workspace, ctx_.skinny_counters,
                        ctx_.stream);
  }
  // The fastest of the gemv's useful configurations (m <= 8), the skinny kernel's (m <= 32 on
  // Hopper) and cuBLASLt, each timed on this shape; BLOCKFLASH_GEMV / BLOCKFLASH_GEMV_CONFIG
  // and BLOCKFLASH_SKINNY / BLOCKFLASH_SKINNY_CONFIG pin the choice (tests, A/B runs).
  template <typename RunLt>
  int choose_skinny(const Tensor& x, const Tensor& w, Tensor& out, bool gemv_ok, bool skinny_ok,
                    RunLt& run_lt) {
    const int64_t m = x.dim(0), n = w.dim(0), k = x.dim(1);
    const int odt = dt_of(out, "matmul", "out");
    auto run_gemv = [&](int config) {
      launch_gemv(x.raw(), w.raw(), out.raw(), odt, m, n, k, config, ctx_.stream);
    };
    auto skinny_useful = [&](int c) {
      return skinny_wgmma_config_useful(c, m, n, k, ctx_.skinny_workspace_size,
                                        ctx_.skinny_counter_count);
    };
    if (skinny_ok && skinny_mode_ > 0) {  // pinned on
      const int c = skinny_useful(skinny_config_) ? skinny_config_ : 0;
      return -2 - c;
    }
    int choice = -1;
    float t_choice = -1.0f;
    if (gemv_ok) {
      // The gemv configuration: pinned (BLOCKFLASH_GEMV_CONFIG) or the fastest useful one;
      // then gemv against cuBLASLt unless BLOCKFLASH_GEMV pins that too.
      const bool pinned = gemv_config_ >= 0 && gemv_config_ < gemv_num_configs();
      int best = -1;
      float t_best = 0;
      if (!pinned && gemv_mode_ >= 0) {
        for (int c = 0; c < gemv_num_configs(); ++c) {
          if (!gemv_config_useful(c, n, k) || (!gemv_deep_ && gemv_config_deep(c))) continue;
          const float t = time_ms([&] { run_gemv(c); });
          if (best < 0 || t < t_best) best = c, t_best = t;
        }
      }
      if (best < 0) {
        best = pinned ? gemv_config_ : 0;
        if (gemv_mode_ == 0) t_best = time_ms([&] { run_gemv(best); });
      }
      if (gemv_mode_ > 0) return best;
      if (gemv_mode_ == 0) choice = best, t_choice = t_best;
    }
    // Against the skinny kernel both are timed with w cold (see time_ms).
    const float t_lt = time_ms(run_lt, /*cold=*/skinny_ok);
    if (choice < 0 || t_lt <= t_choice) choice = -1, t_choice = t_lt;
    if (skinny_ok) {
      for (int c = 0; c < skinny_wgmma_num_configs(); ++c) {
        if (!skinny_useful(c)) continue;
        const float t = time_ms([&] { run_skinny(x, w, out, c); }, /*cold=*/true);
        if (t < t_choice) choice = -2 - c, t_choice = t;
      }
    }
    log_debug("matmul [", m, ", ", k, "] x [", n, ", ", k, "]^T: cuBLASLt ", t_lt * 1e3,
              " us; fastest: ",
              choice >= 0 ? "gemv" : choice == -1 ? "cuBLASLt" : "skinny wgmma",
              " (", choice >= 0 ? choice : choice == -1 ? 0 : -2 - choice, ") ", t_choice * 1e3,
              " us");
    return choice;
  }
  void matmul(const Tensor& x, const Tensor& w, Tensor& out) override { gemm(x, w, out); }
  // Decode-sized: the gemv reads gate|up and applies silu(gate) ⊙ up itself, with the
  // configuration chosen for the plain product's shape (the first call of a shape runs the
  // two ops, which times it; graphs record after such an eager pass).
  void swiglu_matmul(const Tensor& gate_up, const Tensor& w, Tensor& out) override {
    const int gdt = dt_of(gate_up, "swiglu_matmul", "gate_up"), wdt = dt_of(w, "swiglu_matmul", "w");
    const int odt = dt_of(out, "swiglu_matmul", "out");
    BF_CHECK(gate_up.rank() == 2 && w.rank() == 2 && gate_up.dim(1) == 2 * w.dim(1) &&
                 out.rank() == 2 && out.dim(0) == gate_up.dim(0) && out.dim(1) == w.dim(0),
             "swiglu_matmul: gate_up ", shape_string(gate_up.shape()), ", w ",
             shape_string(w.shape()), " and out ", shape_string(out.shape()), " do not match");
    const int64_t m = gate_up.dim(0), n = w.dim(0), k = w.dim(1);
    if (gemv_gated_ && gdt == kDtBF16 && wdt == kDtBF16 && m > 0 &&
        gemv_supported(m, k, gate_up.raw(), w.raw(), static_cast<int>(ctx_.caps.smem_per_block))) {
      auto it = gemv_choice_.find(std::make_tuple(m, n, k, odt));
      if (it != gemv_choice_.end() && it->second >= 0) {
        launch_gemv(gate_up.raw(), w.raw(), out.raw(), odt, m, n, k, it->second, ctx_.stream,
                    /*gated=*/true);
        return;
      }
    }
    Backend::swiglu_matmul(gate_up, w, out);
  }

  // Median of 5 timed runs (after one warm-up), in ms, with events on the stream.
  // cold: before each timed run, 64 MB of scratch is pulled into L2, so the weights come from
  // DRAM as in a forward pass (a repeated launch finds a matrix of up to ~50 MB in L2, which
  // favours kernels with few bytes in flight).
  float time_ms(const std::function<void()>& fn, bool cold = false) {
    cudaEvent_t e0, e1;
    BF_CUDA_CHECK(cudaEventCreate(&e0));
    BF_CUDA_CHECK(cudaEventCreate(&e1));
    fn();
    std::vector<float> times;
    for (int i = 0; i < 5; ++i) {
      if (cold) evict_l2();
      BF_CUDA_CHECK(cudaEventRecord(e0, ctx_.stream));
      fn();
      BF_CUDA_CHECK(cudaEventRecord(e1, ctx_.stream));
      BF_CUDA_CHECK(cudaEventSynchronize(e1));
      float t = 0;
      BF_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
      times.push_back(t);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    std::sort(times.begin(), times.end());
    return times[2];
  }

  void evict_l2() {
    // Taken at the first cold timing (after the KV cache is sized); where the device has no
    // 64 MB left, the timing runs warm rather than failing the forward pass.
    constexpr int64_t kBytes = int64_t{64} << 20;
    static void* scratch = [] {
      void* p = nullptr;
      if (cudaMalloc(&p, kBytes) != cudaSuccess) {
        (void)cudaGetLastError();
        log_warn("cuda: no 64 MB for the L2 eviction of GEMM timings; timing with warm L2");
        return static_cast<void*>(nullptr);
      }
      return p;
    }();
    if (scratch == nullptr) return;
    L2PrefetchRanges r{};
    r.ptr[0] = scratch;
    r.bytes[0] = kBytes;
    r.count = 1;
    launch_l2_prefetch(r, ctx_.stream);
  }

  void check_norm(const Tensor& x, const Tensor& w, const Tensor& out, const char* op) {
    dt_of(x, op, "x");
    dt_of(w, op, "w");
    dt_of(out, op, "out");
    BF_CHECK(w.rank() == 1 && w.numel() > 0 && x.numel() % w.numel() == 0, op, ": x ",
             shape_string(x.shape()), " is not rows of w ", shape_string(w.shape()));
    check_numel(out, x.numel(), op, "out");
  }
  void rms_norm(const Tensor& x, const Tensor& w, float eps, bool one_centered,
                Tensor& out) override {
    check_norm(x, w, out, "rms_norm");
    const int64_t dim = w.numel();
    launch_rms_norm(x.raw(), dt_of(x, "", ""), nullptr, 0, w.raw(), dt_of(w, "", ""),
                    x.numel() / dim, dim, eps, one_centered, out.raw(), dt_of(out, "", ""),
                    ctx_.stream);
  }
  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                    bool one_centered, Tensor& out) override {
    check_norm(x, w, out, "add_rms_norm");
    check_numel(residual, x.numel(), "add_rms_norm", "residual");
    const int64_t dim = w.numel();
    launch_rms_norm(x.raw(), dt_of(x, "", ""), residual.raw(), dt_of(residual, "add_rms_norm", "residual"),
                    w.raw(), dt_of(w, "", ""), x.numel() / dim, dim, eps, one_centered, out.raw(),
                    dt_of(out, "", ""), ctx_.stream);
  }
  void binary(int op, const Tensor& a, const Tensor& b, Tensor& out, const char* name) {
    const int adt = dt_of(a, name, "a"), bdt = dt_of(b, name, "b"), odt = dt_of(out, name, "out");
    check_numel(b, a.numel(), name, "b");
    check_numel(out, a.numel(), name, "out");
    launch_binary(op, a.raw(), adt, b.raw(), bdt, out.raw(), odt, a.numel(), ctx_.stream);
  }
  void add(Tensor& a, const Tensor& b) override { binary(2, a, b, a, "add"); }
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    binary(0, gate, up, out, "silu_mul");
  }
  void sigmoid_mul(Tensor& x, const Tensor& gate) override { binary(1, x, gate, x, "sigmoid_mul"); }
  void silu_mul_packed(const Tensor& gate_up, Tensor& out) override {
    const int gdt = dt_of(gate_up, "silu_mul_packed", "gate_up");
    const int odt = dt_of(out, "silu_mul_packed", "out");
    BF_CHECK(gate_up.rank() == 2 && out.rank() == 2 && gate_up.dim(0) == out.dim(0) &&
                 gate_up.dim(1) == 2 * out.dim(1),
             "silu_mul_packed: gate_up ", shape_string(gate_up.shape()), " is not [T, 2n] for out ",
             shape_string(out.shape()));
    launch_swiglu_packed(gate_up.raw(), gdt, out.dim(0), out.dim(1), out.raw(), odt, ctx_.stream);
  }
  void gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, float eps,
                      Tensor& out) override {
    check_norm(o, w, out, "gated_rms_norm");
    check_numel(z, o.numel(), "gated_rms_norm", "z");
    const int64_t dim = w.numel();
    launch_gated_rms_norm(o.raw(), dt_of(o, "", ""), z.raw(), dt_of(z, "", ""), w.raw(),
                          dt_of(w, "", ""), o.numel() / dim, dim, eps, out.raw(),
                          dt_of(out, "", ""), ctx_.stream);
  }
  void rope(Tensor& x, const std::vector<int32_t>& positions, int32_t rotary_dim,
            float theta) override {
    const int dt = dt_of(x, "rope", "x");
    BF_CHECK(x.rank() == 3, "rope: x must be [T, heads, head_dim], got ", shape_string(x.shape()));
    BF_CHECK(static_cast<int64_t>(positions.size()) == x.dim(0), "rope: ", positions.size(),
             " positions for ", x.dim(0), " tokens");
    BF_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= x.dim(2), "rope: rotary_dim ",
             rotary_dim, " must be even and in (0, head_dim=", x.dim(2), "]");
    // The model passes batch.positions: reuse the uploaded batch's copy when it is that.
    const int32_t* d_positions = nullptr;
    Tensor d_pos;
    if (graph_batch_ != nullptr) {
      BF_CHECK(positions.data() == graph_batch_->positions.data(),
               "rope: a graph's positions must be its batch's");
      d_positions = graph_dev_.positions;
    } else if (cached_batch_ != nullptr && positions.data() == cached_positions_ &&
        static_cast<int64_t>(positions.size()) == cached_tokens_ &&
        fnv(1469598103934665603ull, positions.data(), positions.size()) == cached_pos_hash_) {
      d_positions = cached_dev_.positions;
    } else {
      d_pos = upload_i32(positions);
      d_positions = d_pos.i32();
    }
    launch_rope(x.raw(), dt, d_positions, x.dim(0), x.dim(1), x.dim(2), rotary_dim, theta,
                ctx_.stream);
  }
  void slice_columns(const Tensor& x, int64_t begin, Tensor& out) override {
    const int xdt = dt_of(x, "slice_columns", "x"), odt = dt_of(out, "slice_columns", "out");
    BF_CHECK(x.rank() == 2 && out.rank() == 2 && x.dim(0) == out.dim(0) && begin >= 0 &&
                 begin + out.dim(1) <= x.dim(1),
             "slice_columns: cannot take ", shape_string(out.shape()), " at column ", begin,
             " of ", shape_string(x.shape()));
    launch_slice_columns(x.raw(), xdt, x.dim(0), x.dim(1), begin, out.dim(1), out.raw(), odt,
                         ctx_.stream);
  }
  void split_columns(const Tensor& x, std::vector<Tensor>& parts) override {
    if (parts.size() > static_cast<size_t>(kMaxColumnParts)) return Backend::split_columns(x, parts);
    const int xdt = dt_of(x, "split_columns", "x");
    BF_CHECK(x.rank() == 2, "split_columns: x must be [rows, cols], got ", shape_string(x.shape()));
    ColumnParts cp;
    int odt = -1;
    for (Tensor& part : parts) {
      const int pdt = dt_of(part, "split_columns", "part");
      const int64_t begin = cp.begin[cp.count];
      BF_CHECK(part.rank() == 2 && part.dim(0) == x.dim(0) && begin + part.dim(1) <= x.dim(1) &&
                   (odt < 0 || pdt == odt),
               "split_columns: cannot take ", shape_string(part.shape()), " at column ", begin,
               " of ", shape_string(x.shape()), odt >= 0 && pdt != odt ? " (mixed dtypes)" : "");
      odt = pdt;
      cp.out[cp.count] = part.raw();
      cp.begin[cp.count + 1] = begin + part.dim(1);
      ++cp.count;
    }
    launch_split_columns(x.raw(), xdt, x.dim(0), x.dim(1), cp, odt, ctx_.stream);
  }
  void sigmoid_scale_rows(Tensor& x, const Tensor& gate) override {
    const int xdt = dt_of(x, "sigmoid_scale_rows", "x");
    const int gdt = dt_of(gate, "sigmoid_scale_rows", "gate");
    BF_CHECK(x.rank() == 2 && gate.numel() == x.dim(0), "sigmoid_scale_rows: gate ",
             shape_string(gate.shape()), " does not match rows of ", shape_string(x.shape()));
    launch_sigmoid_scale_rows(x.raw(), xdt, x.dim(0), x.dim(1), gate.raw(), gdt, ctx_.stream);
  }

  // --- batch metadata ---
  const DeviceBatch& device_batch(const ForwardBatch& batch, int64_t num_tokens, const char* op) {
    if (graph_batch_ != nullptr) {
      BF_CHECK(&batch == graph_batch_ && num_tokens == graph_dev_.num_tokens, op,
               ": a graph runs only the batch it records");
      return graph_dev_;
    }
    BF_CHECK(static_cast<int64_t>(batch.positions.size()) >= num_tokens ||
                 batch.positions.empty(),
             op, ": batch has ", batch.positions.size(), " positions for ", num_tokens, " rows");
    const uint64_t h = hash_batch(batch);
    if (cached_batch_ == &batch && cached_hash_ == h && cached_tokens_ == num_tokens)
      return cached_dev_;  // validated when it was uploaded
    check_batch_sequences(batch, num_tokens, op);
    const int64_t T = num_tokens, S = static_cast<int64_t>(batch.seqs.size());
    std::vector<int32_t> host(3 * T, -1);
    for (int64_t t = 0; t < T && t < static_cast<int64_t>(batch.positions.size()); ++t)
      host[t] = batch.positions[t];
    for (int64_t t = 0; t < T && t < static_cast<int64_t>(batch.slot_mapping.size()); ++t)
      host[T + t] = batch.slot_mapping[t];
    const size_t seq_off = host.size();
    host.resize(seq_off + S * 8);
    int32_t table_total = 0, snap_total = 0, max_q = 0, max_kv = 0;
    bool any_snap = false;
    for (int64_t s = 0; s < S; ++s) {
      const BatchSequence& seq = batch.seqs[s];
      for (int32_t i = 0; i < seq.query_len; ++i) host[2 * T + seq.query_start + i] = s;
      SeqInfo info{seq.query_start, seq.query_len, seq.num_computed, seq.state_slot, table_total,
                   static_cast<int32_t>(seq.block_table.size()),
                   seq.snapshot_slots.empty() ? -1 : snap_total, 0};
      std::memcpy(&host[seq_off + s * 8], &info, sizeof(info));
      table_total += static_cast<int32_t>(seq.block_table.size());
      snap_total += static_cast<int32_t>(seq.snapshot_slots.size());
      any_snap |= !seq.snapshot_slots.empty();
      max_q = std::max(max_q, seq.query_len);
      max_kv = std::max(max_kv, seq.kv_len());
    }
    const size_t table_off = host.size();
    for (const BatchSequence& seq : batch.seqs)
      host.insert(host.end(), seq.block_table.begin(), seq.block_table.end());
    const size_t snap_off = host.size();
    for (const BatchSequence& seq : batch.seqs)
      host.insert(host.end(), seq.snapshot_slots.begin(), seq.snapshot_slots.end());
    cached_buffer_ = upload_i32(host);
    const int32_t* base = cached_buffer_.i32();
    DeviceBatch d;
    d.positions = base;
    d.slot_mapping = base + T;
    d.token_seq = base + 2 * T;
    d.seqs = reinterpret_cast<const SeqInfo*>(base + seq_off);
    d.block_tables = base + table_off;
    d.snapshots = base + snap_off;
    d.num_tokens = static_cast<int32_t>(T);
    d.num_seqs = static_cast<int32_t>(S);
    d.max_query_len = max_q;
    d.max_kv_len = max_kv;
    d.any_snapshots = any_snap;
    cached_batch_ = &batch;
    cached_positions_ = batch.positions.data();
    cached_pos_hash_ = fnv(1469598103934665603ull, batch.positions.data(), batch.positions.size());
    cached_hash_ = h;
    cached_tokens_ = num_tokens;
    cached_dev_ = d;
    return cached_dev_;
  }

  void check_slots(const ForwardBatch& batch, int64_t num_slots, const char* op) {
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const BatchSequence& seq = batch.seqs[s];
      BF_CHECK(seq.state_slot >= 0 && seq.state_slot < num_slots, op, ": sequence ", s,
               " has state slot ", seq.state_slot, ", the pool has ", num_slots, " slots");
      for (int32_t slot : seq.snapshot_slots)
        BF_CHECK(slot >= 0 && slot < num_slots, op, ": sequence ", s, " snapshot slot ", slot,
                 " out of range (", num_slots, " slots)");
    }
  }

  // --- Gated DeltaNet ---
  void causal_conv1d(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                     Tensor& conv_state, Tensor& out) override {
    const char* op = "causal_conv1d";
    const int wdt = dt_of(weight, op, "weight"), xdt = dt_of(x, op, "x"), odt = dt_of(out, op, "out");
    BF_CHECK(weight.rank() == 2, op, ": weight must be [conv_dim, kernel], got ",
             shape_string(weight.shape()));
    const int64_t conv_dim = weight.dim(0), kernel = weight.dim(1);
    BF_CHECK(x.rank() == 2 && x.dim(1) == conv_dim, op, ": x must be [T, conv_dim=", conv_dim,
             "], got ", shape_string(x.shape()));
    check_numel(out, x.numel(), op, "out");
    BF_CHECK(conv_state.dtype() == DType::kF32 && conv_state.device() == Device::kCUDA &&
                 conv_state.rank() == 3 && conv_state.dim(1) == conv_dim &&
                 conv_state.dim(2) == kernel - 1,
             op, ": conv_state must be CUDA F32 [num_slots, ", conv_dim, ", ", kernel - 1, "], got ",
             shape_string(conv_state.shape()));
    check_slots(batch, conv_state.dim(0), op);
    const DeviceBatch& d = device_batch(batch, x.dim(0), op);
    launch_causal_conv1d(x.raw(), xdt, weight.raw(), wdt, conv_dim, kernel, d, conv_state.f32(),
                         out.raw(), odt, ctx_.stream);
  }
  // Device counters that the kernels using them leave at zero (last-block patterns), made once
  // on an eager call: a graph's recording is preceded by one, and a recording cannot
  // allocate. False while recording before they exist (the caller takes its unfused path).
  bool zeroed_counters(Tensor& counters, int64_t n) {
    if (counters.defined()) return true;
    if (recording_ != nullptr) return false;
    counters = Tensor::adopt(ctx_.pool->allocate(n * 4), {n}, DType::kI32, Device::kCUDA);
    BF_CUDA_CHECK(cudaMemsetAsync(counters.raw(), 0, n * 4, ctx_.stream));
    return true;
  }
  // Single-token decodes (no verify snapshots) at dk = dv = 128: the fused kernel
  // (BLOCKFLASH_GDN_FUSED=0 keeps the four ops).
  Tensor gated_deltanet_decode(const Tensor& projected, const Tensor& conv_weight,
                               const Tensor& A_log, const Tensor& dt_bias,
                               const Tensor& norm_weight, float eps, const GdnDims& dims,
                               const ForwardBatch& batch, Tensor& conv_state,
                               Tensor& recurrent_state) override {
    const char* op = "gated_deltanet_decode";
    if (!gdn_fused_ || batch.seqs.empty() || conv_weight.rank() != 2 ||
        !gdn_decode_fused_supported(dims.k_head_dim, dims.v_head_dim, dims.num_k_heads,
                                    dims.num_v_heads, static_cast<int>(conv_weight.dim(1))))
      return Tensor();
    for (const BatchSequence& seq : batch.seqs)
      if (seq.query_len != 1 || !seq.snapshot_slots.empty()) return Tensor();
    if (!zeroed_counters(gdn_counters_, kGdnCounters) ||
        static_cast<int64_t>(batch.seqs.size()) * dims.num_k_heads > kGdnCounters)
      return Tensor();
    const int64_t T = projected.rank() == 2 ? projected.dim(0) : -1;
    const int64_t hk = dims.num_k_heads, hv = dims.num_v_heads;
    const int64_t key_dim = hk * dims.k_head_dim, value_dim = hv * dims.v_head_dim;
    const int64_t conv_dim = 2 * key_dim + value_dim, kernel = conv_weight.dim(1);
    BF_CHECK(T == static_cast<int64_t>(batch.seqs.size()) &&
                 projected.dim(1) == conv_dim + value_dim + 2 * hv,
             op, ": projected must be [T=", batch.seqs.size(), ", ", conv_dim + value_dim + 2 * hv,
             "], got ", shape_string(projected.shape()));
    BF_CHECK(conv_weight.dim(0) == conv_dim && A_log.numel() == hv && dt_bias.numel() == hv &&
                 norm_weight.numel() == dims.v_head_dim,
             op, ": weights do not match the dims");
    BF_CHECK(conv_state.dtype() == DType::kF32 && conv_state.rank() == 3 &&
                 conv_state.dim(1) == conv_dim && conv_state.dim(2) == kernel - 1,
             op, ": conv_state must be F32 [num_slots, ", conv_dim, ", ", kernel - 1, "], got ",
             shape_string(conv_state.shape()));
    BF_CHECK(recurrent_state.dtype() == DType::kF32 && recurrent_state.rank() == 4 &&
                 recurrent_state.dim(1) == hv && recurrent_state.dim(2) == dims.k_head_dim &&
                 recurrent_state.dim(3) == dims.v_head_dim,
             op, ": recurrent_state must be F32 [num_slots, Hv, dk, dv], got ",
             shape_string(recurrent_state.shape()));
    check_slots(batch, std::min(conv_state.dim(0), recurrent_state.dim(0)), op);
    Tensor out = alloc({T, value_dim}, act_);
    GdnDecodeArgs a{};
    a.projected = projected.raw();
    a.proj_dt = dt_of(projected, op, "projected");
    a.proj_cols = projected.dim(1);
    a.conv_weight = conv_weight.raw();
    a.conv_w_dt = dt_of(conv_weight, op, "conv_weight");
    a.kernel = static_cast<int>(kernel);
    a.A_log = A_log.raw();
    a.A_log_dt = dt_of(A_log, op, "A_log");
    a.dt_bias = dt_bias.raw();
    a.dt_bias_dt = dt_of(dt_bias, op, "dt_bias");
    a.norm_weight = norm_weight.raw();
    a.norm_dt = dt_of(norm_weight, op, "norm_weight");
    a.eps = eps;
    a.hk = static_cast<int>(hk);
    a.hv = static_cast<int>(hv);
    a.key_dim = key_dim;
    a.value_dim = value_dim;
    a.conv_dim = conv_dim;
    a.conv_state = conv_state.f32();
    a.recurrent_state = recurrent_state.f32();
    a.out = out.raw();
    a.out_dt = dt_of(out, op, "out");
    a.counters = static_cast<unsigned*>(gdn_counters_.raw());
    a.num_counters = kGdnCounters;
    a.split = gdn_decode_split_;
    a.num_sms = ctx_.caps.num_sms;
    launch_gdn_decode_fused(a, device_batch(batch, T, op), ctx_.stream);
    return out;
  }
  void gdn_gates(const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias,
                 Tensor& g, Tensor& beta) override {
    const char* op = "gdn_gates";
    const int64_t hv = A_log.numel();
    BF_CHECK(A_log.rank() == 1 && dt_bias.numel() == hv && a.rank() == 2 && a.dim(1) == hv, op,
             ": a must be [T, Hv=", hv, "], got ", shape_string(a.shape()));
    check_numel(b, a.numel(), op, "b");
    check_numel(g, a.numel(), op, "g");
    check_numel(beta, a.numel(), op, "beta");
    launch_gdn_gates(a.raw(), dt_of(a, op, "a"), b.raw(), dt_of(b, op, "b"), A_log.raw(),
                     dt_of(A_log, op, "A_log"), dt_bias.raw(), dt_of(dt_bias, op, "dt_bias"),
                     a.dim(0), hv, g.raw(), dt_of(g, op, "g"), beta.raw(), dt_of(beta, op, "beta"),
                     ctx_.stream);
  }
  void gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                        const Tensor& beta, const GdnDims& dims, const ForwardBatch& batch,
                        Tensor& state, Tensor& out) override {
    const char* op = "gated_delta_rule";
    BF_CHECK(dims.num_k_heads > 0 && dims.num_v_heads > 0 && dims.k_head_dim > 0 &&
                 dims.v_head_dim > 0 && dims.num_v_heads % dims.num_k_heads == 0,
             op, ": bad dims");
    const int64_t T = q.rank() >= 1 ? q.dim(0) : 0;
    check_numel(q, T * dims.num_k_heads * dims.k_head_dim, op, "q");
    check_numel(k, T * dims.num_k_heads * dims.k_head_dim, op, "k");
    check_numel(v, T * dims.num_v_heads * dims.v_head_dim, op, "v");
    check_numel(out, T * dims.num_v_heads * dims.v_head_dim, op, "out");
    check_numel(g, T * dims.num_v_heads, op, "g");
    check_numel(beta, T * dims.num_v_heads, op, "beta");
    BF_CHECK(state.dtype() == DType::kF32 && state.device() == Device::kCUDA && state.rank() == 4 &&
                 state.dim(1) == dims.num_v_heads && state.dim(2) == dims.k_head_dim &&
                 state.dim(3) == dims.v_head_dim,
             op, ": recurrent_state must be CUDA F32 [num_slots, Hv, dk, dv], got ",
             shape_string(state.shape()));
    check_slots(batch, state.dim(0), op);
    const KernelCaps& kernel = selector_.select(
        LayerNeeds{.family = KernelFamily::kGatedDeltaNet, .head_dim = dims.k_head_dim});
    const DeviceBatch& d = device_batch(batch, T, op);
    DeltaArgs a{q.raw(), k.raw(), v.raw(), g.raw(), beta.raw(), dt_of(q, op, "q"), dt_of(k, op, "k"),
                dt_of(v, op, "v"), dt_of(g, op, "g"), dt_of(beta, op, "beta"), dims.num_k_heads,
                dims.num_v_heads, dims.k_head_dim, dims.v_head_dim, state.f32(), out.raw(),
                dt_of(out, op, "out")};
    if (kernel.name != "gdn-chunked" || a.q_dt != a.k_dt) {
      launch_delta_rule_recurrent(a, d, ctx_.stream);
      return;
    }
    // Multi-token sequences without snapshots go to the chunked kernel, the rest (decode,
    // verify) to the recurrent one; each kernel skips the other's sequences.
    a.chunk_min_len = selector_.options().forced == "gdn-chunked" ? 2 : kDeltaChunkMinLen;
    bool any_chunked = false, any_recurrent = false;
    for (const BatchSequence& seq : batch.seqs) {
      const bool chunked = seq.snapshot_slots.empty() && seq.query_len >= a.chunk_min_len;
      any_chunked |= chunked;
      any_recurrent |= !chunked && seq.query_len > 0;
    }
    if (any_chunked) {
      Tensor scratch = alloc({delta_chunked_scratch_floats(T, a.hv)}, DType::kF32);
      launch_delta_rule_chunked(a, d, scratch.f32(), ctx_.stream);
    }
    if (any_recurrent) launch_delta_rule_recurrent(a, d, ctx_.stream);
  }

  // --- attention ---
  void check_cache(const KvCache& cache, const char* op) {
    dt_of(cache.k, op, "cache.k");
    BF_CHECK(cache.k.rank() == 4 && cache.v.shape() == cache.k.shape() &&
                 cache.v.dtype() == cache.k.dtype() && cache.v.device() == Device::kCUDA,
             op, ": cache K/V must be CUDA [num_blocks, block_size, Hkv, hd] of one dtype, got ",
             shape_string(cache.k.shape()));
  }
  void check_slot_mapping(const ForwardBatch& batch, const KvCache& cache, const char* op) {
    const int64_t num_slots = cache.k.dim(0) * cache.k.dim(1);
    for (size_t t = 0; t < batch.slot_mapping.size(); ++t) {
      const int64_t slot = batch.slot_mapping[t];
      BF_CHECK(slot == -1 || (slot >= 0 && slot < num_slots), op, ": token ", t, " maps to slot ",
               slot, ", the cache has ", num_slots, " slots");
    }
  }
  void kv_write(const Tensor& k, const Tensor& v, const ForwardBatch& batch,
                KvCache& cache) override {
    const char* op = "kv_write";
    check_cache(cache, op);
    const int64_t num_slots = cache.k.dim(0) * cache.k.dim(1);
    const int64_t row = cache.k.dim(2) * cache.k.dim(3);
    const int64_t T = static_cast<int64_t>(batch.slot_mapping.size());
    check_numel(k, T * row, op, "k [T, Hkv, hd]");
    check_numel(v, T * row, op, "v [T, Hkv, hd]");
    check_slot_mapping(batch, cache, op);
    const DeviceBatch& d = device_batch(batch, T, op);
    launch_kv_write(k.raw(), dt_of(k, op, "k"), v.raw(), dt_of(v, op, "v"), d, row, num_slots,
                    cache.k.raw(), cache.v.raw(), dt_of(cache.k, op, "cache.k"), ctx_.stream);
  }
  void prepare_attention_inputs(const Tensor& q_and_gate, const Tensor& k_raw, const Tensor& v,
                                const Tensor& q_norm, const Tensor& k_norm, float eps,
                                int32_t rotary_dim, float theta, const ForwardBatch& batch,
                                KvCache& cache, Tensor& q_out) override {
    AttentionPrepArgs a = prep_args(q_and_gate, k_raw, v, q_norm, k_norm, eps, rotary_dim, theta,
                                    batch, cache, q_out, "prepare_attention_inputs");
    a.q_out = q_out.raw();
    a.q_out_dt = dt_of(q_out, "prepare_attention_inputs", "q_out");
    launch_attention_prep(a, device_batch(batch, q_out.dim(0), "prepare_attention_inputs"),
                          ctx_.stream);
  }

  // Decode batches (one new token per sequence) whose attention the SIMT kernel takes, up to 8
  // query heads per KV head: the preparation folds into that kernel (AttnArgs::fold_prep),
  // saving a launch and its wait per attention layer, and the K/V rows of earlier steps load
  // before the kernel waits for the projection. Only with BLOCKFLASH_ATTENTION_PREP_FOLD=1.
  bool fused_gated_attention(const Tensor& q_and_gate, const Tensor& k_raw, const Tensor& v,
                             const Tensor& q_norm, const Tensor& k_norm, float eps,
                             int32_t rotary_dim, float theta, const ForwardBatch& batch,
                             KvCache& cache, const AttentionParams& params, Tensor& out) override {
    if (!fold_attention_prep_ || !fold_attention_gate_ || !params.causal ||
        params.sliding_window > 0 || batch.seqs.empty() || cache.k.rank() != 4 ||
        out.rank() != 3 || cache.k.dim(2) == 0 || out.dim(1) % cache.k.dim(2) != 0 ||
        out.dim(1) / cache.k.dim(2) > 8 || q_and_gate.device() != Device::kCUDA ||
        q_and_gate.dtype() != out.dtype() || cache.k.dtype() != out.dtype())
      return false;
    for (const BatchSequence& seq : batch.seqs)
      if (seq.query_len != 1) return false;
    const AttentionPrepArgs prep = prep_args(q_and_gate, k_raw, v, q_norm, k_norm, eps, rotary_dim,
                                             theta, batch, cache, out, "fused_gated_attention");
    check_attention_gate(out, q_and_gate.reshape({out.dim(0) * out.dim(1), 2 * out.dim(2)}),
                         out.dim(2));
    return attend(Tensor(), cache, batch, params, out, &q_and_gate, out.dim(2), &prep);
  }

  // prepare_attention_inputs' checks and arguments but q_out's, for q rows shaped like q_out
  // ([T, Hq, hd]: the attention output when the preparation is folded).
  AttentionPrepArgs prep_args(const Tensor& q_and_gate, const Tensor& k_raw, const Tensor& v,
                              const Tensor& q_norm, const Tensor& k_norm, float eps,
                              int32_t rotary_dim, float theta, const ForwardBatch& batch,
                              KvCache& cache, const Tensor& q_out, const char* op) {
    check_cache(cache, op);
    const int64_t hkv = cache.k.dim(2), hd = cache.k.dim(3);
    BF_CHECK(q_out.rank() == 3 && q_out.dim(2) == hd && q_out.dim(1) % hkv == 0, op,
             ": q_out must be [T, Hq, hd=", hd, "], got ", shape_string(q_out.shape()));
    const int64_t T = q_out.dim(0), hq = q_out.dim(1);
    check_numel(q_and_gate, T * hq * 2 * hd, op, "q_and_gate [T*Hq, 2*hd]");
    check_numel(k_raw, T * hkv * hd, op, "k_raw [T*Hkv, hd]");
    check_numel(v, T * hkv * hd, op, "v [T, Hkv, hd]");
    check_numel(q_norm, hd, op, "q_norm");
    check_numel(k_norm, hd, op, "k_norm");
    BF_CHECK(q_norm.dtype() == k_norm.dtype(), op, ": q_norm and k_norm must have one dtype");
    BF_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= hd, op, ": rotary_dim ",
             rotary_dim, " must be even and in (0, head_dim=", hd, "]");
    BF_CHECK(static_cast<int64_t>(batch.slot_mapping.size()) == T &&
                 static_cast<int64_t>(batch.positions.size()) == T,
             op, ": the batch has ", batch.slot_mapping.size(), " slots and ",
             batch.positions.size(), " positions for ", T, " tokens");
    check_slot_mapping(batch, cache, op);
    AttentionPrepArgs a;
    a.q_and_gate = q_and_gate.raw();
    a.k_raw = k_raw.raw();
    a.v = v.raw();
    a.q_norm = q_norm.raw();
    a.k_norm = k_norm.raw();
    a.cache_k = cache.k.raw();
    a.cache_v = cache.v.raw();
    a.q_dt = dt_of(q_and_gate, op, "q_and_gate");
    a.k_dt = dt_of(k_raw, op, "k_raw");
    a.v_dt = dt_of(v, op, "v");
    a.w_dt = dt_of(q_norm, op, "q_norm");
    a.cache_dt = dt_of(cache.k, op, "cache.k");
    a.hq = static_cast<int>(hq);
    a.hkv = static_cast<int>(hkv);
    a.hd = static_cast<int>(hd);
    a.rotary_dim = rotary_dim;
    a.eps = eps;
    a.theta = theta;
    return a;
  }
  void paged_attention(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
                       const AttentionParams& params, Tensor& out) override {
    attend(q, cache, batch, params, out, nullptr, 0);
  }

  // The gate is applied in the SIMT kernel's or the split-KV combine's store (saving the gate's
  // slice and the sigmoid_mul, two launches per attention layer of a decode step) when no rows
  // go to the flash kernels; otherwise as the default does.
  void paged_attention_gated(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
                             const AttentionParams& params, const Tensor& gate_rows,
                             int64_t gate_begin, Tensor& out) override {
    check_attention_gate(out, gate_rows, gate_begin);
    const bool foldable = fold_attention_gate_ && gate_rows.device() == Device::kCUDA &&
                          gate_rows.dtype() == out.dtype();
    if (foldable && attend(q, cache, batch, params, out, &gate_rows, gate_begin)) return;
    Backend::paged_attention_gated(q, cache, batch, params, gate_rows, gate_begin, out);
  }

  // paged_attention, with an output gate when gate_rows is given (paged_attention_gated);
  // false, launching nothing, where the gate cannot be folded (rows for the flash kernels).
  // prep: the preparation to fold into the SIMT kernel (single-token decodes; q is then
  // undefined and out gives the shape).
  bool attend(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
              const AttentionParams& params, Tensor& out, const Tensor* gate_rows,
              int64_t gate_begin, const AttentionPrepArgs* prep = nullptr) {
    const char* op = "paged_attention";
    check_cache(cache, op);
    const int64_t num_blocks = cache.k.dim(0), block_size = cache.k.dim(1);
    const int64_t hkv = cache.k.dim(2), hd = cache.k.dim(3);
    const Tensor& shaped = prep != nullptr ? out : q;
    BF_CHECK(shaped.dtype() == cache.k.dtype() && out.dtype() == cache.k.dtype(), op,
             ": q, out and the cache must have one dtype on CUDA");
    dt_of(shaped, op, "q");
    dt_of(out, op, "out");
    BF_CHECK(shaped.rank() == 3 && shaped.dim(2) == hd && shaped.dim(1) % hkv == 0, op,
             ": q must be [T, Hq, hd=", hd, "] with Hq a multiple of Hkv=", hkv, ", got ",
             shape_string(shaped.shape()));
    BF_CHECK(out.shape() == shaped.shape(), op, ": out has shape ", shape_string(out.shape()));
    const int64_t T = shaped.dim(0), hq = shaped.dim(1);
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
      const BatchSequence& seq = batch.seqs[s];
      const int64_t need = (seq.kv_len() + block_size - 1) / block_size;
      BF_CHECK(static_cast<int64_t>(seq.block_table.size()) >= need, op, ": sequence ", s, " has ",
               seq.kv_len(), " kv positions but a block table of ", seq.block_table.size(),
               " blocks of ", block_size);
      for (int64_t i = 0; i < need; ++i)
        BF_CHECK(seq.block_table[i] >= 0 && seq.block_table[i] < num_blocks, op, ": sequence ", s,
                 " block table entry ", i, " is block ", seq.block_table[i], ", the cache has ",
                 num_blocks);
    }
    const KernelCaps& kernel = selector_.select(LayerNeeds{.family = KernelFamily::kAttention,
                                                           .head_dim = static_cast<int>(hd),
                                                           .causal = params.causal,
                                                           .sliding_window = params.sliding_window > 0,
                                                           .f32 = act_ == DType::kF32});
    // flash-mma's block table lookups shift by log2(block_size).
    const bool wgmma = kernel.name == "flash-wgmma";
    const bool flash = (kernel.name == "flash-mma" || wgmma) &&
                       (block_size & (block_size - 1)) == 0 && params.scale > 0.0f;
    const DeviceBatch& d = device_batch(batch, T, op);
    AttnArgs a;
    a.q = prep != nullptr ? nullptr : q.raw();
    if (prep != nullptr) {
      a.fold_prep = true;
      a.prep = *prep;
    }
    a.out = out.raw();
    a.k_cache = cache.k.raw();
    a.v_cache = cache.v.raw();
    a.dt = dt_of(q, op, "q");
    a.hq = static_cast<int>(hq);
    a.hkv = static_cast<int>(hkv);
    a.hd = static_cast<int>(hd);
    a.block_size = static_cast<int>(block_size);
    a.scale = params.scale;
    a.causal = params.causal;
    a.sliding_window = params.sliding_window;
    if (gate_rows != nullptr) {
      if (flash)
        for (const BatchSequence& seq : batch.seqs)
          if (seq.query_len >= flash_min_query_len_) return false;
      a.gate = static_cast<const char*>(gate_rows->raw()) +
               gate_begin * static_cast<int64_t>(dtype_size(gate_rows->dtype()));
      a.gate_stride = gate_rows->dim(1);
    }
    int64_t simt_rows = T;
    if (flash) {
      // Query tiles of the sequences with many queries go to the mma kernel.
      const int tile = wgmma ? kFlashWgmmaRows
                             : flash_mma_tile_rows(static_cast<int>(hd),
                                                   ctx_.caps.smem_per_block, flash_tile_);
      std::vector<int32_t> items;
      simt_rows = 0;
      int flash_max_kv = 0;  // the longest context of the flash sequences (their key splits)
      for (size_t s = 0; s < batch.seqs.size(); ++s) {
        const BatchSequence& seq = batch.seqs[s];
        if (seq.query_len >= flash_min_query_len_) {
          flash_max_kv = std::max(flash_max_kv, seq.num_computed + seq.query_len);
          // Last tiles first: under a causal mask they see the most keys (shorter tail).
          for (int32_t q0 = (seq.query_len - 1) / tile * tile; q0 >= 0; q0 -= tile) {
            items.push_back(static_cast<int32_t>(s));
            items.push_back(q0);
          }
        } else {
          simt_rows += seq.query_len;
        }
      }
      Tensor d_items = upload_i32(items);
      const auto* d_items_ptr = reinterpret_cast<const int2*>(d_items.raw());
      const int num_items = static_cast<int>(items.size() / 2);
      a.simt_skip_query_len = flash_min_query_len_;
      Tensor flash_partial_o, flash_partial_ml;
      if (wgmma) {
        const SplitLayout l =
            flash_split_layout(num_items * hq, ctx_.caps.num_sms, flash_max_kv, flash_splits_);
        a.flash_splits = l.num_splits;
        a.flash_split_len = l.split_len;
        if (a.flash_splits > 1) {
          flash_partial_o = alloc({a.flash_splits, T, hq, hd}, DType::kF32);
          flash_partial_ml = alloc({a.flash_splits, T, hq, 2}, DType::kF32);
          a.flash_partial_o = flash_partial_o.f32();
          a.flash_partial_ml = flash_partial_ml.f32();
        }
        launch_attention_flash_wgmma(a, d, d_items_ptr, num_items, ctx_.stream);
      } else {
        launch_attention_flash_mma(a, d, d_items_ptr, num_items, tile, ctx_.stream);
      }
      if (simt_rows == 0) {
        if (a.flash_splits > 1) launch_attention_combine(a, d, ctx_.stream);
        return true;
      }
    }
    // Split the keys when the grid would be too small to fill the GPU (long-context decode).
    const int64_t work = simt_rows * hkv * ((hq / hkv + 7) / 8);  // blocks before splitting
    const int sms = std::max(1, ctx_.caps.num_sms);
    a.forced_split_len = forced_split_len_;
    int splits = 1;
    if (d.live_max_kv_len != nullptr) {
      // A graph: the grid has room for the splits of the longest context its block tables
      // hold; each replay's kernels take the layout of the live max kv length.
      const int bound = static_cast<int>(std::min<int64_t>(int64_t{graph_max_blocks_} * block_size,
                                                           int64_t{1} << 30));
      splits = decode_max_splits(work, sms, bound, forced_split_len_);
      a.split_work = work;
      a.split_sms = sms;
    } else {
      const SplitLayout layout = decode_split_layout(work, sms, d.max_kv_len, forced_split_len_);
      splits = layout.num_splits;
      a.split_len = layout.split_len;
    }
    Tensor partial_o, partial_ml;
    a.num_splits = splits;
    if (splits > 1) {
      partial_o = alloc({splits, T, hq, hd}, DType::kF32);
      partial_ml = alloc({splits, T, hq, 2}, DType::kF32);
      a.partial_o = partial_o.f32();
      a.partial_ml = partial_ml.f32();
    }
    launch_attention_simt(a, d, ctx_.stream);
    return true;
  }

  // --- MoE ---
  static constexpr int64_t kMoeGroupedMinTokens = 64;
  static constexpr int64_t kMoeFusedMaxTokens = 2;

  // Many tokens: sort (token, k) pairs by expert on the host (one sync for the routing), gather
  // the rows, and run each expert's two projections as cuBLASLt GEMMs over its rows.
  void moe_grouped(const Tensor& x, const Tensor& gate_up, const Tensor& down, const Tensor& ids,
                   const Tensor& weights, int64_t T, int64_t hidden, int64_t E, int64_t inter,
                   int top_k, Tensor& out) {
    const int64_t N = T * top_k;
    std::vector<int32_t> host_ids(N);
    BF_CUDA_CHECK(cudaMemcpyAsync(host_ids.data(), ids.raw(), N * 4, cudaMemcpyDeviceToHost,
                                  ctx_.stream));
    BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    std::vector<int64_t> count(E + 1, 0), offset(E + 1, 0);
    for (int32_t e : host_ids) {
      BF_CHECK(e >= 0 && e < E, "moe: routed to expert ", e);
      ++count[e];
    }
    for (int64_t e = 0; e < E; ++e) offset[e + 1] = offset[e] + count[e];
    std::vector<int32_t> meta(2 * N);  // [gather row per sorted row | sorted row per pair]
    std::vector<int64_t> fill(offset.begin(), offset.end() - 1);
    for (int64_t pair = 0; pair < N; ++pair) {
      const int64_t row = fill[host_ids[pair]]++;
      meta[row] = static_cast<int32_t>(pair / top_k);
      meta[N + pair] = static_cast<int32_t>(row);
    }
    Tensor d_meta = upload_i32(meta);
    const DType dt = x.dtype();
    Tensor xs = alloc({N, hidden}, dt), gu = alloc({N, 2 * inter}, dt);
    Tensor act = alloc({N, inter}, dt), ys = alloc({N, hidden}, dt);
    launch_embedding(d_meta.i32(), N, x.raw(), dt_of(x, "", ""), T, hidden, xs.raw(),
                     dt_of(xs, "", ""), ctx_.stream);
    for (int64_t e = 0; e < E; ++e) {
      if (count[e] == 0) continue;
      Tensor rows_in = xs.rows(offset[e], count[e]);
      Tensor rows_gu = gu.rows(offset[e], count[e]);
      gemm(rows_in, gate_up.rows(e, 1).reshape({2 * inter, hidden}), rows_gu);
    }
    launch_swiglu_packed(gu.raw(), dt_of(gu, "", ""), N, inter, act.raw(), dt_of(act, "", ""),
                         ctx_.stream);
    for (int64_t e = 0; e < E; ++e) {
      if (count[e] == 0) continue;
      Tensor rows_act = act.rows(offset[e], count[e]);
      Tensor rows_y = ys.rows(offset[e], count[e]);
      gemm(rows_act, down.rows(e, 1).reshape({hidden, inter}), rows_y);
    }
    launch_moe_combine(ys.raw(), dt_of(ys, "", ""), d_meta.i32() + N, weights.f32(), T, hidden,
                       top_k, out.raw(), dt_of(out, "", ""), ctx_.stream);
  }

  // The expert tensors against x ([T, H]): router [E, H], gate_up [E, 2I, H], down [E, H, I].
  struct MoeDims {
    int64_t tokens, hidden, experts, inter;
  };
  static MoeDims check_moe_shapes(const char* op, const Tensor& x, const Tensor& router,
                                  const Tensor& gate_up, const Tensor& down) {
    BF_CHECK(x.rank() == 2, op, ": x must be [T, H]");
    const int64_t hidden = x.dim(1);
    BF_CHECK(router.rank() == 2 && router.dim(1) == hidden, op, ": router must be [E, H]");
    const int64_t E = router.dim(0);
    BF_CHECK(gate_up.rank() == 3 && gate_up.dim(0) == E && gate_up.dim(2) == hidden &&
                 gate_up.dim(1) % 2 == 0,
             op, ": gate_up must be [E, 2I, H], got ", shape_string(gate_up.shape()));
    const int64_t inter = gate_up.dim(1) / 2;
    BF_CHECK(down.rank() == 3 && down.dim(0) == E && down.dim(1) == hidden && down.dim(2) == inter,
             op, ": down must be [E, H, I], got ", shape_string(down.shape()));
    return {x.dim(0), hidden, E, inter};
  }

  // Decode steps leave DRAM idle through their latency-bound ops (the GDN recurrence, attention
  // over a short cache, norms); weights hinted here are pulled into L2 meanwhile by a small
  // kernel on a side stream forked from the main one, so the projection that follows reads
  // them from L2. Nothing is written, so no ordering beyond the fork is needed. Only while a
  // decode graph is recorded (where batches this small run): the fork and the join back
  // before the capture ends are then nodes of that graph, and no eager side work can outlive
  // the weights or leave a capture joined to uncaptured work.
  void prefetch_weights(const std::vector<Tensor>& weights, int64_t tokens) override {
    // Off with BLOCKFLASH_PDL=0 too: it was measured only on top of PDL, and that switch
    // restores the step as it was before both.
    if (!side_prefetch_ || recording_ == nullptr || tokens > kSidePrefetchMaxTokens ||
        !pdl_enabled())
      return;
    L2PrefetchRanges r{};
    size_t budget = kSidePrefetchBytes;
    for (const Tensor& w : weights) {
      if (r.count == kL2PrefetchRanges || budget == 0) break;
      if (!w.defined() || w.device() != Device::kCUDA) continue;
      const size_t bytes = std::min(w.size_bytes(), budget);
      r.ptr[r.count] = w.raw();
      r.bytes[r.count++] = static_cast<int64_t>(bytes);
      budget -= bytes;
    }
    if (r.count == 0) return;
    if (side_stream_ == nullptr) {
      BF_CUDA_CHECK(cudaStreamCreateWithFlags(&side_stream_, cudaStreamNonBlocking));
      BF_CUDA_CHECK(cudaEventCreateWithFlags(&side_fork_, cudaEventDisableTiming));
      BF_CUDA_CHECK(cudaEventCreateWithFlags(&side_join_, cudaEventDisableTiming));
    }
    BF_CUDA_CHECK(cudaEventRecord(side_fork_, ctx_.stream));
    BF_CUDA_CHECK(cudaStreamWaitEvent(side_stream_, side_fork_));
    launch_l2_prefetch(r, side_stream_);
    side_pending_ = true;
  }

  // The main stream waits for the side stream's prefetches of this capture (a capture must end
  // joined).
  void join_side_stream() {
    if (!side_pending_) return;
    BF_CUDA_CHECK(cudaEventRecord(side_join_, side_stream_));
    BF_CUDA_CHECK(cudaStreamWaitEvent(ctx_.stream, side_join_));
    side_pending_ = false;
  }

  bool moe_block_decode(const Tensor& x, const Tensor& router, const Tensor& gate_up,
                        const Tensor& down, int32_t top_k, const Tensor& shared_gate_up,
                        const Tensor& shared_down, const Tensor& shared_gate, Tensor& out,
                        const FoldedNorm* norm) override {
    const char* op = "moe_block_decode";
    // Measured on the H200 (35B-A3B shapes, whole decode steps in graphs, one call; bench/NOTES.md):
    // fused vs separate ops 3.20 vs 3.62 ms at batch 1, 4.26 vs 4.41 at 2, 5.70 vs 5.42 at 4
    // (the router's warps walk the tokens in turn and each token re-reads the shared expert),
    // so only batches of up to 2 tokens take it.
    if (!moe_fused_ || x.rank() != 2 || x.dim(0) == 0 ||
        (x.dim(0) > kMoeFusedMaxTokens && !moe_fused_forced_))
      return false;
    const bool shared = shared_gate_up.defined();
    for (const Tensor* t : {&x, &router, &gate_up, &down})
      if (t->dtype() != DType::kBF16) return false;
    if (shared && (shared_gate_up.dtype() != DType::kBF16 || shared_down.dtype() != DType::kBF16 ||
                   shared_gate.dtype() != DType::kBF16))
      return false;
    const auto [T, hidden, E, inter] = check_moe_shapes(op, x, router, gate_up, down);
    const int64_t shared_inter = shared ? shared_gate_up.dim(0) / 2 : 0;
    if (shared)
      BF_CHECK(shared_gate_up.rank() == 2 && shared_gate_up.dim(1) == hidden &&
                   shared_down.rank() == 2 && shared_down.dim(0) == hidden &&
                   shared_down.dim(1) == shared_inter && shared_gate.numel() == hidden,
               op, ": shared expert must be [2Is, H], [H, Is], [1, H]");
    check_numel(out, x.numel(), op, "out");
    BF_CHECK(top_k >= 1 && top_k <= E, op, ": top_k ", top_k, " must be in [1, E=", E, "]");
    MoeDecodeArgs a{};
    a.x = static_cast<const __nv_bfloat16*>(x.raw());
    a.tokens = T;
    a.hidden = hidden;
    a.router = static_cast<const __nv_bfloat16*>(router.raw());
    a.gate_up = static_cast<const __nv_bfloat16*>(gate_up.raw());
    a.down = static_cast<const __nv_bfloat16*>(down.raw());
    a.experts = E;
    a.inter = inter;
    a.top_k = top_k;
    if (shared) {
      a.shared_gate_up = static_cast<const __nv_bfloat16*>(shared_gate_up.raw());
      a.shared_down = static_cast<const __nv_bfloat16*>(shared_down.raw());
      a.shared_gate = static_cast<const __nv_bfloat16*>(shared_gate.raw());
      a.shared_inter = shared_inter;
    }
    if (norm != nullptr) {
      const Tensor &residual = *norm->residual, &addend = *norm->addend;
      if (residual.dtype() != DType::kBF16 || addend.dtype() != DType::kBF16) return false;
      check_numel(residual, x.numel(), op, "norm residual");
      check_numel(addend, x.numel(), op, "norm addend");
      check_numel(*norm->weight, hidden, op, "norm weight");
      a.norm_residual = static_cast<__nv_bfloat16*>(norm->residual->raw());
      a.norm_addend = static_cast<const __nv_bfloat16*>(addend.raw());
      a.norm_weight = norm->weight->raw();
      a.norm_weight_dt = dt_of(*norm->weight, op, "norm weight");
      a.norm_eps = norm->eps;
      a.norm_one_centered = norm->one_centered;
      // x is the norm's output here (the op's contract): the router's last block writes it.
      a.norm_out = static_cast<__nv_bfloat16*>(const_cast<void*>(x.raw()));
    }
    if (!moe_decode_fused_supported(a)) return false;
    if (!zeroed_counters(moe_counter_, 4)) return false;  // the routing kernel's completion count
    const int64_t slots = top_k + (shared ? 1 : 0);
    const int64_t stride = (std::max(inter, shared_inter) + 3) / 4 * 4;
    Tensor logits = alloc({T, E + 1}, DType::kF32);
    Tensor ids = alloc({T, top_k}, DType::kI32);
    Tensor weights = alloc({T, slots}, DType::kF32);
    Tensor act = alloc({T, slots, stride}, DType::kF32);
    a.logits = logits.f32();
    a.ids = ids.i32();
    a.weights = weights.f32();
    a.act = act.f32();
    a.act_stride = stride;
    a.counter = static_cast<unsigned*>(moe_counter_.raw());
    a.out = out.raw();
    a.out_dt = dt_of(out, op, "out");
    launch_moe_decode_fused(a, ctx_.stream);
    return true;
  }

  void moe_experts(const Tensor& x, const Tensor& router, const Tensor& gate_up,
                   const Tensor& down, int32_t top_k, Tensor& out) override {
    const char* op = "moe_experts";
    const int xdt = dt_of(x, op, "x"), odt = dt_of(out, op, "out");
    const auto [T, hidden, E, inter] = check_moe_shapes(op, x, router, gate_up, down);
    const int gudt = dt_of(gate_up, op, "gate_up"), dndt = dt_of(down, op, "down");
    check_numel(out, x.numel(), op, "out");
    BF_CHECK(top_k >= 1 && top_k <= E, op, ": top_k ", top_k, " must be in [1, E=", E, "]");
    if (T == 0) return;
    Tensor logits = alloc({T, E}, DType::kF32);
    gemm(x, router, logits);
    Tensor ids = alloc({T, top_k}, DType::kI32);
    Tensor weights = alloc({T, top_k}, DType::kF32);
    launch_moe_route(logits.f32(), T, E, top_k, ids.i32(), weights.f32(), ctx_.stream);
    if (T >= kMoeGroupedMinTokens && graph_batch_ == nullptr) {  // grouped syncs: not in graphs
      moe_grouped(x, gate_up, down, ids, weights, T, hidden, E, inter, top_k, out);
      return;
    }
    // Chunks of tokens keep the grid's y extent (T * top_k) under 65535.
    const int64_t chunk = std::max<int64_t>(1, 32768 / top_k);
    Tensor act = alloc({std::min(T, chunk), top_k, inter}, DType::kF32);
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t n = std::min(chunk, T - t0);
      const auto* xb = static_cast<const uint8_t*>(x.raw()) + t0 * hidden * dtype_size(x.dtype());
      launch_moe_gate_up(xb, xdt, gate_up.raw(), gudt, n, hidden, inter, top_k, ids.i32() + t0 * top_k,
                         act.f32(), ctx_.stream);
      void* ob = static_cast<uint8_t*>(out.raw()) + t0 * hidden * dtype_size(out.dtype());
      launch_moe_down(act.f32(), down.raw(), dndt, n, hidden, inter, top_k, ids.i32() + t0 * top_k,
                      weights.f32() + t0 * top_k, ob, odt, ctx_.stream);
    }
  }

  // --- CUDA graphs of decode steps ---
  bool supports_graphs() const override { return true; }

  std::unique_ptr<Graph> capture_graph(const ForwardBatch& batch, int32_t max_blocks_per_seq,
                                       const std::function<void()>& forward) override {
    const int32_t n = static_cast<int32_t>(batch.seqs.size());
    check_graph_batch(batch, n, max_blocks_per_seq);
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t ints = GraphLayout{n}.tables() + int64_t{n} * max_blocks_per_seq;
    if (!graph_meta_.defined() || (ints > graph_meta_.numel() && live_graphs_ == 0)) {
      // Sized by the first (largest) graph; every later one shares it. Grown only when no
      // graph that reads the old one is alive.
      if (graph_host_) {
        BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
        cudaFreeHost(graph_host_);
        graph_host_ = nullptr;
      }
      graph_meta_ = alloc({ints}, DType::kI32);
      BF_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&graph_host_), ints * 4,
                                  cudaHostAllocDefault));
      if (!graph_copied_)
        BF_CUDA_CHECK(cudaEventCreateWithFlags(&graph_copied_, cudaEventDisableTiming));
    }
    BF_CHECK(ints <= graph_meta_.numel(), "capture_graph: record the largest batch first (",
             n, " sequences of ", max_blocks_per_seq, " blocks do not fit the first graph's buffer)");
    auto graph = std::make_unique<CudaGraph>();
    graph->num_seqs = n;
    graph->max_blocks = max_blocks_per_seq;
    graph_max_blocks_ = max_blocks_per_seq;
    BF_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&graph->constants), graph->constants_size,
                                cudaHostAllocDefault));
    upload_graph_batch(batch, n);
    // Ops read the metadata buffer while graph_batch_ is set; always cleared on the way out.
    struct Scope {
      CudaBackend& be;
      ~Scope() {
        be.graph_batch_ = nullptr;
        be.recording_ = nullptr;
      }
    } scope{*this};
    graph_batch_ = &batch;
    graph_dev_ = graph_device_batch(n);
    graph_token_ids_ = graph_meta_.i32() + GraphLayout{n}.token_ids();
    forward();  // eagerly: GEMM choices, cuBLASLt plans, lazy kernel attributes
    BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    recording_ = graph.get();
    side_pending_ = false;
    BF_CUDA_CHECK(cudaStreamBeginCapture(ctx_.stream, cudaStreamCaptureModeRelaxed));
    try {
      forward();
      join_side_stream();
    } catch (...) {
      side_pending_ = false;
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(ctx_.stream, &broken);
      if (broken) cudaGraphDestroy(broken);
      (void)cudaGetLastError();
      throw;
    }
    BF_CUDA_CHECK(cudaStreamEndCapture(ctx_.stream, &graph->graph));
    recording_ = nullptr;
    BF_CUDA_CHECK(cudaGraphInstantiate(&graph->exec, graph->graph, 0));
    graph->live_count = &live_graphs_;
    ++live_graphs_;
    BF_CUDA_CHECK(cudaGraphUpload(graph->exec, ctx_.stream));
    BF_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    log_debug("cuda: graph of ", n, " sequences recorded in ",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
              " s; graph pool ", graph_pool_->in_use() >> 20, " MiB held, ",
              graph_pool_->cached() >> 20, " MiB cached");
    return graph;
  }

  void replay_graph(Graph& base, const ForwardBatch& batch) override {
    CudaGraph& graph = dynamic_cast<CudaGraph&>(base);
    check_graph_batch(batch, graph.num_seqs, graph.max_blocks);
    upload_graph_batch(batch, graph.num_seqs);
    BF_CUDA_CHECK(cudaGraphLaunch(graph.exec, ctx_.stream));
  }

 private:
  // A graph batch: n plain decodes (one token each, no snapshots, logits at every row in
  // order) whose block tables fit the metadata buffer.
  void check_graph_batch(const ForwardBatch& batch, int32_t n, int32_t max_blocks) {
    const char* op = "graph batch";
    BF_CHECK(n >= 1 && static_cast<int32_t>(batch.seqs.size()) == n && batch.num_tokens() == n &&
                 batch.positions.size() == batch.token_ids.size() &&
                 batch.slot_mapping.size() == batch.token_ids.size() &&
                 static_cast<int32_t>(batch.logits_rows.size()) == n,
             op, ": expected ", n, " sequences of one token each with logits, got ",
             batch.seqs.size(), " sequences, ", batch.num_tokens(), " tokens");
    for (int32_t s = 0; s < n; ++s) {
      const BatchSequence& seq = batch.seqs[s];
      BF_CHECK(seq.query_start == s && seq.query_len == 1 && seq.snapshot_slots.empty() &&
                   seq.num_computed >= 0 && batch.logits_rows[s] == s &&
                   static_cast<int32_t>(seq.block_table.size()) <= max_blocks &&
                   seq.state_slot >= 0,
               op, ": sequence ", s, " is not a plain decode of at most ", max_blocks,
               " blocks");
    }
  }
  // The device view of the metadata buffer for n sequences (the kernels' DeviceBatch).
  DeviceBatch graph_device_batch(int32_t n) {
    const GraphLayout l{n};
    const int32_t* base = graph_meta_.i32();
    DeviceBatch d;
    d.positions = base + l.positions();
    d.slot_mapping = base + l.slot_mapping();
    d.token_seq = base + l.token_seq();
    d.seqs = reinterpret_cast<const SeqInfo*>(base + l.seqs());
    d.block_tables = base + l.tables();
    d.num_tokens = n;
    d.num_seqs = n;
    d.max_query_len = 1;
    d.live_max_kv_len = base + l.max_kv_len();
    return d;
  }
  // Writes the batch's metadata into the pinned mirror and queues one copy of the used part.
  void upload_graph_batch(const ForwardBatch& batch, int32_t n) {
    const GraphLayout l{n};
    BF_CUDA_CHECK(cudaEventSynchronize(graph_copied_));  // the previous copy has read the mirror
    int32_t* h = graph_host_;
    int32_t table_total = 0, max_kv = 0;
    for (int32_t s = 0; s < n; ++s) {
      const BatchSequence& seq = batch.seqs[s];
      h[l.positions() + s] = batch.positions[s];
      h[l.slot_mapping() + s] = batch.slot_mapping[s];
      h[l.token_seq() + s] = s;
      h[l.token_ids() + s] = batch.token_ids[s];
      const int32_t blocks = static_cast<int32_t>(seq.block_table.size());
      const SeqInfo info{s, 1, seq.num_computed, seq.state_slot, table_total, blocks, -1, 0};
      std::memcpy(h + l.seqs() + 8 * s, &info, sizeof(info));
      std::memcpy(h + l.tables() + table_total, seq.block_table.data(), blocks * 4);
      table_total += blocks;
      max_kv = std::max(max_kv, seq.kv_len());
    }
    h[l.max_kv_len()] = max_kv;
    const size_t bytes = (l.tables() + table_total) * 4;
    BF_CUDA_CHECK(cudaMemcpyAsync(graph_meta_.raw(), h, bytes, cudaMemcpyHostToDevice, ctx_.stream));
    BF_CUDA_CHECK(cudaEventRecord(graph_copied_, ctx_.stream));
  }

  Context& ctx_;
  DType act_;
  KernelSelector selector_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int, int, int, int>, MatmulPlan> plans_;
  // gemv configuration per shape, -1: cuBLASLt wins
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, int> gemv_choice_;
  int gemv_config_ = -1;  // BLOCKFLASH_GEMV_CONFIG=N pins the gemv configuration (tests)
  int gemv_mode_ = 0;  // 1 always, -1 never, 0 timed
  int skinny_mode_ = 0;    // BLOCKFLASH_SKINNY: 1 always, -1 never, 0 timed
  int skinny_config_ = 0;  // BLOCKFLASH_SKINNY_CONFIG (with always)
  bool gdn_fused_ = true;  // BLOCKFLASH_GDN_FUSED=0: decode GDN layers as four ops
  Tensor gdn_counters_;  // gated_deltanet_decode's counters (zero between launches)
  static constexpr int64_t kGdnCounters = 16384;
  int forced_split_len_ = 0;  // BLOCKFLASH_DECODE_SPLIT_LEN (0: chosen by grid size)
  bool moe_fused_ = true;    // BLOCKFLASH_MOE_FUSED=0: decode MoE blocks as separate ops
  bool fold_attention_gate_ = true;  // BLOCKFLASH_ATTENTION_GATE_FOLD=0: never
  bool moe_fused_forced_ = false;
  Tensor moe_counter_;       // moe_block_decode's routing counter (zero between launches)
  // prefetch_weights: on unless BLOCKFLASH_SIDE_PREFETCH=0; batches of up to
  // kSidePrefetchMaxTokens rows; at most kSidePrefetchBytes per hint (about half of an H100's
  // 50 MB L2, so what the next ops stream through it does not evict the prefetch first).
  // Measured on the H200, whole decode steps in graphs, same call, on vs off (bench/NOTES.md):
  // 35B-A3B batch 1 3.11 / 3.15 vs 3.19 / 3.18 ms, batch 2 4.20 / 4.19 vs 4.23 / 4.25, but
  // batch 8 7.03 / 7.02 vs 6.89 / 7.00 and 27B batch 8 16.83 / 16.71 vs 16.44 / 16.45 (there
  // the step is busy enough that the prefetch competes): batches of up to 2 rows.
  bool side_prefetch_ = true;
  static constexpr int64_t kSidePrefetchMaxTokens = 2;
  static constexpr size_t kSidePrefetchBytes = size_t{24} << 20;
  cudaStream_t side_stream_ = nullptr;
  cudaEvent_t side_fork_ = nullptr, side_join_ = nullptr;
  bool side_pending_ = false;
  bool gemv_deep_ = false;   // deep configurations among those timed
  bool gemv_gated_ = false;  // swiglu_matmul folds the activation into the gemv
  int flash_tile_ = 0;  // BLOCKFLASH_FLASH_TILE=64|128: pinned flash query tile (0: default)
  int flash_min_query_len_ = kFlashMinQueryLen;  // BLOCKFLASH_FLASH_MIN_QUERY_LEN
  int flash_splits_ = 0;  // BLOCKFLASH_FLASH_SPLITS (0: flash_split_layout decides)
  bool fold_attention_prep_ = false;  // BLOCKFLASH_ATTENTION_PREP_FOLD
  int gdn_decode_split_ = 1;  // BLOCKFLASH_GDN_DECODE_SPLIT (0, auto: gdn_decode_split decides)
  static constexpr size_t kStagingBytes = size_t{32} << 20;
  void* staging_[2] = {nullptr, nullptr};
  cudaEvent_t staging_event_[2] = {nullptr, nullptr};
  int staging_next_ = 0;
  size_t uploaded_bytes_ = 0;
  double upload_seconds_ = 0;
  int64_t uploaded_tensors_ = 0;
  bool upload_reported_ = false;
  const ForwardBatch* cached_batch_ = nullptr;
  const int32_t* cached_positions_ = nullptr;
  uint64_t cached_pos_hash_ = 0;
  uint64_t cached_hash_ = 0;
  int64_t cached_tokens_ = -1;
  DeviceBatch cached_dev_;
  Tensor cached_buffer_;
  // Graphs: the metadata buffer every graph reads (and its pinned mirror), the pool of what
  // graphs allocate, and while one is recorded (or run eagerly in graph mode) its batch.
  std::shared_ptr<DevicePool> graph_pool_ = std::make_shared<DevicePool>(/*for_graphs=*/true);
  Tensor graph_meta_;
  int32_t* graph_host_ = nullptr;
  cudaEvent_t graph_copied_ = nullptr;
  int32_t graph_max_blocks_ = 0;  // of the graph being recorded: bounds its split-KV grid
  int live_graphs_ = 0;
  const ForwardBatch* graph_batch_ = nullptr;
  DeviceBatch graph_dev_;
  const int32_t* graph_token_ids_ = nullptr;
  CudaGraph* recording_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

DeviceCaps query_cuda_device(int device) {
  DeviceCaps caps;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device) {
    (void)cudaGetLastError();
    return caps;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return caps;
  caps.present = true;
  caps.name = prop.name;
  caps.cc = prop.major * 10 + prop.minor;
  caps.smem_per_block = prop.sharedMemPerBlockOptin;
  caps.num_sms = prop.multiProcessorCount;
  caps.total_memory = prop.totalGlobalMem;
  int current = -1;
  // The probe launches a kernel: only on the device this process works on.
  if (caps.cc == 90 && cudaGetDevice(&current) == cudaSuccess && current == device)
    caps.wgmma = flash_wgmma_compiled();
  (void)cudaGetLastError();
  return caps;
}

void cuda_memory_info(size_t& free_bytes, size_t& total_bytes) {
  Context::get();
  BF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
}

void cuda_fill_uniform(Tensor& t, float scale, uint64_t seed) {
  const int dt = dt_of(t, "fill_uniform", "tensor");
  launch_fill_uniform(t.raw(), dt, t.numel(), scale, seed, Context::get().stream);
}

void cuda_copy_from_host(Tensor& device, const Tensor& host) {
  const int dt = dt_of(device, "copy_from_host", "device");
  BF_CHECK(host.device() == Device::kCPU && host.dtype() == DType::kF32 &&
               host.numel() == device.numel(),
           "copy_from_host: expected a host F32 tensor of ", device.numel(), " elements");
  cudaStream_t stream = Context::get().stream;
  if (dt == kDtF32) {
    BF_CUDA_CHECK(cudaMemcpyAsync(device.raw(), host.raw(), host.size_bytes(),
                                  cudaMemcpyHostToDevice, stream));
  } else {
    std::vector<uint16_t> staged(host.numel());
    for (int64_t i = 0; i < host.numel(); ++i) staged[i] = f32_to_bf16(host.f32()[i]);
    BF_CUDA_CHECK(cudaMemcpyAsync(device.raw(), staged.data(), staged.size() * 2,
                                  cudaMemcpyHostToDevice, stream));
  }
  BF_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void cuda_synchronize() { BF_CUDA_CHECK(cudaStreamSynchronize(Context::get().stream)); }

}  // namespace bf
