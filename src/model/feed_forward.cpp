// The feed-forward half of a decoder layer: SwiGLU for dense models; for Qwen3.5-MoE a
// softmax top-k router over fused experts plus a shared expert scaled by sigmoid(gate·x).
#include "model/layers.h"

namespace bf {
namespace {

void swiglu(Backend& be, const Tensor& x, const Tensor& gate_up_proj, const Tensor& down_proj,
            Tensor& out) {
  const int64_t T = x.dim(0), inner = gate_up_proj.dim(0) / 2;
  Tensor gate_up = be.empty({T, 2 * inner});
  be.matmul(x, gate_up_proj, gate_up);
  be.swiglu_matmul(gate_up, down_proj, out);
}

// gate_proj and up_proj ([inner, H] each) stacked by rows.
Tensor take_gate_up(CheckpointReader& reader, const std::string& prefix, int64_t inner,
                    int64_t hidden) {
  return reader.take_fused_rows({prefix + "gate_proj.weight", prefix + "up_proj.weight"},
                                {{inner, hidden}, {inner, hidden}});
}

}  // namespace

void FeedForward::load(CheckpointReader& reader, const std::string& prefix, const ModelConfig& c) {
  const int64_t hidden = c.hidden_size;
  is_moe = c.is_moe;
  if (!is_moe) {
    const int64_t inner = c.intermediate_size;
    gate_up_proj = take_gate_up(reader, prefix, inner, hidden);
    down_proj = reader.take(prefix + "down_proj.weight", {hidden, inner});
    return;
  }
  router = reader.take(prefix + "gate.weight", {c.num_experts, hidden});
  load_experts(reader, prefix + "experts.", c);
  has_shared_expert = c.shared_expert_intermediate_size > 0;
  if (has_shared_expert) {
    const int64_t inner = c.shared_expert_intermediate_size;
    gate_up_proj = take_gate_up(reader, prefix + "shared_expert.", inner, hidden);
    down_proj = reader.take(prefix + "shared_expert.down_proj.weight", {hidden, inner});
    shared_expert_gate = reader.take(prefix + "shared_expert_gate.weight", {1, hidden});
  }
}

// Experts come fused and 3-D (experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I],
// the Qwen3.5-MoE checkpoints) or one module per expert (experts.N.{gate,up,down}_proj.weight,
// older exports); both end up fused.
void FeedForward::load_experts(CheckpointReader& reader, const std::string& prefix,
                               const ModelConfig& c) {
  const int64_t E = c.num_experts, H = c.hidden_size, I = c.moe_intermediate_size;
  if (reader.contains(prefix + "gate_up_proj")) {
    experts_gate_up = reader.take(prefix + "gate_up_proj", {E, 2 * I, H});
    experts_down = reader.take(prefix + "down_proj", {E, H, I});
    return;
  }
  Tensor gate_up = Tensor::empty({E, 2 * I, H}), down = Tensor::empty({E, H, I});
  for (int64_t e = 0; e < E; ++e) {
    std::string expert = prefix + std::to_string(e) + ".";
    // Fused on the host, uploaded once below (the backend may keep weights on a device).
    Tensor gate = reader.take_host(expert + "gate_proj.weight", {I, H});
    Tensor up = reader.take_host(expert + "up_proj.weight", {I, H});
    Tensor dn = reader.take_host(expert + "down_proj.weight", {H, I});
    std::copy(gate.f32(), gate.f32() + I * H, gate_up.f32() + e * 2 * I * H);
    std::copy(up.f32(), up.f32() + I * H, gate_up.f32() + e * 2 * I * H + I * H);
    std::copy(dn.f32(), dn.f32() + H * I, down.f32() + e * H * I);
  }
  experts_gate_up = reader.upload(gate_up);
  experts_down = reader.upload(down);
}

void FeedForward::forward(Backend& be, const ModelConfig& c, const Tensor& x, Tensor& out) const {
  if (!is_moe) {
    swiglu(be, x, gate_up_proj, down_proj, out);
    return;
  }
  if (moe_block_decode(be, c, x, out, nullptr)) return;
  be.moe_experts(x, router, experts_gate_up, experts_down, c.num_experts_per_tok, out);
  if (!has_shared_expert) return;
  const int64_t T = x.dim(0);
  Tensor shared = be.empty({T, c.hidden_size});
  swiglu(be, x, gate_up_proj, down_proj, shared);
  Tensor shared_gate = be.empty({T, 1});
  be.matmul(x, shared_expert_gate, shared_gate);
  be.sigmoid_scale_rows(shared, shared_gate);
  be.add(out, shared);
}

bool FeedForward::moe_block_decode(Backend& be, const ModelConfig& c, const Tensor& x,
                                   Tensor& out, const Backend::FoldedNorm* norm) const {
  const Tensor none;
  return be.moe_block_decode(x, router, experts_gate_up, experts_down, c.num_experts_per_tok,
                             has_shared_expert ? gate_up_proj : none,
                             has_shared_expert ? down_proj : none,
                             has_shared_expert ? shared_expert_gate : none, out, norm);
}

bool FeedForward::forward_folding_norm(Backend& be, const ModelConfig& c,
                                       const Backend::FoldedNorm& norm, Tensor& x,
                                       Tensor& out) const {
  return is_moe && moe_block_decode(be, c, x, out, &norm);
}

std::vector<Tensor> FeedForward::weights_read_by_every_token() const {
  if (!is_moe) return {gate_up_proj, down_proj};
  std::vector<Tensor> w{router};
  if (has_shared_expert) {
    w.push_back(shared_expert_gate);
    w.push_back(gate_up_proj);
    w.push_back(down_proj);
  }
  return w;
}

}  // namespace bf
