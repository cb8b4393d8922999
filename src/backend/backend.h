// The op interface the model is written against, once. Each op has a readable f32 CPU
// reference (backend/cpu) and, later, a CUDA implementation. Tensors are row-major and
// contiguous; shapes are given per argument. Ops write into preallocated outputs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/batch.h"
#include "core/tensor.h"
#include "engine/sampler.h"

namespace bf {

// Gated DeltaNet state pool: per layer, per slot. conv: [num_slots, conv_dim, kernel-1]
// (oldest input first); recurrent: [num_slots, num_v_heads, k_head_dim, v_head_dim] (f32).
struct GdnStatePool {
  Tensor conv;
  Tensor recurrent;
};

// Paged KV cache of one full-attention layer: [num_blocks, block_size, num_kv_heads, head_dim].
struct KvCache {
  Tensor k;
  Tensor v;
  int32_t block_size() const { return static_cast<int32_t>(k.dim(1)); }
};

struct GdnDims {
  int32_t num_k_heads = 0;   // Hk (q and k heads)
  int32_t num_v_heads = 0;   // Hv; value head h uses key head h / (Hv / Hk)
  int32_t k_head_dim = 0;    // dk
  int32_t v_head_dim = 0;    // dv
};

struct AttentionParams {
  float scale = 1.0f;   // softmax scale, usually 1/sqrt(head_dim)
  bool causal = true;   // new tokens see cached context plus earlier new tokens of their sequence
                        // (false: every new token sees all kv_len positions, as DFlash drafts)
  // 0: no window. Else a query at absolute position p sees only key positions j > p - window
  // (with causal also j <= p): the drafter's sliding_attention layers.
  int32_t sliding_window = 0;
};

// How to draw one token from one logits row (Backend::sample_rows): the subset of
// SamplingParams that needs nothing but the row itself (no penalties, no min_tokens mask).
struct RowSampling {
  float temperature = 1.0f;  // below 1e-5: greedy (SamplingParams::greedy)
  int32_t top_k = 0;         // <= 0: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;         // the request's resolved seed (random.h)
  uint64_t position = 0;     // index of the output token being drawn
  int32_t num_logprobs = 0;  // top raw logprobs wanted (SamplingParams::logprobs), at most 20
};

// The largest num_logprobs a backend's sample_rows must serve (vLLM's default max_logprobs).
inline constexpr int32_t kSampleRowsMaxLogprobs = 20;

// The SamplingParams sample_token takes for `row` (penalties off, min_tokens 0).
SamplingParams sampling_params_of(const RowSampling& row);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // Converts host f32 weights into this backend's storage (identity on the CPU).
  virtual Tensor upload(const Tensor& host_f32) = 0;
  // The dtype upload() stores a weight of this shape in: f32 for vectors (norms, gates), the
  // activation dtype for matrices.
  virtual DType weight_dtype(const Shape& shape) const {
    return shape.size() <= 1 ? DType::kF32 : activation_dtype();
  }
  // Copies dst.numel() host elements of src_dtype (F32, BF16 or F16, any alignment: a mapped
  // safetensors file) into dst, converting to dst's dtype. The loader reads checkpoints this
  // way, without an f32 host copy. The default converts straight into a host tensor.
  virtual void copy_from_host(Tensor& dst, const void* src, DType src_dtype);
  virtual Tensor empty(Shape shape, DType dtype) = 0;
  virtual Tensor zeros(Shape shape, DType dtype) = 0;
  // The dtype of activations and KV cache entries: f32 on the CPU, bf16 on CUDA.
  // Recurrent (GDN) state is always f32.
  virtual DType activation_dtype() const { return DType::kF32; }
  Tensor empty(Shape shape) { return empty(std::move(shape), activation_dtype()); }
  Tensor zeros(Shape shape) { return zeros(std::move(shape), activation_dtype()); }
  virtual Tensor to_host(const Tensor& tensor) = 0;  // f32 host copy
  // A weight as upload() would store it, uniform in [-scale, scale], a pure function of
  // (shape, scale, seed): --load-format dummy, for running a real model's shapes without its
  // checkpoint. The default builds it on the host and uploads; a device backend should
  // generate it in place (a 27B model's f32 host copy would not fit).
  virtual Tensor random_weight(const Shape& shape, float scale, uint64_t seed);
  // Device memory accounting for the start-up profiling run (cli/engine_setup.cpp): the bytes
  // the backend's allocator has handed out at most since the last reset_peak_memory() (0 where
  // nothing is tracked), and a release of blocks it keeps cached for reuse.
  virtual size_t peak_memory_bytes() const { return 0; }
  virtual void reset_peak_memory() {}
  virtual void release_cached_memory() {}
  // Index of the largest entry of each row of x [rows, n] (lowest index on ties, NaN never
  // chosen): greedy drafting without copying the logits to the host. The default copies.
  virtual std::vector<int32_t> argmax_rows(const Tensor& x);
  // One token per row of logits [R, V], drawn as sampler.h's sample_token draws it with
  // rows[r]'s parameters (temperature, min_p, top-k, top-p, the inverse-CDF draw with
  // uniform(seed, position, sample_stream)), with its raw logprob, rank and top logprobs.
  // Only the results leave the device. The default (the CPU reference) copies the rows to the
  // host and runs sample_token. Throws bf::Error for a row without a finite logit.
  virtual std::vector<SampleResult> sample_rows(const Tensor& logits,
                                                const std::vector<RowSampling>& rows);

