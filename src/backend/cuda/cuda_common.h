// Shared by the CUDA backend's host code and kernels: error checks, the launch context
// (one stream), and the small device-side dtype helpers. Kernels take raw pointers plus a
// dtype code so one instantiation serves bf16 and f32 tensors where it costs nothing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/error.h"

namespace bf::cuda {

#define BF_CUDA_CHECK(expr)                                                              \
  do {                                                                                   \
    cudaError_t bf_err_ = (expr);                                                        \
    if (bf_err_ != cudaSuccess)                                                          \
      ::bf::fail("CUDA error ", cudaGetErrorName(bf_err_), " (", cudaGetErrorString(bf_err_), \
                 ") at ", __FILE__, ":", __LINE__, ": ", #expr);                         \
  } while (0)

// After each launch: a bad configuration shows up here, not later.
#define BF_CUDA_LAUNCH_CHECK() BF_CUDA_CHECK(cudaGetLastError())

// Element type codes passed to kernels (match bf::DType's kF32 / kBF16).
enum DT : int { kDtF32 = 0, kDtBF16 = 2 };

#if defined(__CUDACC__)
__device__ __forceinline__ float ld(const void* p, int dt, int64_t i) {
  return dt == kDtF32 ? static_cast<const float*>(p)[i]
                      : __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}
__device__ __forceinline__ void st(void* p, int dt, int64_t i, float v) {
  if (dt == kDtF32)
    static_cast<float*>(p)[i] = v;
  else
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
}
// residual + x of eight bf16 values, each sum rounded to bf16 as a residual is stored (the add
// of the fused add + RMSNorm kernels, which then take the norm of the rounded values).
__device__ __forceinline__ uint4 add_bf16x8(const uint4& residual, const uint4& x) {
  const __nv_bfloat16* re = reinterpret_cast<const __nv_bfloat16*>(&residual);
  const __nv_bfloat16* xe = reinterpret_cast<const __nv_bfloat16*>(&x);
  uint4 sum;
  __nv_bfloat16* se = reinterpret_cast<__nv_bfloat16*>(&sum);
#pragma unroll
  for (int e = 0; e < 8; ++e)
    se[e] = __float2bfloat16(__bfloat162float(re[e]) + __bfloat162float(xe[e]));
  return sum;
}
// Weights a decode step streams once: loaded through L2 only (as __ldcg) with an evict-first
// policy, so the gigabytes they pass through L2 per step displace each other rather than what
// is reused from kernel to kernel (the kernels' code, activations, recurrent state, the KV
// cache). BF_STREAM_EVICT_FIRST=0 at build time gives plain __ldcg. Not on the read-only path
// (ld.global.nc), which ptxas may move above griddepcontrol.wait (kernels_gemv.cu).
#ifndef BF_STREAM_EVICT_FIRST
#define BF_STREAM_EVICT_FIRST 1
#endif
// evict_first: false gives the normal policy (weights another block of the launch re-reads,
// such as an expert chosen by several tokens of a batch).
__device__ __forceinline__ uint64_t stream_policy(bool evict_first = true) {
  uint64_t policy = 0;
#if BF_STREAM_EVICT_FIRST && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint64_t normal;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(normal));
  if (!evict_first) policy = normal;
#else
  (void)evict_first;
#endif
  return policy;
}
__device__ __forceinline__ uint4 ld_stream(const uint4* p, uint64_t policy) {
#if BF_STREAM_EVICT_FIRST && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint4 v;
  // volatile: a plain asm statement counts as free of side effects, so the compiler may hoist
  // it out of the bounds check guarding it (an out-of-range load).
  asm volatile("ld.global.cg.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "l"(policy));
  return v;
#else
  (void)policy;
  return __ldcg(p);
#endif
}
// The dot product of eight bf16 pairs packed in 16 bytes each, summed in fp32.
__device__ __forceinline__ float dot8(const uint4& a, const uint4& b) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(&b);
  float s = 0.0f;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 xf = __bfloat1622float2(x[e]), yf = __bfloat1622float2(y[e]);
    s += xf.x * yf.x + xf.y * yf.y;
  }
  return s;
}
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ float siluf_(float x) { return x / (1.0f + __expf(-x)); }

template <int N>
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = N / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over a block of blockDim.x threads (multiple of 32, at most 1024). scratch: 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum<32>(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];
  return total;
}
#endif

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Programmatic dependent launch (sm_90+; on unless BLOCKFLASH_PDL=0): a kernel launched with
// launch_pdl may be scheduled while the kernel before it drains, so its launch latency and
// block start-up overlap that kernel's tail (in CUDA graphs too). Such a kernel must call
// pdl_wait() before it reads anything an earlier kernel wrote or writes anything an earlier
// kernel reads; only loads of weights may come before it.
bool pdl_enabled();
// Dynamic shared memory for a small, latency-bound grid of `blocks` blocks that needs `needed`
// bytes: enough that no two of its blocks can share an SM, when the grid fits on the SMs and a
// block may take that much; else `needed`. Launched while the kernel before it drains, such a
// grid is otherwise packed by the block scheduler onto the few SMs that have room: at
// 35B-A3B batch 1 the 32 fused GDN decode blocks landed three to an SM, and their passes over
// the state ran 2-3x slower than alone (in-kernel stamps, bench/NOTES.md). BLOCKFLASH_SPREAD=0
// turns it off, BLOCKFLASH_SPREAD=gdn (a comma-separated list) keeps it for the kernels named
// (`kernel`: gdn, router). spread_smem_limit() is the most it returns: the kernel's
// cudaFuncAttributeMaxDynamicSharedMemorySize must allow that.
size_t spread_smem_bytes(int64_t blocks, size_t needed, const char* kernel);
size_t spread_smem_limit();
// Lets `kernel` take up to max(bytes, spread_smem_limit()) of dynamic shared memory (its own
// need, or a spread grid's share). Call once per kernel, before its first launch.
template <typename Kernel>
void allow_spread_smem(Kernel kernel, size_t bytes) {
  const size_t most = bytes > spread_smem_limit() ? bytes : spread_smem_limit();
  BF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(most)));
}
#if defined(__CUDACC__)
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  // Everything before this grid is complete: the next kernel may start its own prologue.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif
// launch_pdl for a grid of thread-block clusters of `cluster` blocks (sm_90+); a cluster of
// one block is a plain launch.
template <typename... Params, typename... Args>
void launch_pdl_cluster(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t s, dim3 cluster, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster.x * cluster.y * cluster.z > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster.x;
    attr[n].val.clusterDim.y = cluster.y;
    attr[n++].val.clusterDim.z = cluster.z;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  BF_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args... args) {
  launch_pdl_cluster(kernel, grid, block, smem, s, dim3(1, 1, 1), args...);
}

}  // namespace bf::cuda
