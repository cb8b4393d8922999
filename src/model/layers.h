// The three blocks a Qwen3.5 decoder layer is built from, each with its weights and a
// forward over the flattened batch, written only against the backend op interface.
// Shapes use T = tokens in the batch. Weight layouts are Hugging Face's ([out, in]).
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/checkpoint_reader.h"
#include "model/config.h"

namespace bf {

// Columns [begin, begin + width) of x [T, n] as a [T, width] tensor. One row's columns are
// contiguous, so for T == 1 (a decode step) this is a view into x when its start stays 16-byte
// aligned (the kernels' vector width); otherwise a copy made with slice_columns.
Tensor take_columns(Backend& be, const Tensor& x, int64_t begin, int64_t width);
// Consecutive column ranges of x [T, n] from column 0, of the given widths: take_columns for a
// decode row (views), else one Backend::split_columns (one launch on a device instead of one
// per part).
std::vector<Tensor> split_columns(Backend& be, const Tensor& x, const std::vector<int64_t>& widths);

// Called by a mixer once its input projection is launched: hints its output projection, then
// `next` (the MLP's always-read weights), to be read after the latency-bound ops in between
// (Backend::prefetch_weights).
void hint_weights_after_projection(Backend& be, const Tensor& out_proj,
                                   const std::vector<Tensor>& next, int64_t tokens);

// Gated DeltaNet (linear attention) mixer. State in a GdnStatePool slot per sequence.
struct GatedDeltaNet {
  // The checkpoint's four input projections stacked by rows, one GEMM:
  // [conv_dim + Hv*dv + 2*Hv, H] = in_proj_qkv (q Hk*dk | k Hk*dk | v Hv*dv) | in_proj_z (Hv*dv)
  // | in_proj_b (Hv, beta logits) | in_proj_a (Hv, decay input).
  Tensor in_proj;
  Tensor conv1d;       // [conv_dim, kernel] (checkpoint: [conv_dim, 1, kernel])
  Tensor dt_bias;      // [Hv]
  Tensor A_log;        // [Hv]
  Tensor norm;         // [dv] plain-weight gated RMSNorm
  Tensor out_proj;     // [H, Hv*dv]

  void load(CheckpointReader& reader, const std::string& prefix, const ModelConfig& config);
  // x: [T, H] (normed input) -> out: [T, H]. prefetch_next: weights the layer reads after
  // this block (Backend::prefetch_weights, hinted with out_proj once in_proj has run).
  void forward(Backend& be, const ModelConfig& config, const Tensor& x, const ForwardBatch& batch,
               GdnStatePool& state, Tensor& out,
               const std::vector<Tensor>& prefetch_next = {}) const;
};

// Gated full attention: q (with a per-head output gate), k, v, zero-centred q/k norms,
// partial RoPE, paged KV cache.
struct GatedAttention {
  // q_proj (per head [q (hd) | gate (hd)]), k_proj and v_proj stacked by rows, one GEMM:
  // [Hq*2*hd + 2*Hkv*hd, H].
  Tensor qkv_proj;
  Tensor o_proj;  // [H, Hq*hd]
  Tensor q_norm;  // [hd] (1+w)
  Tensor k_norm;  // [hd] (1+w)

  void load(CheckpointReader& reader, const std::string& prefix, const ModelConfig& config);
  // prefetch_next: as GatedDeltaNet's (hinted with o_proj once the projection has run).
  void forward(Backend& be, const ModelConfig& config, const Tensor& x, const ForwardBatch& batch,
               KvCache& cache, Tensor& out, const std::vector<Tensor>& prefetch_next = {}) const;
};

// SwiGLU MLP (dense) or sparse MoE block with a sigmoid-gated shared expert.
struct FeedForward {
  // Dense, or the MoE shared expert: gate_proj and up_proj stacked by rows (one GEMM) [2I, H],
  // then down_proj [H, I].
  Tensor gate_up_proj, down_proj;
  // MoE only.
  Tensor router;             // [E, H]
  Tensor experts_gate_up;    // [E, 2*I_moe, H] (gate rows first)
  Tensor experts_down;       // [E, H, I_moe]
  Tensor shared_expert_gate; // [1, H]
  bool is_moe = false;
  bool has_shared_expert = false;

  void load(CheckpointReader& reader, const std::string& prefix, const ModelConfig& config);
  void forward(Backend& be, const ModelConfig& config, const Tensor& x, Tensor& out) const;
  // forward(x) with x = add_rms_norm(norm) computed inside the block where the backend folds it
  // in (Backend::moe_block_decode; x is written too); false, doing nothing, where it does not.
  bool forward_folding_norm(Backend& be, const ModelConfig& config,
                            const Backend::FoldedNorm& norm, Tensor& x, Tensor& out) const;
  // The weights every token reads whatever the routing, in the order the block reads them
  // (router, shared gate, shared expert; a dense MLP's gate|up and down): what can be
  // prefetched before the block's input exists.
  std::vector<Tensor> weights_read_by_every_token() const;

 private:
  void load_experts(CheckpointReader& reader, const std::string& prefix, const ModelConfig& config);
  bool moe_block_decode(Backend& be, const ModelConfig& config, const Tensor& x, Tensor& out,
                        const Backend::FoldedNorm* norm) const;
};

}  // namespace bf
