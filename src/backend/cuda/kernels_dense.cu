// Dense kernels: embedding gather, the RMSNorms (plain, fused residual add, gated), NeoX RoPE,
// elementwise gates and the layout ops. One block per row for the reductions (f32 sums).
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

__global__ void embedding_kernel(const int32_t* ids, const void* table, int table_dt,
                                 int64_t hidden, void* out, int out_dt) {
  pdl_wait();
  const int64_t row = blockIdx.x;
  const int64_t src = static_cast<int64_t>(ids[row]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
    st(out, out_dt, row * hidden + i, ld(table, table_dt, src + i));
}

__global__ void rms_norm_kernel(const void* x, int x_dt, void* residual, int res_dt,
                                const void* w, int w_dt, int64_t dim, float eps, bool one_centered,
                                void* out, int out_dt) {
  pdl_wait();
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  float sum_sq = 0.0f;
  if (residual != nullptr) {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      // Store the sum first; the norm is taken of what is stored (x may alias out).
      st(residual, res_dt, base + i, ld(residual, res_dt, base + i) + ld(x, x_dt, base + i));
      const float r = ld(residual, res_dt, base + i);
      sum_sq += r * r;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = ld(x, x_dt, base + i);
      sum_sq += v * v;
    }
  }
  const float total = block_sum(sum_sq, scratch);
  const float scale = rsqrtf(total / static_cast<float>(dim) + eps);
  const void* src = residual != nullptr ? residual : x;
  const int src_dt = residual != nullptr ? res_dt : x_dt;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float wi = ld(w, w_dt, i);
    st(out, out_dt, base + i, ld(src, src_dt, base + i) * scale * (one_centered ? 1.0f + wi : wi));
  }
}

// The bf16 fast path of rms_norm_kernel: each thread keeps kChunks 16-byte chunks (8 values)
// of the row in registers, so the row is read once with vector loads and the residual sum is
// not re-read after its store (a one-row decode step is latency-bound: the generic kernel's
// scalar store-then-load per element took ~7 us for 5120 values). Same arithmetic: the sum is
// rounded to bf16 as stored and the norm taken of the rounded values.
template <int kChunks>
__global__ void rms_norm_bf16_kernel(const __nv_bfloat16* x, __nv_bfloat16* residual,
                                     const void* w, int w_dt, int64_t dim, float eps,
                                     bool one_centered, __nv_bfloat16* out) {
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  const int chunks = static_cast<int>(dim / 8);
  // The norm's weights (never written by a kernel) before waiting for the rows.
  float scale_w[kChunks][8];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int chunk = threadIdx.x + c * blockDim.x;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float wi = chunk < chunks ? ld(w, w_dt, chunk * 8 + e) : 0.0f;
      scale_w[c][e] = one_centered ? 1.0f + wi : wi;
    }
  }
  pdl_wait();
  float v[kChunks][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int chunk = threadIdx.x + c * blockDim.x;
    if (chunk >= chunks) continue;
    const int64_t at = base + chunk * 8;
    uint4 xv = *reinterpret_cast<const uint4*>(x + at);
    const __nv_bfloat16* xe = reinterpret_cast<const __nv_bfloat16*>(&xv);
    if (residual != nullptr) {
      const uint4 sv = add_bf16x8(*reinterpret_cast<const uint4*>(residual + at), xv);
      const __nv_bfloat16* se = reinterpret_cast<const __nv_bfloat16*>(&sv);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[c][e] = __bfloat162float(se[e]);
      *reinterpret_cast<uint4*>(residual + at) = sv;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[c][e] = __bfloat162float(xe[e]);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sum_sq += v[c][e] * v[c][e];
  }
  const float scale = rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int chunk = threadIdx.x + c * blockDim.x;
    if (chunk >= chunks) continue;
    uint4 ov;
    __nv_bfloat16* oe = reinterpret_cast<__nv_bfloat16*>(&ov);
#pragma unroll
    for (int e = 0; e < 8; ++e) oe[e] = __float2bfloat16(v[c][e] * scale * scale_w[c][e]);
    *reinterpret_cast<uint4*>(out + base + chunk * 8) = ov;
  }
}

__global__ void gated_rms_norm_kernel(const void* o, int o_dt, const void* z, int z_dt,
                                      const void* w, int w_dt, int64_t dim, float eps, void* out,
                                      int out_dt) {
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * dim;
  // The first element's weight (never written by a kernel) before the wait.
  const float w0 = threadIdx.x < dim ? ld(w, w_dt, threadIdx.x) : 0.0f;
  pdl_wait();
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = ld(o, o_dt, base + i);
    sum_sq += v * v;
  }
  const float scale = rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(dim) + eps);
  __syncthreads();  // every thread has read o before out (which may alias it) is written
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    st(out, out_dt, base + i,
       (i == threadIdx.x ? w0 : ld(w, w_dt, i)) * ld(o, o_dt, base + i) * scale *
           siluf_(ld(z, z_dt, base + i)));
}

