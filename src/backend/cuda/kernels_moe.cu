// Routed experts of Qwen3.5-MoE, the simple form: routing on the device (f32 softmax, top-k
// with ties to the lower expert index, renormalised), then warp-per-row GEMVs over each
// token's chosen experts (gate|up with SiLU, then the weighted sum of the down projections;
// bf16 weights take vectorised forms of both). Reads only the chosen experts: right for
// decode. Many tokens take the grouped path below (rows sorted by expert, one GEMM each).
#include <cuda/atomic>

#include <algorithm>
#include <cfloat>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kMaxTopK = 32;
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
constexpr int kMaxExperts = 1024;

// A float's bits as an unsigned that orders like the float (for the warp's integer max
// reduction); -0 is read as +0 first, so equal values get equal keys.
__device__ __forceinline__ unsigned order_key(float v) {
  const unsigned u = __float_as_uint(v + 0.0f);
  return (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u;
}
__device__ __forceinline__ float key_value(unsigned k) {
  return __uint_as_float((k & 0x80000000u) != 0 ? k & 0x7fffffffu : ~k);
}

// One warp routes one token: lane l holds the logits of experts l, l + 32, ... in registers
// (read once, from L2: they may come from another block of the same kernel), with the shared
// expert's gate logit (when there is one) requested in the same round trip; k rounds of a warp
// argmax (ties to the lower index), each removing its winner, by the warp's integer max and
// min reductions on order keys (two instructions a round instead of ten shuffles). Lane k
// keeps round k's winner, so the results leave in one store per lane and nothing goes
// through local memory. kPerLane: registers per lane, the fewest that hold all experts.
// The router's last block spent ~3.9 us here at 35B-A3B batch 1 in the shuffle form.
template <int kPerLane>
__device__ void route_token_n(const float* p, int64_t experts, int top_k, int32_t* ids,
                              float* weights, const float* shared_logit, float* shared_weight) {
  const int lane = threadIdx.x % 32;
  unsigned key[kPerLane];  // 0: no expert (past the end, or taken)
  float v[kPerLane];
#pragma unroll
  for (int w = 0; w < kPerLane; ++w) {
    const int64_t e = lane + 32 * w;
    v[w] = e < experts ? __ldcg(p + e) : -FLT_MAX;
  }
  const float shared_v = shared_logit != nullptr && lane == 0 ? __ldcg(shared_logit) : 0.0f;
  unsigned lane_max = 0;
#pragma unroll
  for (int w = 0; w < kPerLane; ++w) {
    key[w] = lane + 32 * w < experts ? order_key(v[w]) : 0u;
    lane_max = max(lane_max, key[w]);
  }
  const float mx = key_value(__reduce_max_sync(0xffffffffu, lane_max));
  float sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kPerLane; ++w)
    if (lane + 32 * w < experts) sum += expf(v[w] - mx);
  sum = warp_sum<32>(sum);
  int32_t my_id = 0;
  float my_prob = 0.0f;
  for (int k = 0; k < top_k; ++k) {
    unsigned best = 0;
    int32_t best_e = 0x7fffffff;
#pragma unroll
    for (int w = 0; w < kPerLane; ++w)  // strict >: the lowest of equal values in this lane
      if (key[w] > best) {
        best = key[w];
        best_e = lane + 32 * w;
      }
    const unsigned win_key = __reduce_max_sync(0xffffffffu, best);
    const int32_t win = static_cast<int32_t>(
        __reduce_min_sync(0xffffffffu, best == win_key ? static_cast<unsigned>(best_e) : ~0u));
#pragma unroll
    for (int w = 0; w < kPerLane; ++w)
      if (lane + 32 * w == win) key[w] = 0;  // taken
    if (lane == k) {
      my_id = win;
      my_prob = expf(key_value(win_key) - mx) / sum;
    }
  }
  const float top_sum = warp_sum<32>(lane < top_k ? my_prob : 0.0f);
  if (lane < top_k) {
    ids[lane] = my_id;
    weights[lane] = my_prob / top_sum;
  }
  if (shared_logit != nullptr && lane == 0) *shared_weight = sigmoidf_(shared_v);
}

