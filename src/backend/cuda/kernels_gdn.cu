// Gated DeltaNet front half: causal depthwise conv1d + SiLU over each sequence's new tokens
// from its conv state (one thread per (sequence, channel), the window in registers), with the
// verify mode that writes the window after each token to its snapshot slot; and the gates.
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kMaxKernel = 8;

// kMaxTaps: at least `kernel`, 4 (Qwen3.5) or kMaxKernel. The window and taps live in
// registers: every loop over them is unrolled to kMaxTaps with the live taps guarded (a loop
// to the run-time `kernel` put them in local memory, a load and store per tap and token).
template <int kMaxTaps>
__global__ void conv1d_kernel(const void* x, int x_dt, const void* w, int w_dt, int64_t conv_dim,
                              int kernel, DeviceBatch b, float* state, void* out, int out_dt) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const SeqInfo seq = b.seqs[blockIdx.y];
  if (c >= conv_dim || seq.query_len == 0) {
    pdl_wait();  // every thread waits before exiting (a later kernel may rely on it)
    return;
  }
  const int history = kernel - 1;
  float win[kMaxTaps - 1];  // the last `history` inputs, oldest first
  float wt[kMaxTaps];
  // The weights and this channel's conv state (last written by this layer's kernel in an
  // earlier forward pass) are read before waiting for the projection just before; its output
  // x only after.
#pragma unroll
  for (int j = 0; j < kMaxTaps; ++j) wt[j] = j < kernel ? ld(w, w_dt, c * kernel + j) : 0.0f;
  float last_tap = 0.0f;  // wt[history], by constant indices
#pragma unroll
  for (int j = 0; j < kMaxTaps; ++j)
    if (j == history) last_tap = wt[j];
  float* slot = state + (static_cast<int64_t>(seq.state_slot) * conv_dim + c) * history;
#pragma unroll
  for (int j = 0; j < kMaxTaps - 1; ++j)
    win[j] = j < history && seq.num_computed > 0 ? __ldcg(slot + j) : 0.0f;
  pdl_wait();
  const bool snapshots = seq.snapshot_offset >= 0;
  // The inputs and snapshot slots of kInputsAhead tokens are loaded before any of them is
  // used: the stores below may alias them as far as the compiler knows, so a load per token
  // would wait for the previous token's stores, one memory latency per token (~0.7 us: a
  // 16-token verify block took 12 us per layer, with the inputs alone hoisted as well).
  constexpr int kInputsAhead = 8;
  for (int t0 = 0; t0 < seq.query_len; t0 += kInputsAhead) {
    float inputs[kInputsAhead];
    int32_t snaps[kInputsAhead];
#pragma unroll
    for (int u = 0; u < kInputsAhead; ++u) {
      const bool live = t0 + u < seq.query_len;
      inputs[u] = live ? ld(x, x_dt, static_cast<int64_t>(seq.query_start + t0 + u) * conv_dim + c)
                       : 0.0f;
      snaps[u] = live && snapshots ? b.snapshots[seq.snapshot_offset + t0 + u] : 0;
    }
#pragma unroll
    for (int u = 0; u < kInputsAhead; ++u) {
      const int t = t0 + u;
      if (t >= seq.query_len) break;
      const int64_t idx = static_cast<int64_t>(seq.query_start + t) * conv_dim + c;
      const float input = inputs[u];
      float acc = last_tap * input;
#pragma unroll
      for (int j = 0; j < kMaxTaps - 1; ++j)
        if (j < history) acc += wt[j] * win[j];
#pragma unroll
      for (int j = 0; j < kMaxTaps - 1; ++j)
        if (j < history) win[j] = j + 1 < history ? win[j + 1] : input;
      st(out, out_dt, idx, siluf_(acc));
      if (snapshots) {
        float* dst = state + (static_cast<int64_t>(snaps[u]) * conv_dim + c) * history;
#pragma unroll
        for (int j = 0; j < kMaxTaps - 1; ++j)
          if (j < history) dst[j] = win[j];
      }
    }
  }
  if (!snapshots)
#pragma unroll
    for (int j = 0; j < kMaxTaps - 1; ++j)
      if (j < history) slot[j] = win[j];
}

__global__ void gates_kernel(const void* a, int a_dt, const void* bb, int b_dt, const void* A_log,
                             int A_dt, const void* dt_bias, int dtb_dt, int64_t n, int64_t hv,
                             void* g, int g_dt, void* beta, int beta_dt) {
  // The first element's parameters (weights, never written by a kernel) before the wait.
  const int64_t i0 = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const float bias0 = i0 < n ? ld(dt_bias, dtb_dt, i0 % hv) : 0.0f;
  const float decay0 = i0 < n ? -expf(ld(A_log, A_dt, i0 % hv)) : 0.0f;
  pdl_wait();
  for (int64_t i = i0; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t h = i % hv;
    const float av = ld(a, a_dt, i), bv = ld(bb, b_dt, i);
    const float x = av + (i == i0 ? bias0 : ld(dt_bias, dtb_dt, h));
    const float softplus = x > 20.0f ? x : log1pf(expf(x));
    st(g, g_dt, i, (i == i0 ? decay0 : -expf(ld(A_log, A_dt, h))) * softplus);
    st(beta, beta_dt, i, 1.0f / (1.0f + expf(-bv)));
  }
}

}  // namespace

void launch_causal_conv1d(const void* x, int x_dt, const void* w, int w_dt, int64_t conv_dim,
                          int64_t kernel, const DeviceBatch& b, float* conv_state, void* out,
                          int out_dt, cudaStream_t s) {
  BF_CHECK(kernel >= 1 && kernel <= kMaxKernel, "causal_conv1d: kernel size ", kernel,
           " not supported (at most ", kMaxKernel, ")");
  if (b.num_seqs == 0) return;
  dim3 grid(ceil_div(conv_dim, 128), b.num_seqs);
  launch_pdl(kernel <= 4 ? conv1d_kernel<4> : conv1d_kernel<kMaxKernel>, grid, 128, 0, s, x, x_dt,
             w, w_dt, conv_dim, static_cast<int>(kernel), b, conv_state, out, out_dt);
  BF_CUDA_LAUNCH_CHECK();
}

void launch_gdn_gates(const void* a, int a_dt, const void* bb, int b_dt, const void* A_log,
                      int A_dt, const void* dt_bias, int dtb_dt, int64_t tokens, int64_t hv,
                      void* g, int g_dt, void* beta, int beta_dt, cudaStream_t s) {
  const int64_t n = tokens * hv;
  if (n == 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, 65536));
  launch_pdl(gates_kernel, blocks, 256, 0, s, a, a_dt, bb, b_dt, A_log, A_dt, dt_bias, dtb_dt, n,
             hv, g, g_dt, beta, beta_dt);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