// One block per token; threads over (head, pair).
__global__ void rope_kernel(void* x, int dt, const int32_t* positions, int64_t heads,
                            int64_t head_dim, int32_t rotary_dim, float theta) {
  pdl_wait();
  const int64_t t = blockIdx.x;
  const int32_t half = rotary_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int64_t h = idx / half;
    const int32_t i = static_cast<int32_t>(idx % half);
    // HF in f32: inv_freq = 1 / theta^(2i / dim); angle = position * inv_freq.
    const float inv_freq =
        1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(rotary_dim));
    float sn, cs;
    sincosf(pos * inv_freq, &sn, &cs);
    const int64_t base = (t * heads + h) * head_dim;
    const float x1 = ld(x, dt, base + i), x2 = ld(x, dt, base + i + half);
    st(x, dt, base + i, x1 * cs - x2 * sn);
    st(x, dt, base + i + half, x2 * cs + x1 * sn);
  }
}

__global__ void binary_kernel(int op, const void* a, int a_dt, const void* b, int b_dt, void* out,
                              int out_dt, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = ld(a, a_dt, i), y = ld(b, b_dt, i);
    float r;
    if (op == 0)
      r = siluf_(x) * y;
    else if (op == 1)
      r = x * sigmoidf_(y);
    else
      r = x + y;
    st(out, out_dt, i, r);
  }
}

__global__ void split_columns_kernel(const void* x, int x_dt, int64_t cols, ColumnParts parts,
                                     int out_dt) {
  pdl_wait();
  const int64_t r = blockIdx.x;
  const int part = blockIdx.y;
  const int64_t begin = parts.begin[part], width = parts.begin[part + 1] - begin;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x)
    st(parts.out[part], out_dt, r * width + i, ld(x, x_dt, r * cols + begin + i));
}

__global__ void sigmoid_scale_rows_kernel(void* x, int x_dt, int64_t cols, const void* gate,
                                          int gate_dt) {
  pdl_wait();
  const int64_t r = blockIdx.x;
  const float scale = sigmoidf_(ld(gate, gate_dt, r));
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
    st(x, x_dt, r * cols + i, ld(x, x_dt, r * cols + i) * scale);
}

int row_threads(int64_t dim) {
  int threads = 32;
  while (threads < dim && threads < 1024) threads *= 2;
  return threads;
}

}  // namespace