__device__ void route_token(const float* p, int64_t experts, int top_k, int32_t* ids,
                            float* weights, const float* shared_logit = nullptr,
                            float* shared_weight = nullptr) {
  static_assert(kMaxExperts == 32 * 32, "the widest form holds kMaxExperts");
  static_assert(kMaxTopK <= 32, "a lane per chosen expert");
  if (experts <= 256)
    route_token_n<8>(p, experts, top_k, ids, weights, shared_logit, shared_weight);
  else if (experts <= 512)
    route_token_n<16>(p, experts, top_k, ids, weights, shared_logit, shared_weight);
  else
    route_token_n<32>(p, experts, top_k, ids, weights, shared_logit, shared_weight);
}

__global__ void route_kernel(const float* logits, int64_t tokens, int64_t experts, int top_k,
                             int32_t* ids, float* weights) {
  pdl_wait();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  if (t >= tokens) return;
  route_token(logits + t * experts, experts, top_k, ids + t * top_k, weights + t * top_k);
}

// grid (ceil(I / 8), T * top_k), 8 warps: warp -> one row r of the intermediate.
__global__ void gate_up_kernel(const void* x, int x_dt, const void* gate_up, int w_dt,
                               int64_t hidden, int64_t inter, int top_k, const int32_t* ids,
                               float* act) {
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t pair = blockIdx.y;  // t * top_k + k
  if (r >= inter) return;
  const int64_t t = pair / top_k;
  const int64_t e = ids[pair];
  const int64_t wg = (e * 2 * inter + r) * hidden;
  const int64_t wu = (e * 2 * inter + inter + r) * hidden;
  float g = 0.0f, u = 0.0f;
  for (int64_t i = lane; i < hidden; i += 32) {
    const float xv = ld(x, x_dt, t * hidden + i);
    g += xv * ld(gate_up, w_dt, wg + i);
    u += xv * ld(gate_up, w_dt, wu + i);
  }
  g = warp_sum<32>(g);
  u = warp_sum<32>(u);
  if (lane == 0) act[pair * inter + r] = siluf_(g) * u;
}

// grid (ceil(H / 8), T), 8 warps: warp -> one output column c.
__global__ void down_kernel(const float* act, const void* down, int w_dt, int64_t hidden,
                            int64_t inter, int top_k, const int32_t* ids, const float* weights,
                            void* out, int out_dt) {
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t t = blockIdx.y;
  if (c >= hidden) return;
  float total = 0.0f;
  for (int k = 0; k < top_k; ++k) {
    const int64_t pair = t * top_k + k;
    const int64_t w = (static_cast<int64_t>(ids[pair]) * hidden + c) * inter;
    float dot = 0.0f;
    for (int64_t r = lane; r < inter; r += 32) dot += act[pair * inter + r] * ld(down, w_dt, w + r);
    total += weights[pair] * warp_sum<32>(dot);
  }
  if (lane == 0) st(out, out_dt, t * hidden + c, total);
}

// bf16 forms of the two kernels above (the decode path of bf16 checkpoints): 16-byte loads of
// eight weights (dot8), several in flight per lane; the scalar loads of the general kernels
// moved 64 bytes per warp per step and ran the experts at 0.6-1.7 TB/s.

// silu(gate row · x) * (up row · x) of one intermediate row, by one warp: lanes take every 32nd
// 16-byte chunk (in column order), then a warp sum. Every lane returns the value.
// kStream: weights through ld_stream with `policy` (the fused decode kernels); else through
// the read-only path (__ldg), whose L1 serves blocks of one SM that share an expert.
template <bool kStream>
__device__ __forceinline__ float silu_gate_up_row(const uint4* xv, const uint4* wg,
                                                  const uint4* wu, int64_t chunks, int lane,
                                                  uint64_t policy = 0) {
  float g = 0.0f, u = 0.0f;
#pragma unroll 4
  for (int64_t c = lane; c < chunks; c += 32) {
    const uint4 xc = __ldg(xv + c);
    g += dot8(xc, kStream ? ld_stream(wg + c, policy) : __ldg(wg + c));
    u += dot8(xc, kStream ? ld_stream(wu + c, policy) : __ldg(wu + c));
  }
  g = warp_sum<32>(g);
  u = warp_sum<32>(u);
  return siluf_(g) * u;
}

