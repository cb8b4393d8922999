// The DFlash drafter (research/dflash.md §1): a small Qwen3-style decoder stack without an
// embedding or LM head of its own (it borrows the target's). Target hidden states at
// config.target_layer_ids are concatenated, projected by fc, normalised by hidden_norm and
// written as K/V into every draft layer's own paged cache, once per committed token
// (write_context). A draft (draft_logits) is one forward over [anchor, MASK x k] per sequence
// that attends to that context plus the whole block: bidirectionally in full_attention
// layers, causally and within the sliding window in sliding_attention layers.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "model/dflash_config.h"
#include "model/model.h"

namespace bf {

// The drafter's paged KV cache, one KvCache per draft layer. It is indexed by the same block
// ids as the target's cache (a token's draft K/V slot is its target slot), so a sequence's
// block table serves both.
struct DraftCache {
  std::vector<KvCache> kv;
  static DraftCache allocate(Backend& be, const DraftConfig& config, int32_t num_blocks,
                             int32_t block_size);
  static size_t block_bytes(const DraftConfig& config, int32_t block_size, size_t elem_bytes);
};

// Target rows whose context K/V go into the draft cache: row r of the target forward (into
// its captured hidden states) is token position positions[i] at cache slot slots[i].
struct ContextRows {
  std::vector<int32_t> rows;
  std::vector<int32_t> positions;
  std::vector<int32_t> slots;
  bool empty() const { return rows.empty(); }
};

class DFlashDrafter {
 public:
  // Loads DIR/config.json + safetensors; refuses a drafter that does not fit `target`.
  static std::unique_ptr<DFlashDrafter> load(const std::filesystem::path& draft_dir,
                                             const Model& target,
                                             LoadFormat format = LoadFormat::kSafetensors);

  const DraftConfig& config() const { return config_; }
  // Target decoder layers whose outputs Model::forward must capture, in fc order.
  const std::vector<int32_t>& tap_layers() const { return config_.target_layer_ids; }

  // captured: the target forward's captured_hidden for tap_layers() (each [T, hidden]).
  void write_context(const std::vector<Tensor>& captured, const ContextRows& rows,
                     DraftCache& cache) const;

  // One draft forward. batch: per sequence the block [anchor, MASK...] at positions
  // [num_computed, num_computed + query_len), num_computed = context tokens in the cache,
  // slot_mapping/block_table for the block positions. Returns host f32 logits
  // [batch.logits_rows.size(), vocab] through the target's LM head.
  Tensor draft_logits(const ForwardBatch& batch, DraftCache& cache) const;
  // The same forward, greedy: the argmax token of each logits row (on the device; only the
  // ids come back). This is what the engine drafts with.
  std::vector<int32_t> draft_tokens(const ForwardBatch& batch, DraftCache& cache) const;

 private:
  struct Layer {
    Tensor input_layernorm, post_attention_layernorm;  // [H], plain x*w (Qwen3)
    Tensor q_proj, k_proj, v_proj, o_proj;             // [Hq*hd, H], [Hkv*hd, H] x2, [H, Hq*hd]
    Tensor q_norm, k_norm;                             // [hd], plain
    Tensor gate_proj, up_proj, down_proj;              // SwiGLU
  };

  DFlashDrafter(DraftConfig config, const Model& target)
      : config_(std::move(config)), target_(target), backend_(target.backend()) {}
  void load_weights(CheckpointReader& reader, const std::string& base);
  // x [n, H] through a q or k projection, its per-head plain RMSNorm and full RoPE at
  // positions: [n, heads, head_dim].
  Tensor project_heads(const Tensor& x, const Tensor& proj, const Tensor& norm, int64_t heads,
                       const std::vector<int32_t>& positions) const;
  // K/V of `x` ([n, H]) through layer's k/v projections, k_norm and RoPE at rows.positions,
  // written at rows.slot_mapping (the only fields read).
  void write_kv(const Layer& layer, const Tensor& x, const ForwardBatch& rows,
                KvCache& cache) const;
  void attention(const Layer& layer, bool sliding, const Tensor& x, const ForwardBatch& batch,
                 KvCache& cache, Tensor& out) const;
  Tensor forward_logits(const ForwardBatch& batch, DraftCache& cache) const;  // on the device

  DraftConfig config_;
  const Model& target_;
  Backend& backend_;
  std::vector<Tensor> fc_per_tap_;  // fc split by input columns: fc_per_tap_[j] is [H, H]
  Tensor hidden_norm_, norm_;
  std::vector<Layer> layers_;
};

}  // namespace bf
