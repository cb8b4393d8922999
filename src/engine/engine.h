// Engine: owns the model, its cache and the scheduler, and runs one step at a time on one
// thread: schedule -> build the flattened batch -> forward -> sample -> commit -> updates.
// Requests come in as token ids + SamplingParams; each of a request's n sequences reports
// SequenceUpdates (new tokens, logprobs, text with stop strings applied, finish) through the
// request's callback. No JSON, no HTTP: the server and the CLI sit on top.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>

#include "engine/engine_types.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/spec_decode.h"
#include "model/decode_graphs.h"
#include "model/dflash_drafter.h"
#include "model/model.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace bf {

struct EngineConfig {
  int32_t max_num_seqs = 64;
  int32_t max_num_batched_tokens = 2048;
  int32_t max_model_len = 0;  // 0: the model's max_position_embeddings
  int32_t block_size = 16;
  // Memory for KV blocks and GDN state slots; on the CPU backend a host allocation.
  size_t cache_memory_bytes = size_t{2} << 30;
  int32_t max_logprobs = default_max_logprobs;
  // DFlash speculative decoding (with a drafter): draft tokens per step, 1..block_size-1
  // (0: the drafter's block_size - 1, vLLM's num_speculative_tokens).
  int32_t num_speculative_tokens = 0;
  // Seconds between the speculative-decoding log lines (vLLM logs every 10 s).
  double spec_log_interval_s = 10.0;
  // No decode graphs (vLLM's --enforce-eager). Without it, a backend that has graphs records
  // one per batch-size bucket at start-up (not with a drafter: its steps need hidden states).
  bool enforce_eager = false;
  // Sample on the backend's device (Backend::sample_rows: only the tokens and logprobs leave
  // it) in steps whose rows need nothing host-only (penalties, min_tokens masks, prompt
  // logprobs, speculative verification). false, or BLOCKFLASH_HOST_SAMPLER=1 in the
  // environment, keeps every step on the host sampler.
  bool device_sampling = true;
};

struct EngineStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_blocks = 0;
  int32_t num_free_blocks = 0;
  int32_t num_state_slots = 0;
  int32_t num_free_state_slots = 0;
  double kv_cache_usage = 0.0;
  int64_t num_preemptions = 0;
  bool speculative = false;  // a drafter is configured
  SpecDecodeStats spec;      // all zero without a drafter
};

class Engine {
 public:
  // drafter: a DFlash drafter for `model` (speculative decoding), or null.
  Engine(std::unique_ptr<Model> model, std::shared_ptr<const Tokenizer> tokenizer,
         EngineConfig config, std::unique_ptr<DFlashDrafter> drafter = nullptr);

  // Checks the request (prompt length vs max_model_len, ids in range, sampling params) and
  // queues its n sequences. Throws bf::Error with a message for the client on bad input.
  void add_request(EngineRequest request, UpdateCallback callback);
  // The checks add_request makes; reads only immutable state, so any thread may call it.
  void validate_request(const EngineRequest& request) const;
  // Ends every sequence of the request now (blocks and slots freed); each reports a final
  // update with finish reason "abort". Unknown ids are ignored.
  void abort_request(int64_t request_id);

  bool has_work() const { return scheduler_.has_unfinished(); }
  // Runs one scheduler step (no-op when idle).
  void step();

  // Testing hook: may rewrite the drafter's proposal for a sequence (keeping its length),
  // e.g. to force long acceptances that a random-weight drafter never produces. The verify
  // path is unchanged, so what it commits stays exactly plain decoding's.
  using DraftOverride = std::function<void(const Sequence& seq, std::vector<int32_t>& draft)>;
  void set_draft_override(DraftOverride override) { draft_override_ = std::move(override); }
  // Testing hook: sees the drafter's logits of every draft (k rows of vocab, host f32) before
  // the override, e.g. to compare them with a reference implementation.
  using DraftObserver = std::function<void(const Sequence& seq, std::span<const float> logits)>;
  void set_draft_observer(DraftObserver observer) { draft_observer_ = std::move(observer); }
  bool speculative() const { return drafter_ != nullptr; }

