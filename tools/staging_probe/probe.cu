// Does staging a projection's weights on chip, while a latency-bound stage runs before it,
// shorten the pair? The question behind the persistent decode step (bench/NOTES.md, session
// 15's leads): at 35B-A3B batch 1 the input projection (50.6 MB) waits on short serial chains
// (norm, routing) that leave DRAM idle, and L2 prefetches did not survive the MoE block.
//
// One stage "chain" (a lone warp spinning `delay` us, then writing x, as a routing or norm
// chain does), optionally a stream of `between` MB that only starts after the chain (as the MoE
// experts' weights, known once routed, stream between the routing and the next layer's
// projection), then y = W x (W [12352, 2048] bf16, cold: a 256 MB buffer is streamed before
// every trial). Three forms, each timed from the chain's launch to the product's end:
//   pdl     kernels chained with programmatic dependent launch (chain, the stream if any,
//           gemv); the gemv's resident blocks issue their first weight loads before
//           griddepcontrol.wait (as the project's gemv does);
//   smem    one kernel, a block per SM: every block copies its first rows (52, 208 KiB on an
//           H100 / H200) into shared memory with cp.async while block 0's first thread runs
//           the chain, then polls a flag (acquire), streams its share of the `between` bytes,
//           and computes, the rest of its rows streamed from DRAM;
//   l2      the same, but the first rows are only prefetched into L2 (prefetch.global.L2).
// The three results are compared (max relative difference printed). The loads, dot products
// and warp sums are the project's (cuda_common.h). Build and run on the GPU box:
//   nvcc -O3 -std=c++20 -arch=sm_90a -Isrc -I. -o /tmp/staging_probe tools/staging_probe/probe.cu
//   /tmp/staging_probe            (prints one table; ~20 s)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/cuda/cuda_common.h"
#include "tools/probe_common.cuh"

namespace {

using bf::cuda::dot8;
using bf::cuda::ld_stream;
using bf::cuda::stream_policy;
using bf::cuda::warp_sum;
using probe::fill_kernel;
using probe::flush_kernel;
using probe::kChunks;
using probe::kCols;
using probe::kFlushBytes;
using probe::kRowBytes;
using probe::kRows;
using probe::max_rel_diff;

constexpr int kThreads = 256, kWarps = kThreads / 32;

__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// The latency-bound stage: one warp spins `delay_ns`, then writes x (from x_src), 16 bytes
// per lane per load so that the copy itself costs well under a microsecond (a one-thread copy
// of 2048 elements cost tens of microseconds and hid everything else in the first run).
__device__ void run_chain_warp(const __nv_bfloat16* x_src, __nv_bfloat16* x, uint64_t delay_ns) {
  const uint64_t t0 = now_ns();
  while (now_ns() - t0 < delay_ns) {
  }
  const uint4* src = reinterpret_cast<const uint4*>(x_src);
  uint4* dst = reinterpret_cast<uint4*>(x);
  const int lane = threadIdx.x % 32;
  uint4 v[kChunks / 32];
#pragma unroll
  for (int i = 0; i < kChunks / 32; ++i) v[i] = __ldcg(src + lane + 32 * i);
#pragma unroll
  for (int i = 0; i < kChunks / 32; ++i) dst[lane + 32 * i] = v[i];
  __syncwarp();
}

// This block's share of `buf`, read and discarded (the "between" stream), with the L2
// evict-first policy the project's decode kernels stream their weights with (ld_stream).
__device__ void stream_share(const uint4* buf, size_t chunks, unsigned* sink) {
  const uint64_t policy = stream_policy();
  // Eight loads in flight per thread: one at a time left the persistent form's 132 blocks
  // far below the copy rate.
  constexpr int kInFlight = 8;
  unsigned acc = 0;
  const size_t stride = size_t{gridDim.x} * blockDim.x;
  for (size_t base = blockIdx.x * size_t{blockDim.x} + threadIdx.x; base < chunks;
       base += stride * kInFlight) {
    uint4 v[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j)
      v[j] = base + j * stride < chunks ? ld_stream(buf + base + j * stride, policy) : uint4{};
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) acc ^= v[j].x ^ v[j].w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// The pdl form's stream: waits for the chain (its data would depend on it), lets the gemv
// launch, then streams.
__global__ void stream_pdl_kernel(const uint4* buf, size_t chunks, unsigned* sink) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  stream_share(buf, chunks, sink);
}

// Lets the gemv launch at once (as the project's kernels do after their own wait), so its
// resident blocks' first loads overlap the chain.
__global__ void chain_kernel(const __nv_bfloat16* x_src, __nv_bfloat16* x, uint64_t delay_ns) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (threadIdx.x < 32) run_chain_warp(x_src, x, delay_ns);
}