__global__ void gate_up_bf16_kernel(const __nv_bfloat16* x, const __nv_bfloat16* gate_up,
                                    int64_t hidden, int64_t inter, int top_k, const int32_t* ids,
                                    float* act) {
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t pair = blockIdx.y;  // t * top_k + k
  if (r >= inter) return;
  const int64_t t = pair / top_k;
  const int64_t e = ids[pair];
  const uint4* wg = reinterpret_cast<const uint4*>(gate_up + (e * 2 * inter + r) * hidden);
  const uint4* wu = reinterpret_cast<const uint4*>(gate_up + (e * 2 * inter + inter + r) * hidden);
  const uint4* xv = reinterpret_cast<const uint4*>(x + t * hidden);
  const float a = silu_gate_up_row<false>(xv, wg, wu, hidden / 8, lane);
  if (lane == 0) act[pair * inter + r] = a;
}

// Lanes walk the (k, 8-column chunk) pairs of all top_k experts of one output column as one
// list, so a lane's loads of different experts are in flight together.
__global__ void down_bf16_kernel(const float* act, const __nv_bfloat16* down, int64_t hidden,
                                 int64_t inter, int top_k, const int32_t* ids,
                                 const float* weights, void* out, int out_dt) {
  pdl_wait();
  __shared__ int32_t s_ids[kMaxTopK];
  __shared__ float s_w[kMaxTopK];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t t = blockIdx.y;
  if (threadIdx.x < top_k) {
    s_ids[threadIdx.x] = ids[t * top_k + threadIdx.x];
    s_w[threadIdx.x] = weights[t * top_k + threadIdx.x];
  }
  __syncthreads();
  if (c >= hidden) return;
  const int chunks = static_cast<int>(inter / 8);  // 32-bit index math: this loop is short
  const int total = chunks * top_k;
  float acc = 0.0f;
#pragma unroll 4
  for (int i = lane; i < total; i += 32) {
    const int k = i / chunks;
    const int ch = i - k * chunks;
    const uint4 wv = __ldg(reinterpret_cast<const uint4*>(
        down + (static_cast<int64_t>(s_ids[k]) * hidden + c) * inter + ch * 8));
    const float4* a4 = reinterpret_cast<const float4*>(act + (t * top_k + k) * inter + ch * 8);
    const float4 a0 = a4[0], a1 = a4[1];
    const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
    const float2 w0 = __bfloat1622float2(w2[0]), w1 = __bfloat1622float2(w2[1]);
    const float2 w2f = __bfloat1622float2(w2[2]), w3 = __bfloat1622float2(w2[3]);
    const float d = a0.x * w0.x + a0.y * w0.y + a0.z * w1.x + a0.w * w1.y + a1.x * w2f.x +
                    a1.y * w2f.y + a1.z * w3.x + a1.w * w3.y;
    acc += s_w[k] * d;
  }
  acc = warp_sum<32>(acc);
  if (lane == 0) st(out, out_dt, t * hidden + c, acc);
}

}  // namespace

