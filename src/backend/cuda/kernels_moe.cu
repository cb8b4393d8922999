// Routed experts of Qwen3.5-MoE, the simple form: routing on the device (f32 softmax, top-k
// with ties to the lower expert index, renormalised), then warp-per-row GEMVs over each
// token's chosen experts (gate|up with SiLU, then the weighted sum of the down projections,
// in k order). Reads only the chosen experts: right for decode; prefill re-reads weights per
// token (a grouped GEMM is the planned replacement).
#include <cfloat>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kMaxTopK = 32;
constexpr int kMaxExperts = 1024;

// One warp per token: lanes stride over the experts; k rounds of a warp argmax (ties to the
// lower index), each removing its winner.
__global__ void route_kernel(const float* logits, int64_t tokens, int64_t experts, int top_k,
                             int32_t* ids, float* weights) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= tokens) return;
  const float* p = logits + t * experts;
  float mx = -FLT_MAX;
  for (int64_t e = lane; e < experts; e += 32) mx = fmaxf(mx, p[e]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int64_t e = lane; e < experts; e += 32) sum += expf(p[e] - mx);
  sum = warp_sum<32>(sum);
  uint32_t taken = 0;  // bit w: this lane's expert lane + 32 w is already chosen
  float prob[kMaxTopK];
  int32_t chosen[kMaxTopK];
  float top_sum = 0.0f;
  for (int k = 0; k < top_k; ++k) {
    float best_v = -FLT_MAX;
    int32_t best = 0x7fffffff;
    for (int64_t e = lane, w = 0; e < experts; e += 32, ++w) {
      if (((taken >> w) & 1u) == 0 && (p[e] > best_v || (p[e] == best_v && e < best))) {
        best_v = p[e];
        best = static_cast<int32_t>(e);
      }
      (void)w;
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
      const int32_t oi = __shfl_xor_sync(0xffffffffu, best, o);
      if (ov > best_v || (ov == best_v && oi < best)) {
        best_v = ov;
        best = oi;
      }
    }
    if (best % 32 == lane) taken |= 1u << (best / 32);
    chosen[k] = best;
    prob[k] = expf(best_v - mx) / sum;
    top_sum += prob[k];
  }
  if (lane == 0)
    for (int k = 0; k < top_k; ++k) {
      ids[t * top_k + k] = chosen[k];
      weights[t * top_k + k] = prob[k] / top_sum;
    }
}

// grid (ceil(I / 8), T * top_k), 8 warps: warp -> one row r of the intermediate.
__global__ void gate_up_kernel(const void* x, int x_dt, const void* gate_up, int w_dt,
                               int64_t hidden, int64_t inter, int top_k, const int32_t* ids,
                               float* act) {
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

}  // namespace

void launch_moe_route(const float* logits, int64_t tokens, int64_t experts, int top_k,
                      int32_t* ids, float* weights, cudaStream_t s) {
  BF_CHECK(top_k <= kMaxTopK, "moe: top_k ", top_k, " above ", kMaxTopK);
  BF_CHECK(experts <= kMaxExperts, "moe: ", experts, " experts, at most ", kMaxExperts);
  if (tokens == 0) return;
  route_kernel<<<ceil_div(tokens, 4), 128, 0, s>>>(logits, tokens, experts, top_k, ids, weights);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_moe_gate_up(const void* x, int x_dt, const void* gate_up, int w_dt, int64_t tokens,
                        int64_t hidden, int64_t inter, int top_k, const int32_t* ids, float* act,
                        cudaStream_t s) {
  if (tokens == 0) return;
  dim3 grid(ceil_div(inter, 8), tokens * top_k);
  gate_up_kernel<<<grid, 256, 0, s>>>(x, x_dt, gate_up, w_dt, hidden, inter, top_k, ids, act);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_moe_down(const float* act, const void* down, int w_dt, int64_t tokens, int64_t hidden,
                     int64_t inter, int top_k, const int32_t* ids, const float* weights,
                     void* out, int out_dt, cudaStream_t s) {
  if (tokens == 0) return;
  dim3 grid(ceil_div(hidden, 8), tokens);
  down_kernel<<<grid, 256, 0, s>>>(act, down, w_dt, hidden, inter, top_k, ids, weights, out,
                                   out_dt);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda

// --- grouped path (many tokens): rows sorted by expert, one GEMM per expert (the backend) ---
namespace bf::cuda {
namespace {
__global__ void swiglu_packed_kernel(const void* gu, int gu_dt, int64_t rows, int64_t inter,
                                     void* act, int act_dt) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * inter;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / inter, j = i % inter;
    st(act, act_dt, i, siluf_(ld(gu, gu_dt, r * 2 * inter + j)) * ld(gu, gu_dt, r * 2 * inter + inter + j));
  }
}
// out[t, c] = Σ_k w[t, k] · y[pos[t, k], c], k in order.
__global__ void moe_combine_kernel(const void* y, int y_dt, const int32_t* pos, const float* w,
                                   int64_t hidden, int top_k, void* out, int out_dt) {
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
  swiglu_packed_kernel<<<blocks, 256, 0, s>>>(gu, gu_dt, rows, inter, act, act_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_moe_combine(const void* y, int y_dt, const int32_t* pos, const float* w,
                        int64_t tokens, int64_t hidden, int top_k, void* out, int out_dt,
                        cudaStream_t s) {
  if (tokens == 0) return;
  moe_combine_kernel<<<tokens, 256, 0, s>>>(y, y_dt, pos, w, hidden, top_k, out, out_dt);
  BF_CUDA_LAUNCH_CHECK();
}
}  // namespace bf::cuda
