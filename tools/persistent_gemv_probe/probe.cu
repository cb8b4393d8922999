// Can one wave of blocks (one per SM, as a persistent decode step would run its projections)
// stream a projection's weights as fast as the many-block gemv? Session 16 (bench/NOTES.md)
// found two one-wave forms 4-9 us slower on the 35B-A3B input projection (50.6 MB): rows in
// registers, and rows in a per-warp shared-memory ring filled by 16-byte cp.async. This probe
// times, on that shape (y = W x, W [12352, 2048] bf16, cold from DRAM before every trial):
//   gemv     many blocks of 8 warps, 4 rows per warp, 8 16-byte loads per lane in flight (the
//            engine's best configuration for this shape);
//   tma S/R  one block per SM: a producer warp issues 1D bulk copies (TMA, cp.async.bulk) of
//            R rows per consumer warp into a ring of S stages, each guarded by a "full" and an
//            "empty" mbarrier; 8 consumer warps wait on "full", compute their rows from shared
//            memory, and release the stage;
// and a device-to-device copy of the same bytes for the bandwidth ceiling. Build and run on
// the GPU box:
//   nvcc -O3 -std=c++20 -arch=sm_90a -Isrc -I. -o /tmp/pgemv tools/persistent_gemv_probe/probe.cu
//   /tmp/pgemv
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
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

constexpr int kConsumerWarps = 8;

// The baseline: a warp per 4 rows, two 256-column steps of loads in flight (8 per lane).
__global__ void __launch_bounds__(256) gemv_kernel(const __nv_bfloat16* w, const __nv_bfloat16* x,
                                                   float* y) {
  constexpr int R = 4, U = 2;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = (blockIdx.x * 8 + warp) * R;
  const uint64_t policy = stream_policy();
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc[R] = {};
  for (int c0 = lane; c0 < kChunks; c0 += 32 * U) {
    uint4 held[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int row = min(row0 + r, kRows - 1);
        held[u][r] = ld_stream(reinterpret_cast<const uint4*>(w + size_t(row) * kCols) + c0 + 32 * u,
                               policy);
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint4 xc = __ldg(xv + c0 + 32 * u);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] += dot8(xc, held[u][r]);
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = warp_sum<32>(acc[r]);
    if (lane == 0 && row0 + r < kRows) y[row0 + r] = v;
  }
}

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}
// One 1D bulk copy global -> shared, completing `bytes` of transactions on `bar`.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes,
                                          uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint "
      "[%0], [%1], %2, [%3], %4;" ::"r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(policy)
      : "memory");
}

// One block per SM owning rows [first, first + count); a stage holds kR rows per consumer warp.
template <int kStages, int kR>
__global__ void __launch_bounds__((kConsumerWarps + 1) * 32, 1)
    tma_gemv_kernel(const __nv_bfloat16* w, const __nv_bfloat16* x, float* y, int rows_per_block) {
  constexpr int kStageRows = kConsumerWarps * kR;
  extern __shared__ __align__(128) uint4 s_ring[];  // [kStages][kStageRows][kChunks]
  __shared__ uint4 s_x[kChunks];
  __shared__ uint64_t full[kStages], empty[kStages];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int first = blockIdx.x * rows_per_block;
  const int count = max(0, min(rows_per_block, kRows - first));
  const int stages_needed = (count + kStageRows - 1) / kStageRows;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (warp == kConsumerWarps) {  // the producer
    if (lane == 0) {
      const uint64_t policy = stream_policy();
      for (int i = 0; i < stages_needed; ++i) {
        const int s = i % kStages;
        if (i >= kStages) mbar_wait(&empty[s], ((i / kStages) - 1) & 1);
        const int r0 = i * kStageRows;
        const int n = min(kStageRows, count - r0);
        const unsigned bytes = static_cast<unsigned>(n * kRowBytes);
        mbar_expect_tx(&full[s], bytes);
        bulk_copy(s_ring + size_t(s) * kStageRows * kChunks, w + size_t(first + r0) * kCols, bytes,
                  &full[s], policy);
      }
    }
    return;
  }
  for (int c = threadIdx.x; c < kChunks; c += kConsumerWarps * 32)
    s_x[c] = __ldcg(reinterpret_cast<const uint4*>(x) + c);
  asm volatile("bar.sync 1, %0;" ::"n"(kConsumerWarps * 32) : "memory");
  for (int i = 0; i < stages_needed; ++i) {
    const int s = i % kStages;
    mbar_wait(&full[s], (i / kStages) & 1);
    const uint4* stage = s_ring + size_t(s) * kStageRows * kChunks;
#pragma unroll
    for (int j = 0; j < kR; ++j) {
      const int local = warp * kR + j;  // the stage's row of this warp
      const int r = i * kStageRows + local;
      if (r >= count) break;
      float acc = 0.0f;
#pragma unroll
      for (int u = 0; u < kChunks / 32; ++u)
        acc += dot8(s_x[lane + 32 * u], stage[local * kChunks + lane + 32 * u]);
      acc = warp_sum<32>(acc);
      if (lane == 0) y[first + r] = acc;
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);
  }
}

}  // namespace