void launch_moe_route(const float* logits, int64_t tokens, int64_t experts, int top_k,
                      int32_t* ids, float* weights, cudaStream_t s) {
  BF_CHECK(top_k <= kMaxTopK, "moe: top_k ", top_k, " above ", kMaxTopK);
  BF_CHECK(experts <= kMaxExperts, "moe: ", experts, " experts, at most ", kMaxExperts);
  if (tokens == 0) return;
  launch_pdl(route_kernel, ceil_div(tokens, 4), 128, 0, s, logits, tokens, experts, top_k, ids,
             weights);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_moe_gate_up(const void* x, int x_dt, const void* gate_up, int w_dt, int64_t tokens,
                        int64_t hidden, int64_t inter, int top_k, const int32_t* ids, float* act,
                        cudaStream_t s) {
  if (tokens == 0) return;
  dim3 grid(ceil_div(inter, 8), tokens * top_k);
  if (x_dt == kDtBF16 && w_dt == kDtBF16 && hidden % 8 == 0 && aligned16(x) && aligned16(gate_up))
    launch_pdl(gate_up_bf16_kernel, grid, 256, 0, s, static_cast<const __nv_bfloat16*>(x),
               static_cast<const __nv_bfloat16*>(gate_up), hidden, inter, top_k, ids, act);
  else
    launch_pdl(gate_up_kernel, grid, 256, 0, s, x, x_dt, gate_up, w_dt, hidden, inter, top_k, ids,
               act);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_moe_down(const float* act, const void* down, int w_dt, int64_t tokens, int64_t hidden,
                     int64_t inter, int top_k, const int32_t* ids, const float* weights,
                     void* out, int out_dt, cudaStream_t s) {
  if (tokens == 0) return;
  dim3 grid(ceil_div(hidden, 8), tokens);
  if (w_dt == kDtBF16 && inter % 8 == 0 && aligned16(down) && aligned16(act))
    launch_pdl(down_bf16_kernel, grid, 256, 0, s, act, static_cast<const __nv_bfloat16*>(down),
               hidden, inter, top_k, ids, weights, out, out_dt);
  else
    launch_pdl(down_kernel, grid, 256, 0, s, act, down, w_dt, hidden, inter, top_k, ids, weights,
               out, out_dt);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda

// --- grouped path (many tokens): rows sorted by expert, one GEMM per expert (the backend) ---
namespace bf::cuda {
namespace {
__global__ void swiglu_packed_kernel(const void* gu, int gu_dt, int64_t rows, int64_t inter,
                                     void* act, int act_dt) {
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * inter;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, j = i % inter;
    st(act, act_dt, i, siluf_(ld(gu, gu_dt, r * 2 * inter + j)) * ld(gu, gu_dt, r * 2 * inter + inter + j));
  }
}
// out[t, c] = Σ_k w[t, k] · y[pos[t, k], c], k in order.
__global__ void moe_combine_kernel(const void* y, int y_dt, const int32_t* pos, const float* w,
                                   int64_t hidden, int top_k, void* out, int out_dt) {
  pdl_wait();
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < top_k; ++k)
      acc += w[t * top_k + k] * ld(y, y_dt, static_cast<int64_t>(pos[t * top_k + k]) * hidden + c);
    st(out, out_dt, t * hidden + c, acc);
  }
}
}  // namespace

void launch_swiglu_packed(const void* gu, int gu_dt, int64_t rows, int64_t inter, void* act,
                          int act_dt, cudaStream_t s) {
  if (rows * inter == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((rows * inter + 255) / 256, 65536));
  launch_pdl(swiglu_packed_kernel, blocks, 256, 0, s, gu, gu_dt, rows, inter, act, act_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_moe_combine(const void* y, int y_dt, const int32_t* pos, const float* w,
                        int64_t tokens, int64_t hidden, int top_k, void* out, int out_dt,
                        cudaStream_t s) {
  if (tokens == 0) return;
  launch_pdl(moe_combine_kernel, tokens, 256, 0, s, y, y_dt, pos, w, hidden, top_k, out, out_dt);
  BF_CUDA_LAUNCH_CHECK();
}
}  // namespace bf::cuda

// --- fused decode path (few tokens, bf16): the sparse MoE block in three kernels ---
// Unfused, a decode step's MoE block was ten kernels (router, routing, experts' gate|up and
// down, the shared expert's gate|up, activation and down, its gate, sigmoid scaling, the add);
// at batch 1 each moves little data, so their fixed costs dominated. Here: (1) router and
// shared-gate logits, routed by the last block; (2) gate|up with the activation for every
// (token, routed expert) and the shared expert; (3) all down projections, weighted, summed.
namespace bf::cuda {
namespace {

__device__ __forceinline__ int moe_slots(const MoeDecodeArgs& a) {
  return a.top_k + (a.shared_gate_up != nullptr ? 1 : 0);
}

// Bytes of dynamic shared memory the router takes: with a folded norm, each token's
// normalised row and its residual sum.
int64_t router_smem_bytes(const MoeDecodeArgs& a) {
  return a.norm_residual != nullptr ? 2 * a.tokens * a.hidden * 2 : 0;
}

// The folded norm (see MoeDecodeArgs) of every token, by the whole block: s_sum gets the
// bf16-rounded sums residual + addend, s_x their RMSNorm. Thread i takes chunks i, i + 256, ...
// and the block sum is the norm kernel's, so at hidden <= 2048 (one chunk per thread in both)
// the result equals launch_rms_norm's bit for bit.
__device__ void router_norm_rows(const MoeDecodeArgs& a, const float (&first_w)[8], uint4* s_x,
                                 uint4* s_sum) {
  __shared__ float scratch[32];
  const int64_t chunks = a.hidden / 8;
  for (int64_t t = 0; t < a.tokens; ++t) {
    float sum_sq = 0.0f;
    for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
      const int64_t at = t * chunks + c;
      const uint4 sv = add_bf16x8(__ldcg(reinterpret_cast<const uint4*>(a.norm_residual) + at),
                                  __ldcg(reinterpret_cast<const uint4*>(a.norm_addend) + at));
      const __nv_bfloat16* se = reinterpret_cast<const __nv_bfloat16*>(&sv);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float v = __bfloat162float(se[e]);
        sum_sq += v * v;
      }
      s_sum[at] = sv;
    }
    const float scale =
        rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(a.hidden) + a.norm_eps);
    for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
      const int64_t at = t * chunks + c;
      const uint4 sv = s_sum[at];
      const __nv_bfloat16* se = reinterpret_cast<const __nv_bfloat16*>(&sv);
      uint4 ov;
      __nv_bfloat16* oe = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float wi =
            c == threadIdx.x ? first_w[e] : ld(a.norm_weight, a.norm_weight_dt, c * 8 + e);
        oe[e] = __float2bfloat16(__bfloat162float(se[e]) * scale *
                                 (a.norm_one_centered ? 1.0f + wi : wi));
      }
      s_x[at] = ov;
    }
  }
  __syncthreads();  // every warp reads every token's whole row
}