// pdl: a warp per row, the row's first 4 chunks per lane requested before the wait.
__global__ void __launch_bounds__(kThreads) gemv_pdl_kernel(const __nv_bfloat16* w,
                                                           const __nv_bfloat16* x, float* y) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = blockIdx.x * kWarps + warp;
  const uint4* wr = reinterpret_cast<const uint4*>(w + size_t{static_cast<unsigned>(row)} * kCols);
  constexpr int kPer = kChunks / 32;  // 8 chunks per lane
  uint4 held[kPer];
#pragma unroll
  for (int i = 0; i < kPer / 2; ++i) held[i] = row < kRows ? __ldcg(wr + lane + 32 * i) : uint4{};
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (row >= kRows) return;
#pragma unroll
  for (int i = kPer / 2; i < kPer; ++i) held[i] = __ldcg(wr + lane + 32 * i);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) acc += dot8(__ldcg(xv + lane + 32 * i), held[i]);
  acc = warp_sum<32>(acc);
  if (lane == 0) y[row] = acc;
}

// smem / l2: a block per SM owning rows [first, first + count); the first `staged` rows are
// brought close (copied to shared memory, or prefetched into L2) before the flag is awaited.
template <bool kSmem>
__global__ void __launch_bounds__(kThreads) persistent_kernel(
    const __nv_bfloat16* w, const __nv_bfloat16* x_src, __nv_bfloat16* x, float* y,
    uint64_t delay_ns, unsigned* flag, unsigned generation, int rows_per_block, int staged,
    const uint4* between, size_t between_chunks, unsigned* sink) {
  extern __shared__ uint4 s_w[];
  __shared__ uint4 s_x[kChunks];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int first = blockIdx.x * rows_per_block;
  const int count = max(0, min(rows_per_block, kRows - first));
  const int n_staged = min(staged, count);
  const uint4* wb = reinterpret_cast<const uint4*>(w + size_t{static_cast<unsigned>(first)} * kCols);
  for (int i = threadIdx.x; i < n_staged * kChunks; i += kThreads) {
    if constexpr (kSmem) {
      const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(s_w + i));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(wb + i));
    } else if (i % 8 == 0) {  // one request per 128-byte line
      asm volatile("prefetch.global.L2 [%0];" ::"l"(wb + i));
    }
  }
  if constexpr (kSmem) asm volatile("cp.async.commit_group;" ::: "memory");
  if (blockIdx.x == 0 && threadIdx.x < 32) {
    run_chain_warp(x_src, x, delay_ns);
    __threadfence();
    asm volatile("st.release.gpu.u32 [%0], %1;" ::"l"(flag), "r"(generation) : "memory");
  }
  if (threadIdx.x == 0) {
    unsigned seen = 0;
    do {
      asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(seen) : "l"(flag) : "memory");
    } while (seen != generation);
  }
  __syncthreads();
  stream_share(between, between_chunks, sink);
  for (int i = threadIdx.x; i < kChunks; i += kThreads)
    s_x[i] = __ldcg(reinterpret_cast<const uint4*>(x) + i);
  if constexpr (kSmem) asm volatile("cp.async.wait_all;" ::: "memory");
  __syncthreads();
  constexpr int kPer = kChunks / 32;
  // Staged rows from shared memory (smem form); the rest streamed, kBatch rows per warp in
  // flight (24 loads per lane: ~96 KB per SM, about what the copy rate needs per SM).
  const int from_smem = kSmem ? n_staged : 0;
  for (int r = warp; r < from_smem; r += kWarps) {
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) acc += dot8(s_x[lane + 32 * i], s_w[r * kChunks + lane + 32 * i]);
    acc = warp_sum<32>(acc);
    if (lane == 0) y[first + r] = acc;
  }
  constexpr int kBatch = 3;
  for (int base = from_smem + warp; base < count; base += kWarps * kBatch) {
    uint4 held[kBatch][kPer];
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int r = base + j * kWarps;
#pragma unroll
      for (int i = 0; i < kPer; ++i)
        held[j][i] = r < count ? __ldcg(wb + size_t{static_cast<unsigned>(r)} * kChunks + lane + 32 * i)
                               : uint4{};
    }
