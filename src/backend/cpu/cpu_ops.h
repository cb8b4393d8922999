// The CPU reference ops as free functions (namespace bf::cpu): CpuBackend forwards each
// Backend op here, and tests or tools may call them directly. Everything is f32 on the host;
// shapes are those of backend.h. Extra reference ops that backend.h does not (yet) have
// live here too: the per-token state snapshots that speculative verification needs.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace bf::cpu {

// --- dense (cpu_dense.cpp) ---
void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out);
void matmul(const Tensor& x, const Tensor& w, Tensor& out);
void rms_norm(const Tensor& x, const Tensor& w, float eps, bool one_centered, Tensor& out);
void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps, bool one_centered,
                  Tensor& out);
void add(Tensor& a, const Tensor& b);
void gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, float eps, Tensor& out);
void rope(Tensor& x, const std::vector<int32_t>& positions, int32_t rotary_dim, float theta);
void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out);
void sigmoid_mul(Tensor& x, const Tensor& gate);

// --- Gated DeltaNet (cpu_gdn.cpp, cpu_delta_rule.cpp) ---
void causal_conv1d(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                   Tensor& conv_state, Tensor& out);
void gdn_gates(const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias,
               Tensor& g, Tensor& beta);
void gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                      const Tensor& beta, const GdnDims& dims, const ForwardBatch& batch,
                      Tensor& recurrent_state, Tensor& out);

// Speculative-verify variants: like the ops above, but instead of writing the final state
// back to seq.state_slot, the state after the sequence's j-th new token is written to
// slot snapshot_slots_per_seq[s][j] (one slot per new token; the state slot itself is only
// read, unless it is also listed). The delta rule runs the recurrent form token by token.
void causal_conv1d_snapshots(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                             const std::vector<std::vector<int32_t>>& snapshot_slots_per_seq,
                             Tensor& conv_state, Tensor& out);
void gated_delta_rule_snapshots(const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& g, const Tensor& beta, const GdnDims& dims,
                                const ForwardBatch& batch,
                                const std::vector<std::vector<int32_t>>& snapshot_slots_per_seq,
                                Tensor& recurrent_state, Tensor& out);

// --- attention (cpu_attention.cpp) ---
void kv_write(const Tensor& k, const Tensor& v, const ForwardBatch& batch, KvCache& cache);
void paged_attention(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
                     const AttentionParams& params, Tensor& out);

// --- mixture of experts (cpu_moe.cpp) ---
void moe_experts(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
                 int32_t top_k, Tensor& out);

}  // namespace bf::cpu
