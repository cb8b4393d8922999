// Gated full attention of Qwen3.5 (research/qwen35.md §2.4): q_proj yields per head
// [q | gate]; q and k get zero-centred RMSNorm and partial NeoX RoPE; K/V go into the
// paged cache; the attention output is multiplied by sigmoid(gate) before o_proj.
#include <cmath>

#include "model/layers.h"

namespace bf {

void GatedAttention::load(CheckpointReader& reader, const std::string& prefix,
                          const ModelConfig& c) {
  const int64_t hidden = c.hidden_size, hd = c.head_dim;
  const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads;
  qkv_proj = reader.take_fused_rows(
      {prefix + "q_proj.weight", prefix + "k_proj.weight", prefix + "v_proj.weight"},
      {{hq * hd * 2, hidden}, {hkv * hd, hidden}, {hkv * hd, hidden}});
  o_proj = reader.take(prefix + "o_proj.weight", {hidden, hq * hd});
  q_norm = reader.take(prefix + "q_norm.weight", {hd});
  k_norm = reader.take(prefix + "k_norm.weight", {hd});
}

void GatedAttention::forward(Backend& be, const ModelConfig& c, const Tensor& x,
                             const ForwardBatch& batch, KvCache& cache, Tensor& out,
                             const std::vector<Tensor>& prefetch_next) const {
  const int64_t T = x.dim(0), hd = c.head_dim;
  const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads;

  const int64_t q_width = hq * 2 * hd, kv_width = hkv * hd;
  Tensor projected = be.empty({T, q_width + 2 * kv_width});  // [T, q|gate per head | k | v]
  be.matmul(x, qkv_proj, projected);
  // Norms, RoPE and attention over the cache move little weight data: bring o_proj in.
  hint_weights_after_projection(be, o_proj, prefetch_next, T);
  std::vector<Tensor> parts = split_columns(be, projected, {q_width, kv_width, kv_width});
  Tensor q_and_gate = parts[0].reshape({T * hq, 2 * hd});
  Tensor k_raw = parts[1].reshape({T * hkv, hd});
  Tensor v = parts[2].reshape({T, hkv, hd});

  Tensor attn = be.empty({T, hq, hd});
  AttentionParams params{.scale = 1.0f / std::sqrt(static_cast<float>(hd)), .causal = true};
  if (!be.fused_gated_attention(q_and_gate, k_raw, v, q_norm, k_norm, c.rms_norm_eps,
                                c.rotary_dim(), c.rope_theta, batch, cache, params, attn)) {
    // q/k norms, partial RoPE, and the K/V cache write in one op.
    Tensor q = be.empty({T, hq, hd});
    be.prepare_attention_inputs(q_and_gate, k_raw, v, q_norm, k_norm, c.rms_norm_eps,
                                c.rotary_dim(), c.rope_theta, batch, cache, q);
    // Attention times sigmoid(gate), the gate read from q_and_gate's second half per head.
    be.paged_attention_gated(q, cache, batch, params, q_and_gate, hd, attn);
  }
  be.matmul(attn.reshape({T, hq * hd}), o_proj, out);
}

}  // namespace bf