#pragma unroll
    for (int j = 0; j < kBatch; ++j) {
      const int r = base + j * kWarps;
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < kPer; ++i) acc += dot8(s_x[lane + 32 * i], held[j][i]);
      acc = warp_sum<32>(acc);
      if (lane == 0 && r < count) y[first + r] = acc;
    }
  }
}

}  // namespace

int run_probe() {
  int sms = 0, smem_optin = 0;
  BF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  BF_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  __nv_bfloat16 *w, *x, *x_src;
  float* y;
  uint4* flush;
  unsigned *flag, *sink;
  BF_CUDA_CHECK(cudaMalloc(&w, size_t{kRows} * kRowBytes));
  BF_CUDA_CHECK(cudaMalloc(&x, kCols * 2));
  BF_CUDA_CHECK(cudaMalloc(&x_src, kCols * 2));
  BF_CUDA_CHECK(cudaMalloc(&y, kRows * 4));
  BF_CUDA_CHECK(cudaMalloc(&flush, kFlushBytes));
  uint4* between;  // the MoE-like stream (up to 64 MB, cold: the flush evicts it too)
  constexpr size_t kBetweenMax = size_t{64} << 20;
  BF_CUDA_CHECK(cudaMalloc(&between, kBetweenMax));
  BF_CUDA_CHECK(cudaMemset(between, 2, kBetweenMax));
  BF_CUDA_CHECK(cudaMalloc(&flag, 4));
  BF_CUDA_CHECK(cudaMalloc(&sink, 4));
  BF_CUDA_CHECK(cudaMemset(flag, 0, 4));
  BF_CUDA_CHECK(cudaMemset(flush, 1, kFlushBytes));
  fill_kernel<<<1024, 256>>>(w, size_t{kRows} * kCols, 1);
  fill_kernel<<<8, 256>>>(x_src, kCols, 2);
  BF_CUDA_CHECK(cudaDeviceSynchronize());

  const int rows_per_block = (kRows + sms - 1) / sms;
  const int smem_rows = std::min<int>(rows_per_block,
                                      static_cast<int>((smem_optin - 16 * 1024) / kRowBytes));
  const size_t smem_bytes = size_t{static_cast<unsigned>(smem_rows)} * kRowBytes;
  BF_CUDA_CHECK(cudaFuncSetAttribute(persistent_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes)));
  cudaStream_t s;
  BF_CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  BF_CUDA_CHECK(cudaEventCreate(&e0));
  BF_CUDA_CHECK(cudaEventCreate(&e1));
  unsigned generation = 0;

  // kind 0: pdl, 1: smem, 2: l2; staged: rows per block brought close (smem / l2).
  auto run = [&](int kind, uint64_t delay_ns, int staged, size_t between_bytes) {
    const size_t between_chunks = between_bytes / 16;
    flush_kernel<<<4 * sms, 256, 0, s>>>(flush, kFlushBytes / 16, sink);
    BF_CUDA_CHECK(cudaMemsetAsync(x, 0, kCols * 2, s));
    BF_CUDA_CHECK(cudaEventRecord(e0, s));
    if (kind == 0) {
      chain_kernel<<<1, 32, 0, s>>>(x_src, x, delay_ns);
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[0].val.programmaticStreamSerializationAllowed = 1;
      if (between_chunks > 0) {
        cudaLaunchConfig_t sc{};
        sc.gridDim = dim3(4 * sms);
        sc.blockDim = dim3(kThreads);
        sc.stream = s;
        sc.attrs = attr;
        sc.numAttrs = 1;
        BF_CUDA_CHECK(cudaLaunchKernelEx(&sc, stream_pdl_kernel, static_cast<const uint4*>(between),
                                 between_chunks, sink));
      }
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3((kRows + kWarps - 1) / kWarps);
      cfg.blockDim = dim3(kThreads);
      cfg.stream = s;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      BF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, gemv_pdl_kernel, static_cast<const __nv_bfloat16*>(w),
                               static_cast<const __nv_bfloat16*>(x), y));
    } else {
      ++generation;
      if (kind == 1)
        persistent_kernel<true><<<sms, kThreads, smem_bytes, s>>>(
            w, x_src, x, y, delay_ns, flag, generation, rows_per_block, staged, between,
            between_chunks, sink);
      else
        persistent_kernel<false><<<sms, kThreads, 0, s>>>(
            w, x_src, x, y, delay_ns, flag, generation, rows_per_block, staged, between,
            between_chunks, sink);
    }
    BF_CUDA_CHECK(cudaEventRecord(e1, s));
    BF_CUDA_CHECK(cudaStreamSynchronize(s));
    float ms = 0;
    BF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    return ms * 1000.0f;
  };
  auto median_us = [&](int kind, uint64_t delay_ns, int staged, size_t between_bytes) {
    std::vector<float> t;
    for (int i = 0; i < 15; ++i) t.push_back(run(kind, delay_ns, staged, between_bytes));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  auto result = [&] {
    std::vector<float> h(kRows);
    BF_CUDA_CHECK(cudaMemcpy(h.data(), y, kRows * 4, cudaMemcpyDeviceToHost));
    return h;
  };

  std::printf("%d SMs; W %.1f MB cold each trial; %d rows per block, up to %d staged (%.1f MB "
              "on chip)\n",
              sms, kRows * kRowBytes / 1e6, rows_per_block, smem_rows,
              double(sms) * smem_rows * kRowBytes / 1e6);
  run(0, 1000, 0, 0);
  const std::vector<float> ref = result();
  run(1, 1000, smem_rows, 0);
  const float diff_smem = max_rel_diff(result(), ref);
  run(2, 1000, smem_rows, 0);
  const float diff_l2 = max_rel_diff(result(), ref);
  std::printf("results vs pdl: smem max rel diff %.2e, l2 %.2e\n", diff_smem, diff_l2);
  std::printf("| chain us | between MB | pdl us | smem, none staged | smem, half staged | "
              "smem, all it holds | l2, as many prefetched |\n|---|---|---|---|---|---|---|\n");
  for (size_t between_mb : {size_t{0}, size_t{54}}) {
    for (uint64_t delay_us : {0, 2, 5, 10}) {
      const uint64_t d = delay_us * 1000;
      const size_t b = between_mb << 20;
      std::printf("| %llu | %zu | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
                  static_cast<unsigned long long>(delay_us), between_mb, median_us(0, d, 0, b),
                  median_us(1, d, 0, b), median_us(1, d, smem_rows / 2, b),
                  median_us(1, d, smem_rows, b), median_us(2, d, smem_rows, b));
    }
  }
  return 0;
}

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);  // rows as they come, should an arm hang
  try {
    return run_probe();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "staging_probe: %s\n", e.what());
    return 1;
  }
}
