// Model: a loaded Qwen3.5 / Qwen3.6 text model (dense or MoE) and its forward over a
// flattened batch. ModelCache: the paged KV cache of every full-attention layer and the
// Gated DeltaNet state pool of every linear-attention layer, sized by the caller.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "model/checkpoint_reader.h"
#include "model/config.h"
#include "model/layers.h"

namespace bf {

struct CacheSizes {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t num_state_slots = 0;
};

struct ModelCache {
  CacheSizes sizes;
  std::vector<KvCache> kv;        // one per full-attention layer, in layer order
  std::vector<GdnStatePool> gdn;  // one per linear-attention layer, in layer order

  static ModelCache allocate(Backend& be, const ModelConfig& config, const CacheSizes& sizes);
  // Bytes one KV block (all layers) and one state slot (all layers) take.
  static size_t kv_block_bytes(const ModelConfig& config, int32_t block_size, size_t elem_bytes);
  static size_t state_slot_bytes(const ModelConfig& config);
};

// What leaves the device for the logits rows: the full rows (sampling, logprobs), only
// each row's argmax (greedy requests that need nothing else), or nothing (kDevice: the logits
// stay on the backend's device for a device-side consumer such as a sampler or a replayed
// CUDA graph's caller).
enum class LogitsOutput { kFull, kArgmax, kDevice };

struct ForwardOutput {
  Tensor logits;  // [batch.logits_rows.size(), vocab], host f32 (LogitsOutput::kFull)
  std::vector<int32_t> argmax;  // per logits row (LogitsOutput::kArgmax)
  // [batch.logits_rows.size(), vocab] in the backend's activation dtype, on its device
  // (LogitsOutput::kDevice)
  Tensor device_logits;
  // Hidden states (decoder layer outputs) of the layers asked for, all batch rows
  // [T, hidden], on the backend's device (the DFlash drafter consumes them there).
  std::vector<Tensor> captured_hidden;
};

class Model {
 public:
  // Loads config.json, generation_config.json and the safetensors weights of `model_dir`.
  // kDummy: config.json only, random weights (benchmarking real shapes).
  static std::unique_ptr<Model> load(const std::filesystem::path& model_dir, Backend& backend,
                                     LoadFormat format = LoadFormat::kSafetensors);

  const ModelConfig& config() const { return config_; }
  Backend& backend() const { return backend_; }

  // Runs every layer over the batch's new tokens, updating `cache`; returns the logits of
  // batch.logits_rows and the outputs of the decoder layers listed in `capture_layers`.
  // The most logits rows one LM-head pass computes on the device (kFull and kArgmax run more
  // rows in passes; kDevice returns all rows at once, so its callers keep them few).
  static constexpr int64_t kLogitsRowsPerPass = 1024;

  ForwardOutput forward(const ForwardBatch& batch, ModelCache& cache,
                        const std::vector<int32_t>& capture_layers = {},
                        LogitsOutput logits_output = LogitsOutput::kFull) const;

  struct Layer {
    LayerType type;
    int32_t cache_index;  // index into ModelCache::kv or ModelCache::gdn
    Tensor input_layernorm, post_attention_layernorm;  // [H], (1+w)
    GatedDeltaNet linear_attn;
    GatedAttention self_attn;
    FeedForward mlp;
  };
  // One decoder layer, as forward() runs each: residual += block_out (the previous layer's
  // output; not for the first layer) and its norm into normed, the mixer, the same for the
  // post-attention norm, then the MLP / MoE into block_out. Public for bench_cuda, which runs
  // layers of random weights without a loaded Model.
  static void forward_layer(Backend& be, const ModelConfig& c, const Layer& layer, bool first,
                            const ForwardBatch& batch, ModelCache& cache, Tensor& residual,
                            Tensor& normed, Tensor& block_out);

  // The token embedding table [vocab, hidden] and the LM head (for drafters that share them).
  const Tensor& embed_tokens() const { return embed_tokens_; }
  const Tensor& lm_head() const { return tie_ ? embed_tokens_ : lm_head_; }

 private:
  void lm_head_in_passes(const Tensor& selected, LogitsOutput logits_output,
                         ForwardOutput& output) const;

  Model(ModelConfig config, Backend& backend) : config_(std::move(config)), backend_(backend) {}
  void load_weights(CheckpointReader& reader);

  ModelConfig config_;
  Backend& backend_;
  Tensor embed_tokens_, lm_head_, final_norm_;
  bool tie_ = false;
  std::vector<Layer> layers_;
};

}  // namespace bf