// grid ceil((E + 1) / 8): a warp per logit row (rows E: the shared gate) for every token.
__global__ void __launch_bounds__(256) moe_router_fused_kernel(MoeDecodeArgs a) {
  extern __shared__ uint4 s_rows[];  // with a folded norm: [T, H / 8] rows, then [T, H / 8] sums
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows = a.experts + (a.shared_gate != nullptr ? 1 : 0);
  const int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t chunks = a.hidden / 8;
  // The row's first kHeld 16-byte chunks per lane (all of a 2048-wide row) load before waiting
  // for the previous kernel (weights, never written by it) so their latency overlaps that
  // kernel's tail; through ld_stream (L2 only, evict-first), which ptxas keeps above the wait
  // as it does __ldcg (see the gemv). Lanes sum their chunks in column order either way.
  constexpr int kHeld = 8;
  const uint4* w = reinterpret_cast<const uint4*>(
      r < a.experts ? a.router + r * a.hidden : a.shared_gate);
  uint4 held[kHeld];
  const uint64_t policy = stream_policy();
#pragma unroll
  for (int i = 0; i < kHeld; ++i) {
    const int64_t c = lane + 32 * i;
    held[i] = r < rows && c < chunks ? ld_stream(w + c, policy) : make_uint4(0, 0, 0, 0);
  }
  const bool norm = a.norm_residual != nullptr;
  float first_norm_w[8];  // the norm's weights of this thread's first chunk, also before the wait
#pragma unroll
  for (int e = 0; e < 8; ++e)
    first_norm_w[e] = norm && threadIdx.x < chunks
                          ? ld(a.norm_weight, a.norm_weight_dt, threadIdx.x * 8 + e)
                          : 0.0f;
  pdl_wait();
  uint4* s_x = s_rows;
  uint4* s_sum = s_rows + a.tokens * chunks;
  if (norm) router_norm_rows(a, first_norm_w, s_x, s_sum);
  if (r < rows) {
    for (int64_t t = 0; t < a.tokens; ++t) {
      // The rows come from shared memory with a folded norm, else from x (global).
      const uint4* x = norm ? s_x + t * chunks : reinterpret_cast<const uint4*>(a.x + t * a.hidden);
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < kHeld; ++i)
        if (lane + 32 * i < chunks) acc += dot8(x[lane + 32 * i], held[i]);
#pragma unroll 4
      for (int64_t c = lane + 32 * kHeld; c < chunks; c += 32)
        acc += dot8(x[c], ld_stream(w + c, policy));
      acc = warp_sum<32>(acc);
      if (lane == 0) a.logits[t * rows + r] = acc;
    }
  }
  // The last block to finish sees every logit and routes. The barrier, then one thread's
  // acquire-release increment (CUTLASS's grid barriers use this pattern): the release
  // publishes the block's logits (ordered before it by the barrier), the last block's acquire
  // makes everyone's visible to it; no separate fences (they cost ~0.5 us each at batch 1).
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    ::cuda::atomic_ref<unsigned, ::cuda::thread_scope_device> count(*a.counter);
    last = count.fetch_add(1u, ::cuda::memory_order_acq_rel) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  if (norm) {  // every block has read the residual (each counted after its reads)
    for (int64_t i = threadIdx.x; i < a.tokens * chunks; i += blockDim.x) {
      reinterpret_cast<uint4*>(a.norm_residual)[i] = s_sum[i];
      reinterpret_cast<uint4*>(a.norm_out)[i] = s_x[i];
    }
  }
  const int slots = moe_slots(a);
  for (int64_t t = warp; t < a.tokens; t += 8) {
    const bool shared = a.shared_gate != nullptr;
    route_token(a.logits + t * rows, a.experts, a.top_k, a.ids + t * a.top_k,
                a.weights + t * slots, shared ? a.logits + t * rows + a.experts : nullptr,
                shared ? a.weights + t * slots + a.top_k : nullptr);
  }
  if (threadIdx.x == 0) *a.counter = 0;  // ready for the next launch (and graph replay)
}