int run_probe() {
  int sms = 0;
  BF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  __nv_bfloat16 *w, *x, *w_copy;
  float* y;
  uint4* flush;
  unsigned* sink;
  const size_t w_bytes = size_t{kRows} * kRowBytes;
  BF_CUDA_CHECK(cudaMalloc(&w, w_bytes));
  BF_CUDA_CHECK(cudaMalloc(&w_copy, w_bytes));
  BF_CUDA_CHECK(cudaMalloc(&x, kCols * 2));
  BF_CUDA_CHECK(cudaMalloc(&y, kRows * 4));
  BF_CUDA_CHECK(cudaMalloc(&flush, kFlushBytes));
  BF_CUDA_CHECK(cudaMalloc(&sink, 4));
  BF_CUDA_CHECK(cudaMemset(flush, 1, kFlushBytes));
  fill_kernel<<<1024, 256>>>(w, size_t{kRows} * kCols, 1);
  fill_kernel<<<8, 256>>>(x, kCols, 2);
  BF_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  BF_CUDA_CHECK(cudaEventCreate(&e0));
  BF_CUDA_CHECK(cudaEventCreate(&e1));
  const int rows_per_block = (kRows + sms - 1) / sms;

  auto timed = [&](auto&& launch) {
    std::vector<float> t;
    for (int i = 0; i < 15; ++i) {
      flush_kernel<<<4 * sms, 256>>>(flush, kFlushBytes / 16, sink);
      BF_CUDA_CHECK(cudaEventRecord(e0));
      launch();
      BF_CUDA_CHECK(cudaEventRecord(e1));
      BF_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      BF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      t.push_back(ms * 1000.0f);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  auto result = [&] {
    std::vector<float> h(kRows);
    BF_CUDA_CHECK(cudaMemcpy(h.data(), y, kRows * 4, cudaMemcpyDeviceToHost));
    return h;
  };
  auto tma = [&](auto kernel, int stages, int r) {
    const size_t smem = size_t(stages) * kConsumerWarps * r * kRowBytes;
    BF_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    return [=] {
      kernel<<<sms, (kConsumerWarps + 1) * 32, smem>>>(w, x, y, rows_per_block);
      BF_CUDA_CHECK(cudaGetLastError());
    };
  };

  const float copy_us = timed([&] {
    BF_CUDA_CHECK(cudaMemcpyAsync(w_copy, w, w_bytes, cudaMemcpyDeviceToDevice));
  });
  const double copy_bw = 2.0 * w_bytes / (copy_us * 1e-6) / 1e9;  // read + write
  std::printf("%d SMs; W %.1f MB; copy %.2f us = %.0f GB/s (read + write): W at that rate %.2f us\n",
              sms, w_bytes / 1e6, copy_us, copy_bw, w_bytes / (copy_bw * 1e9) * 1e6);
  const auto gemv = [&] {
    gemv_kernel<<<(kRows + 31) / 32, 256>>>(w, x, y);
    BF_CUDA_CHECK(cudaGetLastError());
  };
  gemv();
  const std::vector<float> ref = result();
  std::printf("| form | us | GB/s of W | max rel diff vs gemv |\n|---|---|---|---|\n");
  const auto row = [&](const char* name, auto launch) {
    launch();
    const float d = max_rel_diff(result(), ref);
    const float us = timed(launch);
    std::printf("| %s | %.2f | %.0f | %.1e |\n", name, us, w_bytes / (us * 1e-6) / 1e9, d);
  };
  row("gemv (many blocks)", gemv);
  row("tma 2 stages x 1 row/warp", tma(tma_gemv_kernel<2, 1>, 2, 1));
  row("tma 4 stages x 1 row/warp", tma(tma_gemv_kernel<4, 1>, 4, 1));
  row("tma 6 stages x 1 row/warp", tma(tma_gemv_kernel<6, 1>, 6, 1));
  row("tma 3 stages x 2 rows/warp", tma(tma_gemv_kernel<3, 2>, 3, 2));
  row("tma 2 stages x 3 rows/warp", tma(tma_gemv_kernel<2, 3>, 2, 3));
  return 0;
}

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  try {
    return run_probe();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "persistent_gemv_probe: %s\n", e.what());
    return 1;
  }
}