  // out[t, :] = table[ids[t], :]. table: [vocab, hidden]; out: [T, hidden].
  virtual void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out) = 0;
  // out = x · wᵀ. x: [T, in]; w: [out_features, in]; out: [T, out_features].
  virtual void matmul(const Tensor& x, const Tensor& w, Tensor& out) = 0;
  // RMSNorm over the last dim of x viewed as [rows, dim]; w: [dim]. one_centered: y = x̂·(1+w)
  // (Qwen3.5's zero-centred norms), else y = x̂·w.
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, bool one_centered,
                        Tensor& out) = 0;
  // Fused residual add + norm: residual += x; out = rms_norm(residual). x may alias out.
  virtual void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                            bool one_centered, Tensor& out) = 0;
  // a += b (same shape).
  virtual void add(Tensor& a, const Tensor& b) = 0;
  // Gated RMSNorm of the GDN output: y = w ⊙ rms_norm(o) ⊙ silu(z), per row of head_dim.
  // o, z, out: [rows, head_dim] (any leading shape); w: [head_dim] (plain, not 1+w).
  virtual void gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, float eps,
                              Tensor& out) = 0;
  // NeoX (rotate-half) RoPE on the first rotary_dim dims of each head, in place.
  // x: [T, heads, head_dim]; positions: [T].
  virtual void rope(Tensor& x, const std::vector<int32_t>& positions, int32_t rotary_dim,
                    float theta) = 0;
  // out = silu(gate) ⊙ up. gate, up, out: [T, n].
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // x *= sigmoid(gate), elementwise, same shape.
  virtual void sigmoid_mul(Tensor& x, const Tensor& gate) = 0;

  // Causal depthwise conv1d + SiLU over each sequence's new tokens, continuing from the
  // sequence's conv state when it has one (zeros otherwise), and writing the last kernel-1
  // inputs back to the state. x, out: [T, conv_dim]; weight: [conv_dim, kernel].
  virtual void causal_conv1d(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                             Tensor& conv_state, Tensor& out) = 0;
  // Gates of the delta rule: beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias).
  // a, b, g, beta: [T, Hv]; A_log, dt_bias: [Hv].
  virtual void gdn_gates(const Tensor& a, const Tensor& b, const Tensor& A_log,
                         const Tensor& dt_bias, Tensor& g, Tensor& beta) = 0;
  // The gated delta rule for every sequence of the batch, from the sequence's recurrent
  // state (zeros when it has none) and writing the final state back. q, k: [T, Hk, dk]
  // (raw: the op L2-normalises them and scales q by dk^-1/2); v: [T, Hv, dv]; g, beta:
  // [T, Hv]; out: [T, Hv, dv]. Multi-token sequences use the chunked form (chunk 64),
  // single tokens the recurrent form; both give the same result.
  virtual void gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& g, const Tensor& beta, const GdnDims& dims,
                                const ForwardBatch& batch, Tensor& recurrent_state,
                                Tensor& out) = 0;

  // Optional fused form of the Gated DeltaNet layer between its projections, for a batch of
  // single-token decodes: conv1d + SiLU of the q|k|v columns of `projected` (per row
  // [q | k | v | z | b | a], as the fused in_proj writes it), the gates from b and a, the gated
  // delta rule and the gated RMSNorm with z; returns the normed output [T, Hv * dv] and
  // updates the conv and recurrent states as causal_conv1d and gated_delta_rule do. Returns an
  // undefined tensor, doing nothing, where the backend has no fused form for this batch (the
  // default): the caller then runs those four ops.
  virtual Tensor gated_deltanet_decode(const Tensor& projected, const Tensor& conv_weight,
                                       const Tensor& A_log, const Tensor& dt_bias,
                                       const Tensor& norm_weight, float eps, const GdnDims& dims,
                                       const ForwardBatch& batch, Tensor& conv_state,
                                       Tensor& recurrent_state) {
    (void)projected, (void)conv_weight, (void)A_log, (void)dt_bias, (void)norm_weight,
        (void)eps, (void)dims, (void)batch, (void)conv_state, (void)recurrent_state;
    return Tensor();
  }

  // Writes new K/V rows into the paged cache at batch.slot_mapping. k, v: [T, Hkv, hd].
  virtual void kv_write(const Tensor& k, const Tensor& v, const ForwardBatch& batch,
                        KvCache& cache) = 0;
  // The gated attention layer's inputs, prepared in one op (a device backend fuses it): per
  // head, q = rope(rms_norm(q part of q_and_gate)) and k = rope(rms_norm(k_raw)), with
  // zero-centred norms (x̂·(1+w)) and NeoX RoPE on the first rotary_dim dims at
  // batch.positions; q goes to q_out, k and v into the paged cache at batch.slot_mapping
  // (slot -1: not written). q_and_gate: [T*Hq, 2*hd], per head [q | gate]; k_raw: [T*Hkv, hd];
  // v: [T, Hkv, hd]; q_norm, k_norm: [hd]; q_out: [T, Hq, hd]. The default composes
  // slice_columns, rms_norm, rope and kv_write.
  virtual void prepare_attention_inputs(const Tensor& q_and_gate, const Tensor& k_raw,
                                        const Tensor& v, const Tensor& q_norm,
                                        const Tensor& k_norm, float eps, int32_t rotary_dim,
                                        float theta, const ForwardBatch& batch, KvCache& cache,
                                        Tensor& q_out);
  // Attention of each sequence's new queries over its cached K/V (positions
  // [0, kv_len), read through the block table; the new tokens must already be written).
  // q, out: [T, Hq, hd]; GQA: query head h uses kv head h / (Hq / Hkv).
  virtual void paged_attention(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
                               const AttentionParams& params, Tensor& out) = 0;
  // Qwen3.5's output-gated attention: paged_attention into out, then
  // out[t, h, :] *= sigmoid(gate_rows[t * Hq + h, gate_begin : gate_begin + hd]) exactly as
  // sigmoid_mul does it (the attention output rounded to out's dtype first). gate_rows:
  // [T * Hq, n] (the q projection's per-head [q | gate] rows). The default slices the gate out
  // and runs the two ops; a device backend may apply the gate in the attention's last store.
  virtual void paged_attention_gated(const Tensor& q, const KvCache& cache,
                                     const ForwardBatch& batch, const AttentionParams& params,
                                     const Tensor& gate_rows, int64_t gate_begin, Tensor& out);
  // Both ops above for a gated-attention layer at once, where a backend can fuse them:
  // prepare_attention_inputs(q_and_gate, k_raw, v, ...), then paged_attention_gated with the
  // gate at column hd of q_and_gate, into out [T, Hq, hd]. Returns false, doing nothing, when it
  // cannot (the default; the caller then runs the two ops).
  virtual bool fused_gated_attention(const Tensor& q_and_gate, const Tensor& k_raw,
                                     const Tensor& v, const Tensor& q_norm, const Tensor& k_norm,
                                     float eps, int32_t rotary_dim, float theta,
                                     const ForwardBatch& batch, KvCache& cache,
                                     const AttentionParams& params, Tensor& out) {
    (void)q_and_gate, (void)k_raw, (void)v, (void)q_norm, (void)k_norm, (void)eps;
    (void)rotary_dim, (void)theta, (void)batch, (void)cache, (void)params, (void)out;
    return false;
  }
  // paged_attention_gated's shape contract: out [T, Hq, hd], a [T * Hq, hd] gate at column
  // gate_begin of gate_rows. Throws naming what is wrong.
  static void check_attention_gate(const Tensor& out, const Tensor& gate_rows, int64_t gate_begin);

  // Mixture of experts (Qwen3.5-MoE): softmax router over E experts, top-k, renormalised
  // weights; out = Σ_k w_k · down_e(silu(gate_e x) ⊙ up_e x). x, out: [T, H];
  // router: [E, H]; gate_up: [E, 2I, H] (gate rows first); down: [E, H, I].
  virtual void moe_experts(const Tensor& x, const Tensor& router, const Tensor& gate_up,
                           const Tensor& down, int32_t top_k, Tensor& out) = 0;

  // Optional fused form of Qwen3.5-MoE's whole sparse block for decode-sized batches:
  // out = moe_experts(x, router, gate_up, down, top_k) + sigmoid(x · shared_gateᵀ) ·
  // swiglu(x, shared_gate_up, shared_down), the shared expert's three tensors ([2Is, H],
  // [H, Is], [1, H]) undefined when the model has none. With `norm` (may be null), the
  // residual add and RMSNorm in front of the block are folded in: the op first does
  // add_rms_norm(*norm->residual, *norm->addend, *norm->weight, eps, one_centered, x), writing
  // x (out may be the addend). Returns false, doing nothing, where the backend has no fused form
  // for this batch (the default): the caller runs the separate ops.
  struct FoldedNorm {
    Tensor* residual;
    const Tensor* addend;
    const Tensor* weight;
    float eps;
    bool one_centered;
  };
  virtual bool moe_block_decode(const Tensor& x, const Tensor& router, const Tensor& gate_up,
                                const Tensor& down, int32_t top_k, const Tensor& shared_gate_up,
                                const Tensor& shared_down, const Tensor& shared_gate, Tensor& out,
                                const FoldedNorm* norm) {
    (void)x, (void)router, (void)gate_up, (void)down, (void)top_k, (void)shared_gate_up,
        (void)shared_down, (void)shared_gate, (void)out, (void)norm;
    return false;
  }

  // A hint for decode-sized batches of `tokens` rows: `weights` are read soon, after the ops
  // launched next (which move little data of their own). A device backend may start moving
  // them closer to its cores meanwhile (CUDA: into L2 from a side stream); results never
  // change. The default does nothing.
  virtual void prefetch_weights(const std::vector<Tensor>& weights, int64_t tokens) {
    (void)weights, (void)tokens;
  }

  // out[r, :] = x[r, begin : begin + out.dim(1)]. x: [rows, cols]; out: [rows, n].
  // Used to split packed projections (q|k|v after the conv, q|gate per head).
  virtual void slice_columns(const Tensor& x, int64_t begin, Tensor& out);
  // Consecutive column ranges of x, from column 0: parts[i] = x[:, o_i : o_i + parts[i].dim(1)]
  // with o_0 = 0, o_{i+1} = o_i + parts[i].dim(1) (a packed projection's q|k|v|z|...), one
  // launch on a device backend. The default calls slice_columns per part.
  virtual void split_columns(const Tensor& x, std::vector<Tensor>& parts);
  // x[r, :] *= sigmoid(gate[r]). x: [rows, n]; gate: [rows, 1] (the MoE shared-expert gate).
  virtual void sigmoid_scale_rows(Tensor& x, const Tensor& gate);
  // out = silu(gate_up[:, :n]) ⊙ gate_up[:, n:], gate_up: [T, 2n] (the fused gate|up
  // projection's output), out: [T, n]. The default slices, then calls silu_mul.
  virtual void silu_mul_packed(const Tensor& gate_up, Tensor& out);
  // out = silu_mul_packed(gate_up) · wᵀ, gate_up: [T, 2n], w: [out_features, n]: the SwiGLU
  // MLP's activation and down projection as one op, so a device backend can fold the
  // activation into a decode-sized GEMM's input. The default runs the two ops.
  virtual void swiglu_matmul(const Tensor& gate_up, const Tensor& w, Tensor& out);

  // --- Graphs of decode steps (CUDA graphs; a backend without them keeps these defaults) ---
  // A recorded forward over a plain decode batch of a fixed number of sequences, replayed
  // with new batch contents (model/decode_graphs.h drives it).
  struct Graph {
    virtual ~Graph() = default;
  };
  virtual bool supports_graphs() const { return false; }
  // Records `forward`, which must run the model over `batch` (plain decodes: one token per
  // sequence, no snapshots, logits_rows 0..n-1) and nothing else. While recording, the
  // batch's token ids, positions, slot mapping, sequence info and block tables are read from
  // device buffers that replay_graph() refreshes, so a replay may carry any batch of the same
  // number of sequences whose block tables hold at most max_blocks_per_seq blocks. forward is
  // called twice: once eagerly (lazy set-up such as GEMM choices must not happen while
  // recording), then recorded; what it allocates while recording comes from a pool that
  // eager code never gets. Graphs alive at once share one metadata buffer, sized by the first
  // of them: record the largest first. A graph must not outlive its backend.
  virtual std::unique_ptr<Graph> capture_graph(const ForwardBatch& batch,
                                               int32_t max_blocks_per_seq,
                                               const std::function<void()>& forward);
  // Uploads batch's metadata (as many sequences as recorded) and launches the graph; its
  // outputs (the tensors `forward` returned while recording) then hold this batch's results.
  virtual void replay_graph(Graph& graph, const ForwardBatch& batch);
};

std::unique_ptr<Backend> make_cpu_backend();

// The host f32 tensor Backend::random_weight's default uploads: element i uniform in
// [-scale, scale], a hash of (seed, i), filled on all cores.
Tensor random_host_tensor(const Shape& shape, float scale, uint64_t seed);

}  // namespace bf
