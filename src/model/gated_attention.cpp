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
  q_proj = reader.take(prefix + "q_proj.weight", {hq * hd * 2, hidden});
  k_proj = reader.take(prefix + "k_proj.weight", {hkv * hd, hidden});
  v_proj = reader.take(prefix + "v_proj.weight", {hkv * hd, hidden});
  o_proj = reader.take(prefix + "o_proj.weight", {hidden, hq * hd});
  q_norm = reader.take(prefix + "q_norm.weight", {hd});
  k_norm = reader.take(prefix + "k_norm.weight", {hd});
}

void GatedAttention::forward(Backend& be, const ModelConfig& c, const Tensor& x,
                             const ForwardBatch& batch, KvCache& cache, Tensor& out) const {
  const int64_t T = x.dim(0), hd = c.head_dim;
  const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads;

  Tensor q_and_gate = be.empty({T * hq, 2 * hd});  // per head [q | gate]
  Tensor q_and_gate_2d = q_and_gate.reshape({T, hq * 2 * hd});
  be.matmul(x, q_proj, q_and_gate_2d);
  Tensor q_raw = be.empty({T * hq, hd}), gate = be.empty({T * hq, hd});
  be.slice_columns(q_and_gate, 0, q_raw);
  be.slice_columns(q_and_gate, hd, gate);

  Tensor k_raw = be.empty({T * hkv, hd}), v = be.empty({T, hkv, hd});
  Tensor k_raw_2d = k_raw.reshape({T, hkv * hd});
  be.matmul(x, k_proj, k_raw_2d);
  Tensor v_2d = v.reshape({T, hkv * hd});
  be.matmul(x, v_proj, v_2d);

  Tensor q = be.empty({T, hq, hd}), k = be.empty({T, hkv, hd});
  Tensor q_rows = q.reshape({T * hq, hd}), k_rows = k.reshape({T * hkv, hd});
  be.rms_norm(q_raw, q_norm, c.rms_norm_eps, /*one_centered=*/true, q_rows);
  be.rms_norm(k_raw, k_norm, c.rms_norm_eps, /*one_centered=*/true, k_rows);
  be.rope(q, batch.positions, c.rotary_dim(), c.rope_theta);
  be.rope(k, batch.positions, c.rotary_dim(), c.rope_theta);

  be.kv_write(k, v, batch, cache);
  Tensor attn = be.empty({T, hq, hd});
  AttentionParams params{.scale = 1.0f / std::sqrt(static_cast<float>(hd)), .causal = true};
  be.paged_attention(q, cache, batch, params, attn);

  Tensor attn_rows = attn.reshape({T * hq, hd});
  be.sigmoid_mul(attn_rows, gate);
  be.matmul(attn.reshape({T, hq * hd}), o_proj, out);
}

}  // namespace bf