// grid (ceil(max(I, Is) / 8), T * slots): a warp per intermediate row r of one (token, slot);
// slot k < top_k is the token's k-th routed expert, slot top_k the shared expert.
__global__ void __launch_bounds__(256) moe_gate_up_fused_kernel(MoeDecodeArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slots = moe_slots(a);
  const int64_t t = blockIdx.y / slots;
  const int j = static_cast<int>(blockIdx.y % slots);
  const int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const bool shared = j == a.top_k;
  const int64_t inter = shared ? a.shared_inter : a.inter;
  pdl_wait();  // by every block before any exits: the down kernel relies on it (see there)
  if (r >= inter) return;
  const __nv_bfloat16* base =
      shared ? a.shared_gate_up
             : a.gate_up + static_cast<int64_t>(a.ids[t * a.top_k + j]) * 2 * a.inter * a.hidden;
  const uint4* wg = reinterpret_cast<const uint4*>(base + r * a.hidden);
  const uint4* wu = reinterpret_cast<const uint4*>(base + (inter + r) * a.hidden);
  const uint4* xv = reinterpret_cast<const uint4*>(a.x + t * a.hidden);
  // One token reads each expert once; more may share one (and all read the shared expert).
  const float act = silu_gate_up_row<true>(xv, wg, wu, a.hidden / 8, lane,
                                           stream_policy(a.tokens == 1));
  if (lane == 0) a.act[(t * slots + j) * a.act_stride + r] = act;
}

