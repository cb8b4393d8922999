// CPU reference of the Gated DeltaNet front half: the causal depthwise conv1d (+SiLU) that
// continues from a per-slot conv state, and the delta-rule gates. The conv runs token by
// token over a rolling window of the last kernel-1 inputs per channel (oldest first), which
// is exactly the layout of the conv state, so prefill, chunked prefill and decode are one
// code path. The delta rule itself is in cpu_delta_rule.cpp.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_util.h"

namespace bf::cpu {
namespace {

// Checks the conv arguments; returns {conv_dim, kernel, num_slots}.
struct ConvDims {
  int64_t conv_dim, kernel, num_slots;
};

ConvDims check_conv_args(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                         const Tensor& conv_state, const Tensor& out, const char* op) {
  check_f32(weight, op, "weight");
  BF_CHECK(weight.rank() == 2 && weight.dim(1) >= 1, op, ": weight must be [conv_dim, kernel], got ",
           shape_string(weight.shape()));
  const int64_t conv_dim = weight.dim(0), kernel = weight.dim(1);
  check_f32(x, op, "x");
  BF_CHECK(x.rank() == 2 && x.dim(1) == conv_dim, op, ": x must be [T, conv_dim=", conv_dim,
           "], got ", shape_string(x.shape()));
  check_shape(out, x.shape(), op, "out");
  check_f32(conv_state, op, "conv_state");
  BF_CHECK(conv_state.rank() == 3 && conv_state.dim(1) == conv_dim &&
               conv_state.dim(2) == kernel - 1,
           op, ": conv_state must be [num_slots, conv_dim=", conv_dim, ", kernel-1=", kernel - 1,
           "], got ", shape_string(conv_state.shape()));
  check_batch_sequences(batch, x.dim(0), op);
  for (size_t s = 0; s < batch.seqs.size(); ++s)
    check_state_slot(batch.seqs[s].state_slot, conv_state.dim(0), s, op);
  return {conv_dim, kernel, conv_state.dim(0)};
}

// One sequence. window: [conv_dim, kernel-1], the inputs before the first new token.
// After new token j the window is copied to snapshot slot j when snapshot_slots is given.
void conv_sequence(const float* x, int64_t len, const float* weight, const ConvDims& d,
                   std::vector<float>& window, float* out, const std::vector<int32_t>* snapshot_slots,
                   Tensor& conv_state) {
  const int64_t history = d.kernel - 1;
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t c = 0; c < d.conv_dim; ++c) {
      const float* w = weight + c * d.kernel;
      float* win = window.data() + c * history;
      const float input = x[t * d.conv_dim + c];
      // out = silu(Σ_j W[c, j] · x_{t-K+1+j}); W[c, K-1] multiplies the current token.
      float acc = 0.0f;
      for (int64_t j = 0; j < history; ++j) acc += w[j] * win[j];
      acc += w[history] * input;
      if (history > 0) {  // slide: drop the oldest input, append the current one
        std::memmove(win, win + 1, (history - 1) * sizeof(float));
        win[history - 1] = input;
      }
      out[t * d.conv_dim + c] = silu(acc);  // after reading input: out may alias x
    }
    if (snapshot_slots != nullptr) {
      float* slot = conv_state.f32() + (*snapshot_slots)[t] * d.conv_dim * history;
      std::copy(window.begin(), window.end(), slot);
    }
  }
}

void conv1d_impl(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                 const std::vector<std::vector<int32_t>>* snapshot_slots_per_seq,
                 Tensor& conv_state, Tensor& out, const char* op) {
  const ConvDims d = check_conv_args(x, weight, batch, conv_state, out, op);
  if (snapshot_slots_per_seq != nullptr)
    check_snapshot_slots(batch, *snapshot_slots_per_seq, d.num_slots, op);
  const int64_t state_size = d.conv_dim * (d.kernel - 1);
  std::vector<float> window(state_size);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const BatchSequence& seq = batch.seqs[s];
    if (seq.query_len == 0) continue;
    float* state = conv_state.f32() + seq.state_slot * state_size;
    if (seq.has_initial_state()) {
      std::copy(state, state + state_size, window.begin());
    } else {
      std::fill(window.begin(), window.end(), 0.0f);
    }
    const int64_t row0 = seq.query_start * d.conv_dim;
    const std::vector<int32_t>* snapshots = snapshots_of(batch, snapshot_slots_per_seq, s,
                                                         d.num_slots, op);
    conv_sequence(x.f32() + row0, seq.query_len, weight.f32(), d, window, out.f32() + row0,
                  snapshots, conv_state);
    if (snapshots == nullptr) std::copy(window.begin(), window.end(), state);
  }
}

}  // namespace

void causal_conv1d(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                   Tensor& conv_state, Tensor& out) {
  conv1d_impl(x, weight, batch, nullptr, conv_state, out, "causal_conv1d");
}

void causal_conv1d_snapshots(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                             const std::vector<std::vector<int32_t>>& snapshot_slots_per_seq,
                             Tensor& conv_state, Tensor& out) {
  conv1d_impl(x, weight, batch, &snapshot_slots_per_seq, conv_state, out,
              "causal_conv1d_snapshots");
}

void gdn_gates(const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias,
               Tensor& g, Tensor& beta) {
  check_f32(A_log, "gdn_gates", "A_log");
  BF_CHECK(A_log.rank() == 1, "gdn_gates: A_log must be [Hv], got ", shape_string(A_log.shape()));
  const int64_t num_v_heads = A_log.dim(0);
  check_shape(dt_bias, {num_v_heads}, "gdn_gates", "dt_bias");
  check_f32(a, "gdn_gates", "a");
  BF_CHECK(a.rank() == 2 && a.dim(1) == num_v_heads, "gdn_gates: a must be [T, Hv=", num_v_heads,
           "], got ", shape_string(a.shape()));
  check_shape(b, a.shape(), "gdn_gates", "b");
  check_shape(g, a.shape(), "gdn_gates", "g");
  check_shape(beta, a.shape(), "gdn_gates", "beta");
  for (int64_t t = 0; t < a.dim(0); ++t) {
    for (int64_t h = 0; h < num_v_heads; ++h) {
      const int64_t i = t * num_v_heads + h;
      const float a_value = a.f32()[i], b_value = b.f32()[i];  // read both before writing
      g.f32()[i] = -std::exp(A_log.f32()[h]) * softplus(a_value + dt_bias.f32()[h]);
      beta.f32()[i] = sigmoid(b_value);
    }
  }
}

}  // namespace bf::cpu
