// Qwen3.5 / Qwen3.6 text model (research/qwen35.md §2.0): embedding, pre-norm decoder
// layers (Gated DeltaNet or gated attention mixer, then SwiGLU or MoE), final norm, LM head.
// Residual adds are fused into the next norm. Written only against the backend interface.
#include "model/model.h"

#include <algorithm>

#include "core/log.h"
#include "io/weight_store.h"
#include "model/checkpoint_reader.h"

namespace bf {

ModelCache ModelCache::allocate(Backend& be, const ModelConfig& c, const CacheSizes& sizes) {
  ModelCache cache;
  cache.sizes = sizes;
  for (LayerType type : c.layer_types) {
    if (type == LayerType::kFullAttention) {
      Shape shape{sizes.num_blocks, sizes.block_size, c.num_key_value_heads, c.head_dim};
      cache.kv.push_back(KvCache{be.zeros(shape), be.zeros(shape)});
    } else {
      cache.gdn.push_back(GdnStatePool{
          be.zeros({sizes.num_state_slots, c.linear_conv_dim(), c.linear_conv_kernel_dim - 1},
                   DType::kF32),
          be.zeros({sizes.num_state_slots, c.linear_num_value_heads, c.linear_key_head_dim,
                    c.linear_value_head_dim},
                   DType::kF32)});
    }
  }
  return cache;
}

size_t ModelCache::kv_block_bytes(const ModelConfig& c, int32_t block_size, size_t elem_bytes) {
  return static_cast<size_t>(c.num_full_attention_layers()) * 2 * block_size *
         c.num_key_value_heads * c.head_dim * elem_bytes;
}

size_t ModelCache::state_slot_bytes(const ModelConfig& c) {
  size_t per_layer = (static_cast<size_t>(c.linear_conv_dim()) * (c.linear_conv_kernel_dim - 1) +
                      static_cast<size_t>(c.linear_num_value_heads) * c.linear_key_head_dim *
                          c.linear_value_head_dim) *
                     sizeof(float);
  return per_layer * c.num_linear_attention_layers();
}

std::unique_ptr<Model> Model::load(const std::filesystem::path& model_dir, Backend& backend,
                                   LoadFormat format) {
  ModelConfig config = load_model_config(model_dir);
  std::unique_ptr<Model> model(new Model(std::move(config), backend));
  if (format == LoadFormat::kDummy) {
    CheckpointReader reader = CheckpointReader::dummy(backend);
    model->load_weights(reader);
  } else {
    WeightStore store = WeightStore::open(model_dir);
    CheckpointReader reader(store, backend);
    model->load_weights(reader);
  }
  log_info("loaded ", model->config_.summary(),
           format == LoadFormat::kDummy ? " (dummy random weights)" : "");
  return model;
}

void Model::load_weights(CheckpointReader& reader) {
  const ModelConfig& c = config_;
  const std::string base = c.nested ? "model.language_model." : "model.";
  const int64_t hidden = c.hidden_size;

  embed_tokens_ = reader.take(base + "embed_tokens.weight", {c.vocab_size, hidden});
  final_norm_ = reader.take(base + "norm.weight", {hidden});
  tie_ = c.tie_word_embeddings;
  if (!tie_) {
    lm_head_ = reader.take("lm_head.weight", {c.vocab_size, hidden});
  } else if (reader.contains("lm_head.weight")) {
    reader.mark_used("lm_head.weight");  // tied: some exports still write a copy
  }

  int32_t kv_index = 0, gdn_index = 0;
  for (int32_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string prefix = base + "layers." + std::to_string(i) + ".";
    Layer layer;
    layer.type = c.layer_types[i];
    layer.input_layernorm = reader.take(prefix + "input_layernorm.weight", {hidden});
    layer.post_attention_layernorm =
        reader.take(prefix + "post_attention_layernorm.weight", {hidden});
    if (layer.type == LayerType::kLinearAttention) {
      layer.cache_index = gdn_index++;
      layer.linear_attn.load(reader, prefix + "linear_attn.", c);
    } else {
      layer.cache_index = kv_index++;
      layer.self_attn.load(reader, prefix + "self_attn.", c);
    }
    layer.mlp.load(reader, prefix + "mlp.", c);
    layers_.push_back(std::move(layer));
  }
  reader.check_all_used();
}

void Model::forward_layer(Backend& be, const ModelConfig& c, const Layer& layer, bool first,
                          const ForwardBatch& batch, ModelCache& cache, Tensor& residual,
                          Tensor& normed, Tensor& block_out) {
  if (first)
    be.rms_norm(residual, layer.input_layernorm, c.rms_norm_eps, true, normed);
  else
    be.add_rms_norm(residual, block_out, layer.input_layernorm, c.rms_norm_eps, true, normed);
  const std::vector<Tensor> mlp_weights = layer.mlp.weights_read_by_every_token();
  if (layer.type == LayerType::kLinearAttention)
    layer.linear_attn.forward(be, c, normed, batch, cache.gdn[layer.cache_index], block_out,
                              mlp_weights);
  else
    layer.self_attn.forward(be, c, normed, batch, cache.kv[layer.cache_index], block_out,
                            mlp_weights);
  const Backend::FoldedNorm post_norm{&residual, &block_out, &layer.post_attention_layernorm,
                                      c.rms_norm_eps, true};
  if (layer.mlp.forward_folding_norm(be, c, post_norm, normed, block_out)) return;
  be.add_rms_norm(residual, block_out, layer.post_attention_layernorm, c.rms_norm_eps, true,
                  normed);
  layer.mlp.forward(be, c, normed, block_out);
}

ForwardOutput Model::forward(const ForwardBatch& batch, ModelCache& cache,
                             const std::vector<int32_t>& capture_layers,
                             LogitsOutput logits_output) const {
  Backend& be = backend_;
  const ModelConfig& c = config_;
  const int64_t T = batch.num_tokens();
  BF_CHECK(T > 0, "forward: empty batch");
  BF_CHECK(batch.positions.size() == batch.token_ids.size() &&
               batch.slot_mapping.size() == batch.token_ids.size(),
           "forward: token_ids, positions and slot_mapping must have one entry per token");
  for (int32_t id : batch.token_ids)
    BF_CHECK(id >= 0 && id < c.vocab_size, "token id ", id, " out of range [0, ", c.vocab_size,
             ")");

  ForwardOutput output;
  output.captured_hidden.resize(capture_layers.size());
  std::vector<int32_t> all_rows;  // 0..T-1, built when a capture needs a copy
  Tensor residual = be.empty({T, c.hidden_size});
  be.embedding(batch.token_ids, embed_tokens_, residual);
  Tensor normed = be.empty({T, c.hidden_size});
  Tensor block_out = be.empty({T, c.hidden_size});

  for (size_t i = 0; i < layers_.size(); ++i) {
    forward_layer(be, c, layers_[i], i == 0, batch, cache, residual, normed, block_out);

    for (size_t j = 0; j < capture_layers.size(); ++j) {
      if (capture_layers[j] != static_cast<int32_t>(i)) continue;
      // The decoder layer's output is residual + MLP output (the add is fused into the
      // next norm in the main path, so do it explicitly here).
      if (all_rows.empty())
        for (int32_t r = 0; r < T; ++r) all_rows.push_back(r);
      Tensor layer_output = be.empty({T, c.hidden_size});
      be.embedding(all_rows, residual, layer_output);
      be.add(layer_output, block_out);
      output.captured_hidden[j] = layer_output;
    }
  }
  be.add_rms_norm(residual, block_out, final_norm_, c.rms_norm_eps, true, normed);

  // Only the rows that need logits go through the LM head.
  const int64_t R = static_cast<int64_t>(batch.logits_rows.size());
  if (R > 0) {
    // Every row in order (decode steps): the LM head reads the normed rows in place.
    bool all_rows_in_order = R == T;
    for (int64_t r = 0; r < R && all_rows_in_order; ++r)
      all_rows_in_order = batch.logits_rows[r] == r;
    Tensor selected = normed;
    if (!all_rows_in_order) {
      selected = be.empty({R, c.hidden_size});
      be.embedding(batch.logits_rows, normed, selected);
    }
    if (logits_output == LogitsOutput::kDevice || R <= kLogitsRowsPerPass) {
      Tensor logits = be.empty({R, c.vocab_size});
      be.matmul(selected, lm_head(), logits);
      if (logits_output == LogitsOutput::kArgmax)
        output.argmax = be.argmax_rows(logits);
      else if (logits_output == LogitsOutput::kDevice)
        output.device_logits = logits;
      else
        output.logits = be.to_host(logits);
    } else {
      lm_head_in_passes(selected, logits_output, output);
    }
  }
  return output;
}

// Many logits rows (prompt logprobs over a long prefill chunk: a row per position) would need
// rows x vocab on the device at once, 4 GB for 8192 rows of Qwen3.5's 248320 tokens; in passes
// of kLogitsRowsPerPass rows the device holds one pass. The host result is the same.
void Model::lm_head_in_passes(const Tensor& selected, LogitsOutput logits_output,
                              ForwardOutput& output) const {
  Backend& be = backend_;
  const int64_t R = selected.dim(0), vocab = config_.vocab_size;
  if (logits_output == LogitsOutput::kFull) output.logits = Tensor::empty({R, vocab});
  for (int64_t r0 = 0; r0 < R; r0 += kLogitsRowsPerPass) {
    const int64_t rows = std::min<int64_t>(kLogitsRowsPerPass, R - r0);
    Tensor part = be.empty({rows, vocab});
    be.matmul(selected.rows(r0, rows), lm_head(), part);
    if (logits_output == LogitsOutput::kArgmax) {
      const std::vector<int32_t> ids = be.argmax_rows(part);
      output.argmax.insert(output.argmax.end(), ids.begin(), ids.end());
    } else {
      const Tensor host = be.to_host(part);
      std::copy(host.f32(), host.f32() + rows * vocab, output.logits.f32() + r0 * vocab);
    }
  }
}

}  // namespace bf