  const ModelConfig& model_config() const { return model_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const EngineConfig& config() const { return config_; }
  EngineStats stats() const;
  // SamplingParams with the checkpoint's generation_config.json defaults filled in where
  // the caller left a field unset (vLLM's --generation-config auto).
  const GenerationDefaults& generation_defaults() const {
    return model_->config().generation_defaults;
  }

 private:
  struct SequenceContext {
    SamplingParams params;
    uint64_t seed = 0;
    UpdateCallback callback;
    std::unique_ptr<IncrementalDetokenizer> detokenizer;
    std::string text;         // output text so far (stop strings applied)
    size_t sent_text_bytes = 0;  // how much of `text` has gone out in updates
    bool prompt_logprobs_done = false;
    std::vector<std::optional<PositionLogprobs>> prompt_logprobs;
  };

  int32_t num_speculative_tokens() const { return drafter_ ? config_.num_speculative_tokens : 0; }
  // The drafter's proposal for every verify entry of the plan (empty for the others).
  std::vector<std::vector<int32_t>> propose_drafts(const StepPlan& plan);
  ForwardBatch build_batch(const StepPlan& plan,
                           const std::vector<std::vector<int32_t>>& drafts) const;
  // Context K/V for the drafter: every committed row of this step's forward.
  void write_draft_context(const StepPlan& plan, const ForwardBatch& batch,
                           const ForwardOutput& output,
                           const std::vector<VerifyResult>& verified);
  void commit_verified(const ScheduledSequence& entry, const std::vector<int32_t>& draft,
                       const VerifyResult& result);
  void log_spec_stats();
  // What one step drew: a token per plain sampling entry (plan order) with its details, and
  // each verify entry's outcome.
  struct StepSamples {
    std::vector<SampleResult> samples;
    std::vector<VerifyResult> verified;  // per plan entry (empty for plain ones)
  };
  StepSamples sample_step(const StepPlan& plan, const std::vector<std::vector<int32_t>>& drafts,
                          const ForwardOutput& output, LogitsOutput logits_output);
  // Commits the step's tokens: plain entries through the scheduler, verify entries token by
  // token (stops inside an accepted block end the sequence there).
  void commit_step(const StepPlan& plan, const std::vector<std::vector<int32_t>>& drafts,
                   const StepSamples& samples);
  // Whether every row with logits in the plan is a greedy sample that needs nothing but the
  // argmax (no logprobs, penalties or min_tokens masking): then only ids leave the device.
  bool argmax_suffices(const StepPlan& plan) const;
  // Whether every row with logits in the plan is a plain sample (no drafts to verify) that
  // Backend::sample_rows can draw: no penalties, min_tokens satisfied, prompt logprobs done.
  bool device_sampling_suffices(const StepPlan& plan) const;
  void collect_prompt_logprobs(const ScheduledSequence& entry, const Tensor& logits,
                               size_t first_row);
  // Applies eos / stop tokens / stop strings to the newly sampled token of seq; returns the
  // update to send (finished set by the caller once the scheduler has settled).
  void process_new_token(Sequence& seq, SequenceContext& context, const SampleResult& sample,
                         SequenceUpdate& update);
  void send_finished();

  std::unique_ptr<Model> model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  EngineConfig config_;
  bool use_graphs_ = false;  // decode graphs: the cache then has one more slot and block
  ModelCache cache_;
  Scheduler scheduler_;
  std::map<SeqId, SequenceContext> contexts_;
  std::map<SeqId, SequenceUpdate> pending_updates_;  // built during a step, sent at its end
  int64_t num_preemptions_ = 0;
  std::unique_ptr<DFlashDrafter> drafter_;
  std::unique_ptr<DecodeGraphRunner> graphs_;
  DraftOverride draft_override_;
  DraftObserver draft_observer_;
  DraftCache draft_cache_;
  SpecDecodeStats spec_stats_;
  SpecDecodeStats spec_stats_logged_;  // at the last log line
  double last_spec_log_s_ = 0.0;
};

}  // namespace bf
