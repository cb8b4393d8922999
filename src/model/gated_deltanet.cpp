// Gated DeltaNet mixer of Qwen3.5 (research/qwen35.md §2.2): four projections, a causal
// depthwise conv over q|k|v with SiLU, the gates, the gated delta rule from the sequence's
// state slot, a plain-weight gated RMSNorm with silu(z), and the output projection.
#include "model/layers.h"

namespace bf {

void GatedDeltaNet::load(CheckpointReader& reader, const std::string& prefix,
                         const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, conv_dim = c.linear_conv_dim();
  const int64_t value_dim = c.linear_value_dim(), hv = c.linear_num_value_heads;
  in_proj = reader.take_fused_rows(
      {prefix + "in_proj_qkv.weight", prefix + "in_proj_z.weight", prefix + "in_proj_b.weight",
       prefix + "in_proj_a.weight"},
      {{conv_dim, hidden}, {value_dim, hidden}, {hv, hidden}, {hv, hidden}});
  conv1d = reader.take(prefix + "conv1d.weight", {conv_dim, 1, c.linear_conv_kernel_dim})
               .reshape({conv_dim, c.linear_conv_kernel_dim});
  dt_bias = reader.take(prefix + "dt_bias", {hv});
  A_log = reader.take(prefix + "A_log", {hv});
  norm = reader.take(prefix + "norm.weight", {c.linear_value_head_dim});
  out_proj = reader.take(prefix + "out_proj.weight", {hidden, value_dim});
}

void GatedDeltaNet::forward(Backend& be, const ModelConfig& c, const Tensor& x,
                            const ForwardBatch& batch, GdnStatePool& state, Tensor& out,
                            const std::vector<Tensor>& prefetch_next) const {
  const int64_t T = x.dim(0);
  const int64_t hk = c.linear_num_key_heads, hv = c.linear_num_value_heads;
  const int64_t dk = c.linear_key_head_dim, dv = c.linear_value_head_dim;
  const int64_t key_dim = c.linear_key_dim(), value_dim = c.linear_value_dim();

  const int64_t conv_dim = c.linear_conv_dim();
  Tensor projected = be.empty({T, in_proj.dim(0)});  // [T, q | k | v | z | b | a]
  be.matmul(x, in_proj, projected);
  // The recurrence in between moves little data: time to bring out_proj (and what follows) in.
  hint_weights_after_projection(be, out_proj, prefetch_next, T);
  GdnDims dims{.num_k_heads = static_cast<int32_t>(hk),
               .num_v_heads = static_cast<int32_t>(hv),
               .k_head_dim = static_cast<int32_t>(dk),
               .v_head_dim = static_cast<int32_t>(dv)};
  // A backend may run the middle of the layer as one op for single-token decodes.
  if (Tensor fused = be.gated_deltanet_decode(projected, conv1d, A_log, dt_bias, norm,
                                              c.rms_norm_eps, dims, batch, state.conv,
                                              state.recurrent);
      fused.defined()) {
    be.matmul(fused, out_proj, out);
    return;
  }
  std::vector<Tensor> in_parts = split_columns(be, projected, {conv_dim, value_dim, hv, hv});
  Tensor mixed_qkv = in_parts[0], z = in_parts[1], b = in_parts[2], a = in_parts[3];

  Tensor conv_out = be.empty({T, conv_dim});
  be.causal_conv1d(mixed_qkv, conv1d, batch, state.conv, conv_out);

  std::vector<Tensor> qkv = split_columns(be, conv_out, {key_dim, key_dim, value_dim});
  Tensor q = qkv[0], k = qkv[1], v = qkv[2];

  // The gates stay f32 on every backend: the decay g compounds over the whole sequence.
  Tensor g = be.empty({T, hv}, DType::kF32), beta = be.empty({T, hv}, DType::kF32);
  be.gdn_gates(a, b, A_log, dt_bias, g, beta);

  Tensor core = be.empty({T, hv, dv});
  be.gated_delta_rule(q.reshape({T, hk, dk}), k.reshape({T, hk, dk}), v.reshape({T, hv, dv}), g,
                      beta, dims, batch, state.recurrent, core);

  Tensor normed = be.empty({T * hv, dv});  // per value head
  be.gated_rms_norm(core.reshape({T * hv, dv}), z.reshape({T * hv, dv}), norm, c.rms_norm_eps,
                    normed);
  be.matmul(normed.reshape({T, value_dim}), out_proj, out);
}

}  // namespace bf