__device__ __forceinline__ float dot8_f32(const float* a, const uint4& w) {
  const float4 a0 = *reinterpret_cast<const float4*>(a);
  const float4 a1 = *reinterpret_cast<const float4*>(a + 4);
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&w);
  const float2 w0 = __bfloat1622float2(w2[0]), w1 = __bfloat1622float2(w2[1]);
  const float2 w2f = __bfloat1622float2(w2[2]), w3 = __bfloat1622float2(w2[3]);
  return a0.x * w0.x + a0.y * w0.y + a0.z * w1.x + a0.w * w1.y + a1.x * w2f.x + a1.y * w2f.y +
         a1.z * w3.x + a1.w * w3.y;
}

// grid (ceil(H / 8), T): a warp per output column c of one token. Its lanes walk the
// (slot, 8-row chunk) pairs of all slots as one list, kLoads 16-byte weight loads in flight
// per lane (the routed slots first, in order, then the shared expert).
__global__ void __launch_bounds__(256) moe_down_fused_kernel(MoeDecodeArgs a) {
  // Ten loads per lane per round: a 35B-A3B column's 18 (slot, chunk) pairs per lane take two
  // rounds (the first before the wait) instead of three with 8. Same H200 call, 4 rounds,
  // graph ms, 8 / 10 / 12 / 18 (all before the wait): B=1 2.40-2.45 / 2.38-2.39 / 2.39-2.49 /
  // 2.57-2.59; B=2 3.34-3.36 / 3.24-3.28 / 3.24-3.32 / 3.53-3.57 (bench/NOTES.md).
  constexpr int kLoads = 10;
  __shared__ int32_t s_ids[kMaxTopK];
  __shared__ float s_w[kMaxTopK + 1];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 8 + warp;
  const int64_t t = blockIdx.y;
  const int slots = moe_slots(a);
  // The routing was written by the router, two launches back, which is complete once this grid
  // runs: a PDL grid starts only after every block of the one before (gate/up) passed its
  // pdl_wait, which returned only after the router finished. So the routing is read, and the
  // first round of down weights requested, before waiting for gate/up's activations; through
  // L2 (__ldcg: no stale L1 line from an earlier replay, and ptxas keeps these loads above the
  // wait).
  if (threadIdx.x < a.top_k) s_ids[threadIdx.x] = __ldcg(a.ids + t * a.top_k + threadIdx.x);
  if (threadIdx.x < slots) s_w[threadIdx.x] = __ldcg(a.weights + t * slots + threadIdx.x);
  __syncthreads();
  const bool live = c < a.hidden;
  const int routed_chunks = static_cast<int>(a.inter / 8);
  const int routed = routed_chunks * a.top_k;
  const int total =
      live ? routed + (a.shared_down != nullptr ? static_cast<int>(a.shared_inter / 8) : 0) : 0;
  const float* act = a.act + t * slots * a.act_stride;
  uint4 w[kLoads];
  const uint64_t policy = stream_policy(a.tokens == 1);
  const float* ap[kLoads];
  float scale[kLoads];
  // The kLoads (slot, 8-row chunk) pairs of a round, i0 + 32u: weights, their act rows, scales.
  auto load_round = [&](int i0) {
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int i = i0 + 32 * u;
      w[u] = make_uint4(0, 0, 0, 0);
      ap[u] = act;
      scale[u] = 0.0f;
      if (i < routed) {
        const int k = i / routed_chunks, ch = i - k * routed_chunks;
        w[u] = ld_stream(reinterpret_cast<const uint4*>(
            a.down + (static_cast<int64_t>(s_ids[k]) * a.hidden + c) * a.inter + ch * 8), policy);
        ap[u] = act + k * a.act_stride + ch * 8;
        scale[u] = s_w[k];
      } else if (i < total) {
        const int ch = i - routed;
        w[u] = ld_stream(reinterpret_cast<const uint4*>(a.shared_down + c * a.shared_inter + ch * 8),
                         policy);
        ap[u] = act + a.top_k * a.act_stride + ch * 8;
        scale[u] = s_w[a.top_k];
      }
    }
  };
  load_round(lane);
  pdl_wait();  // act (gate/up's output) is read, and out written, only after this
  if (!live) return;
  float acc = 0.0f;
  for (int i0 = lane; i0 < total; i0 += 32 * kLoads) {
    if (i0 != lane) load_round(i0);
#pragma unroll
    for (int u = 0; u < kLoads; ++u)
      if (i0 + 32 * u < total) acc += scale[u] * dot8_f32(ap[u], w[u]);
  }
  acc = warp_sum<32>(acc);
  if (lane == 0) st(a.out, a.out_dt, t * a.hidden + c, acc);
}

