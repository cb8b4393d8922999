// DFlash drafter forward, written only against the backend op interface (see the header).
// Per layer it is Qwen3's decoder layer: x += o_proj(attn(q_norm(q), k_norm(k), v));
// x += down(silu(gate(x')) * up(x')), with plain-weight RMSNorms and full NeoX RoPE at the
// tokens' absolute positions. The query block's own K/V are written into the draft cache at
// the block's (lookahead) slots before attention, so one paged-attention call sees context
// and block together; the next committed tokens' context K/V overwrite them.
#include "model/dflash_drafter.h"

#include <cmath>

#include "core/log.h"
#include "io/weight_store.h"
#include "model/checkpoint_reader.h"

namespace bf {

DraftCache DraftCache::allocate(Backend& be, const DraftConfig& c, int32_t num_blocks,
                                int32_t block_size) {
  DraftCache cache;
  Shape shape{num_blocks, block_size, c.num_key_value_heads, c.head_dim};
  for (int32_t i = 0; i < c.num_hidden_layers; ++i)
    cache.kv.push_back(KvCache{be.zeros(shape), be.zeros(shape)});
  return cache;
}

size_t DraftCache::block_bytes(const DraftConfig& c, int32_t block_size, size_t elem_bytes) {
  return static_cast<size_t>(c.num_hidden_layers) * 2 * block_size * c.num_key_value_heads *
         c.head_dim * elem_bytes;
}

std::unique_ptr<DFlashDrafter> DFlashDrafter::load(const std::filesystem::path& draft_dir,
                                                   const Model& target, LoadFormat format) {
  DraftConfig config = load_draft_config(draft_dir);
  check_draft_fits_target(config, target.config());
  std::unique_ptr<DFlashDrafter> drafter(new DFlashDrafter(std::move(config), target));
  if (format == LoadFormat::kDummy) {
    CheckpointReader reader = CheckpointReader::dummy(target.backend());
    drafter->load_weights(reader, "");
  } else {
    WeightStore store = WeightStore::open(draft_dir);
    CheckpointReader reader(store, target.backend());
    // z-lab checkpoints name weights from the model root; some exports add "model.".
    drafter->load_weights(reader, store.contains("model.fc.weight") ? "model." : "");
  }
  log_info("loaded ", drafter->config_.summary(),
           format == LoadFormat::kDummy ? " (dummy random weights)" : "");
  return drafter;
}

void DFlashDrafter::load_weights(CheckpointReader& reader, const std::string& base) {
  const DraftConfig& c = config_;
  const int64_t H = c.hidden_size, taps = static_cast<int64_t>(c.target_layer_ids.size());

  // fc: [H, taps*H] over the concatenated tap features. Split by input columns so that
  // fc(concat(h_0..h_k)) = sum_j h_j fc_j^T needs no concatenation at run time.
  Tensor fc = reader.take_host(base + "fc.weight", {H, taps * H});
  for (int64_t j = 0; j < taps; ++j) {
    Tensor part = Tensor::empty({H, H});
    for (int64_t r = 0; r < H; ++r)
      std::copy_n(fc.f32() + r * taps * H + j * H, H, part.f32() + r * H);
    fc_per_tap_.push_back(backend_.upload(part));
  }
  hidden_norm_ = reader.take(base + "hidden_norm.weight", {H});
  norm_ = reader.take(base + "norm.weight", {H});
  for (int32_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = base + "layers." + std::to_string(i) + ".";
    Layer layer;
    layer.input_layernorm = reader.take(p + "input_layernorm.weight", {H});
    layer.post_attention_layernorm = reader.take(p + "post_attention_layernorm.weight", {H});
    layer.q_proj = reader.take(p + "self_attn.q_proj.weight", {c.q_dim(), H});
    layer.k_proj = reader.take(p + "self_attn.k_proj.weight", {c.kv_dim(), H});
    layer.v_proj = reader.take(p + "self_attn.v_proj.weight", {c.kv_dim(), H});
    layer.o_proj = reader.take(p + "self_attn.o_proj.weight", {H, c.q_dim()});
    layer.q_norm = reader.take(p + "self_attn.q_norm.weight", {c.head_dim});
    layer.k_norm = reader.take(p + "self_attn.k_norm.weight", {c.head_dim});
    layer.gate_proj = reader.take(p + "mlp.gate_proj.weight", {c.intermediate_size, H});
    layer.up_proj = reader.take(p + "mlp.up_proj.weight", {c.intermediate_size, H});
    layer.down_proj = reader.take(p + "mlp.down_proj.weight", {H, c.intermediate_size});
    layers_.push_back(std::move(layer));
  }
  // The drafter drafts with the target's embedding and LM head; copies some exports carry
  // are not used.
  for (const char* name : {"embed_tokens.weight", "lm_head.weight", "model.embed_tokens.weight"})
    if (reader.contains(name)) {
      log_warn("DFlash drafter: ignoring its own '", name, "' (the target's is used)");
      reader.mark_used(name);
    }
  reader.check_all_used();
}

Tensor DFlashDrafter::project_heads(const Tensor& x, const Tensor& proj, const Tensor& norm,
                                    int64_t heads, const std::vector<int32_t>& positions) const {
  Backend& be = backend_;
  const DraftConfig& c = config_;
  const int64_t n = x.dim(0);
  Tensor raw = be.empty({n * heads, c.head_dim});
  Tensor raw_2d = raw.reshape({n, heads * c.head_dim});
  be.matmul(x, proj, raw_2d);
  Tensor out = be.empty({n, heads, c.head_dim});
  Tensor out_rows = out.reshape({n * heads, c.head_dim});
  be.rms_norm(raw, norm, c.rms_norm_eps, /*one_centered=*/false, out_rows);
  be.rope(out, positions, c.head_dim, c.rope_theta);
  return out;
}

void DFlashDrafter::write_kv(const Layer& layer, const Tensor& x, const ForwardBatch& rows,
                             KvCache& cache) const {
  Backend& be = backend_;
  const DraftConfig& c = config_;
  const int64_t n = x.dim(0);
  Tensor k = project_heads(x, layer.k_proj, layer.k_norm, c.num_key_value_heads, rows.positions);
  Tensor v = be.empty({n, c.num_key_value_heads, c.head_dim});
  Tensor v_2d = v.reshape({n, c.kv_dim()});
  be.matmul(x, layer.v_proj, v_2d);
  be.kv_write(k, v, rows, cache);
}

void DFlashDrafter::write_context(const std::vector<Tensor>& captured, const ContextRows& rows,
                                  DraftCache& cache) const {
  if (rows.empty()) return;
  Backend& be = backend_;
  const DraftConfig& c = config_;
  BF_CHECK(captured.size() == fc_per_tap_.size(), "DFlash: ", captured.size(),
           " captured target layers for ", fc_per_tap_.size(), " taps");
  BF_CHECK(rows.positions.size() == rows.rows.size() && rows.slots.size() == rows.rows.size(),
           "DFlash: context rows, positions and slots differ in length");
  const int64_t n = static_cast<int64_t>(rows.rows.size()), H = c.hidden_size;
  Tensor fused = be.empty({n, H});
  Tensor tap_rows = be.empty({n, H}), projected = be.empty({n, H});
  for (size_t j = 0; j < captured.size(); ++j) {
    be.embedding(rows.rows, captured[j], tap_rows);  // gather the committed rows
    be.matmul(tap_rows, fc_per_tap_[j], j == 0 ? fused : projected);
    if (j > 0) be.add(fused, projected);
  }
  Tensor context = be.empty({n, H});
  be.rms_norm(fused, hidden_norm_, c.rms_norm_eps, /*one_centered=*/false, context);
  ForwardBatch where;  // one batch for every layer: RoPE reads positions, kv_write slots
  where.positions = rows.positions;
  where.slot_mapping = rows.slots;
  for (size_t i = 0; i < layers_.size(); ++i) write_kv(layers_[i], context, where, cache.kv[i]);
}

void DFlashDrafter::attention(const Layer& layer, bool sliding, const Tensor& x,
                              const ForwardBatch& batch, KvCache& cache, Tensor& out) const {
  Backend& be = backend_;
  const DraftConfig& c = config_;
  const int64_t T = x.dim(0);
  Tensor q = project_heads(x, layer.q_proj, layer.q_norm, c.num_attention_heads, batch.positions);
  write_kv(layer, x, batch, cache);  // the block's own K/V

  AttentionParams params{.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim)),
                         .causal = sliding,
                         .sliding_window = sliding ? c.sliding_window : 0};
  Tensor attn = be.empty({T, c.num_attention_heads, c.head_dim});
  be.paged_attention(q, cache, batch, params, attn);
  be.matmul(attn.reshape({T, c.q_dim()}), layer.o_proj, out);
}