void launch_embedding(const int32_t* ids, int64_t n, const void* table, int table_dt,
                      int64_t vocab, int64_t hidden, void* out, int out_dt, cudaStream_t s) {
  if (n == 0) return;
  launch_pdl(embedding_kernel, n, row_threads(hidden), 0, s, ids, table, table_dt, hidden, out,
             out_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_rms_norm(const void* x, int x_dt, void* residual, int res_dt, const void* w, int w_dt,
                     int64_t rows, int64_t dim, float eps, bool one_centered, void* out,
                     int out_dt, cudaStream_t s) {
  if (rows == 0) return;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int64_t chunks = dim / 8;
  const bool vector = x_dt == kDtBF16 && out_dt == kDtBF16 &&
                      (residual == nullptr || res_dt == kDtBF16) && dim % 8 == 0 &&
                      chunks <= 4 * 1024 && aligned(x) && aligned(out) &&
                      (residual == nullptr || aligned(residual));
  if (vector) {
    const int per_thread = chunks <= 1024 ? 1 : chunks <= 2048 ? 2 : 4;
    const int threads = static_cast<int>((ceil_div(chunks, per_thread) + 31) / 32 * 32);
    auto* xb = static_cast<const __nv_bfloat16*>(x);
    auto* rb = static_cast<__nv_bfloat16*>(residual);
    auto* ob = static_cast<__nv_bfloat16*>(out);
    if (per_thread == 1)
      launch_pdl(rms_norm_bf16_kernel<1>, rows, threads, 0, s, xb, rb, w, w_dt, dim, eps,
                 one_centered, ob);
    else if (per_thread == 2)
      launch_pdl(rms_norm_bf16_kernel<2>, rows, threads, 0, s, xb, rb, w, w_dt, dim, eps,
                 one_centered, ob);
    else
      launch_pdl(rms_norm_bf16_kernel<4>, rows, threads, 0, s, xb, rb, w, w_dt, dim, eps,
                 one_centered, ob);
  } else {
    launch_pdl(rms_norm_kernel, rows, row_threads(dim), 0, s, x, x_dt, residual, res_dt, w, w_dt,
               dim, eps, one_centered, out, out_dt);
  }
  BF_CUDA_LAUNCH_CHECK();
}

void launch_gated_rms_norm(const void* o, int o_dt, const void* z, int z_dt, const void* w,
                           int w_dt, int64_t rows, int64_t dim, float eps, void* out, int out_dt,
                           cudaStream_t s) {
  if (rows == 0) return;
  launch_pdl(gated_rms_norm_kernel, rows, row_threads(dim), 0, s, o, o_dt, z, z_dt, w, w_dt, dim,
             eps, out, out_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_rope(void* x, int dt, const int32_t* positions, int64_t tokens, int64_t heads,
                 int64_t head_dim, int32_t rotary_dim, float theta, cudaStream_t s) {
  if (tokens == 0) return;
  launch_pdl(rope_kernel, tokens, row_threads(heads * (rotary_dim / 2)), 0, s, x, dt, positions,
             heads, head_dim, rotary_dim, theta);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_binary(int op, const void* a, int a_dt, const void* b, int b_dt, void* out,
                   int out_dt, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65536));
  launch_pdl(binary_kernel, blocks, threads, 0, s, op, a, a_dt, b, b_dt, out, out_dt, n);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_slice_columns(const void* x, int x_dt, int64_t rows, int64_t cols, int64_t begin,
                          int64_t width, void* out, int out_dt, cudaStream_t s) {
  if (width == 0) return;
  ColumnParts one;  // a split of one part that starts at `begin`
  one.out[0] = out;
  one.begin[0] = begin;
  one.begin[1] = begin + width;
  one.count = 1;
  launch_split_columns(x, x_dt, rows, cols, one, out_dt, s);
}

void launch_split_columns(const void* x, int x_dt, int64_t rows, int64_t cols,
                          const ColumnParts& parts, int out_dt, cudaStream_t s) {
  if (rows == 0 || parts.count == 0) return;
  int64_t widest = 0;
  for (int i = 0; i < parts.count; ++i)
    widest = std::max(widest, parts.begin[i + 1] - parts.begin[i]);
  launch_pdl(split_columns_kernel, dim3(static_cast<unsigned>(rows), parts.count),
             row_threads(widest), 0, s, x, x_dt, cols, parts, out_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_sigmoid_scale_rows(void* x, int x_dt, int64_t rows, int64_t cols, const void* gate,
                               int gate_dt, cudaStream_t s) {
  if (rows == 0) return;
  launch_pdl(sigmoid_scale_rows_kernel, rows, row_threads(cols), 0, s, x, x_dt, cols, gate,
             gate_dt);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda

namespace bf::cuda {
namespace {
__global__ void fill_uniform_kernel(void* p, int dt, int64_t n, float scale, uint64_t seed) {
  pdl_wait();
  // The same values as Backend::random_weight on the host: splitmix64 of (seed, index).
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i);
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    const double u = static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
    st(p, dt, i, static_cast<float>((2.0 * u - 1.0) * scale));
  }
}
}  // namespace

void launch_fill_uniform(void* p, int dt, int64_t n, float scale, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, 65536));
  launch_pdl(fill_uniform_kernel, blocks, 256, 0, s, p, dt, n, scale, seed);
  BF_CUDA_LAUNCH_CHECK();
}
}  // namespace bf::cuda

namespace bf::cuda {
namespace {
// 8 warps per block; warp -> out[r, c].
__global__ void matmul_simt_kernel(const void* x, int x_dt, const void* w, int w_dt, void* out,
                                   int out_dt, int64_t m, int64_t n, int64_t k) {
  pdl_wait();
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (idx >= m * n) return;
  const int64_t r = idx / n, c = idx % n;
  float acc = 0.0f;
  for (int64_t i = lane; i < k; i += 32) acc += ld(x, x_dt, r * k + i) * ld(w, w_dt, c * k + i);
  acc = warp_sum<32>(acc);
  if (lane == 0) st(out, out_dt, idx, acc);
}
}  // namespace

void launch_matmul_simt(const void* x, int x_dt, const void* w, int w_dt, void* out, int out_dt,
                        int64_t m, int64_t n, int64_t k, cudaStream_t s) {
  if (m * n == 0) return;
  launch_pdl(matmul_simt_kernel, ceil_div(m * n, 8), 256, 0, s, x, x_dt, w, w_dt, out, out_dt, m, n,
             k);
  BF_CUDA_LAUNCH_CHECK();
}
}  // namespace bf::cuda