bool aligned16_or_null(const void* p) {
  return p == nullptr || aligned16(p);
}

}  // namespace

bool moe_decode_fused_supported(const MoeDecodeArgs& a) {
  const bool shared = a.shared_gate_up != nullptr;
  return a.tokens >= 1 && a.tokens <= kMoeDecodeMaxTokens && a.top_k >= 1 && a.top_k <= kMaxTopK &&
         a.experts >= a.top_k && a.experts <= kMaxExperts && a.hidden % 8 == 0 &&
         a.inter % 8 == 0 && a.inter > 0 &&
         (!shared || (a.shared_inter % 8 == 0 && a.shared_inter > 0 && a.shared_down != nullptr &&
                      a.shared_gate != nullptr)) &&
         aligned16(a.x) && aligned16(a.router) && aligned16(a.gate_up) && aligned16(a.down) &&
         aligned16_or_null(a.shared_gate_up) && aligned16_or_null(a.shared_down) &&
         aligned16_or_null(a.shared_gate) &&
         (a.norm_residual == nullptr ||
          (a.norm_addend != nullptr && a.norm_weight != nullptr && a.norm_out != nullptr &&
           a.norm_out == a.x && aligned16(a.norm_residual) && aligned16(a.norm_addend) &&
           router_smem_bytes(a) <= 48 * 1024));
}

void launch_moe_decode_fused(const MoeDecodeArgs& a, cudaStream_t s) {
  BF_CHECK(moe_decode_fused_supported(a), "moe_decode_fused: unsupported shape");
  const bool shared = a.shared_gate_up != nullptr;
  const int slots = a.top_k + (shared ? 1 : 0);
  const int64_t rows = a.experts + (shared ? 1 : 0);
  const int64_t max_inter = std::max(a.inter, shared ? a.shared_inter : int64_t{0});
  BF_CHECK(a.act_stride >= max_inter && a.act_stride % 4 == 0, "moe_decode_fused: act stride");
  static const bool raised = [] {  // a spread grid's share may pass 48 KB
    allow_spread_smem(moe_router_fused_kernel, 48 * 1024);
    return true;
  }();
  (void)raised;
  // The router's 33 blocks (256 experts) one per SM: 35B-A3B batch 2 3.43 / 3.44 -> 3.35 / 3.38
  // ms on top of the GDN kernel's spread (same call), batch 1 within noise.
  const int router_blocks = ceil_div(rows, 8);
  launch_pdl(moe_router_fused_kernel, dim3(router_blocks), dim3(256),
             spread_smem_bytes(router_blocks, static_cast<size_t>(router_smem_bytes(a)), "router"),
             s, a);
  BF_CUDA_LAUNCH_CHECK();
  launch_pdl(moe_gate_up_fused_kernel, dim3(ceil_div(max_inter, 8), a.tokens * slots), dim3(256), 0,
             s, a);
  BF_CUDA_LAUNCH_CHECK();
  launch_pdl(moe_down_fused_kernel, dim3(ceil_div(a.hidden, 8), a.tokens), dim3(256), 0, s, a);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