Tensor DFlashDrafter::draft_logits(const ForwardBatch& batch, DraftCache& cache) const {
  return backend_.to_host(forward_logits(batch, cache));
}

std::vector<int32_t> DFlashDrafter::draft_tokens(const ForwardBatch& batch,
                                                 DraftCache& cache) const {
  return backend_.argmax_rows(forward_logits(batch, cache));
}

Tensor DFlashDrafter::forward_logits(const ForwardBatch& batch, DraftCache& cache) const {
  Backend& be = backend_;
  const DraftConfig& c = config_;
  const int64_t T = batch.num_tokens(), H = c.hidden_size;
  BF_CHECK(T > 0, "DFlash draft: empty batch");
  Tensor residual = be.empty({T, H});
  be.embedding(batch.token_ids, target_.embed_tokens(), residual);
  Tensor normed = be.empty({T, H}), block_out = be.empty({T, H});
  for (size_t i = 0; i < layers_.size(); ++i) {
    const Layer& layer = layers_[i];
    if (i == 0)
      be.rms_norm(residual, layer.input_layernorm, c.rms_norm_eps, false, normed);
    else
      be.add_rms_norm(residual, block_out, layer.input_layernorm, c.rms_norm_eps, false, normed);
    attention(layer, c.sliding_layers[i], normed, batch, cache.kv[i], block_out);
    be.add_rms_norm(residual, block_out, layer.post_attention_layernorm, c.rms_norm_eps, false,
                    normed);
    const int64_t inner = c.intermediate_size;
    Tensor gate = be.empty({T, inner}), up = be.empty({T, inner});
    be.matmul(normed, layer.gate_proj, gate);
    be.matmul(normed, layer.up_proj, up);
    be.silu_mul(gate, up, gate);
    be.matmul(gate, layer.down_proj, block_out);
  }
  be.add_rms_norm(residual, block_out, norm_, c.rms_norm_eps, false, normed);
  const int64_t R = static_cast<int64_t>(batch.logits_rows.size());
  BF_CHECK(R > 0, "DFlash draft: no rows to draft");
  Tensor selected = be.empty({R, H});
  be.embedding(batch.logits_rows, normed, selected);
  Tensor logits = be.empty({R, target_.config().vocab_size});
  be.matmul(selected, target_.lm_head(), logits);
  return logits;
}

}  // namespace bf
