#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/log.h"
#include "engine/random.h"
#include "engine/sampler.h"

namespace bf {
namespace {

// Bytes of a possible stop-string prefix held back while streaming: the longest stop
// string minus one, moved back to a UTF-8 character boundary.
size_t safe_text_end(const std::string& text, size_t holdback) {
  if (holdback >= text.size()) return 0;
  size_t end = text.size() - holdback;
  while (end > 0 && end < text.size() && (static_cast<uint8_t>(text[end]) & 0xC0) == 0x80) --end;
  return end;
}

SchedulerConfig scheduler_config(const EngineConfig& config, int32_t num_blocks,
                                 int32_t num_slots) {
  SchedulerConfig sc;
  sc.max_num_seqs = config.max_num_seqs;
  sc.max_num_batched_tokens = config.max_num_batched_tokens;
  sc.max_model_len = config.max_model_len;
  sc.block_size = config.block_size;
  sc.num_blocks = num_blocks;
  sc.num_state_slots = num_slots;
  return sc;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Splits the cache budget: the state slots of every running sequence first (fixed-size; with
// speculative decoding 1 + K each, one snapshot per verified token), the rest into KV blocks
// (target and drafter share block ids), never more blocks than max_num_seqs full-length
// sequences need.
CacheSizes plan_cache(const ModelConfig& model, const EngineConfig& config,
                      const DFlashDrafter* drafter, size_t kv_elem_bytes) {
  CacheSizes sizes;
  sizes.block_size = config.block_size;
  const int32_t spec_tokens = drafter ? config.num_speculative_tokens : 0;
  const int32_t slots_per_seq = 1 + spec_tokens;
  size_t slot_bytes = ModelCache::state_slot_bytes(model);
  size_t block_bytes = ModelCache::kv_block_bytes(model, config.block_size, kv_elem_bytes);
  if (drafter)
    block_bytes += DraftCache::block_bytes(drafter->config(), config.block_size, kv_elem_bytes);
  int64_t blocks_per_seq =
      (config.max_model_len + spec_tokens + config.block_size - 1) / config.block_size;
  // States of max_num_seqs sequences, unless they would leave no room for the KV blocks of one
  // max_model_len sequence (1 + K slots each with speculation: 2.5 GB per Qwen3.5-27B
  // sequence at K = 15); then fewer sequences run at once (the scheduler admits by free
  // slots), as vLLM caps concurrency by what the cache holds.
  int32_t num_seqs_with_states = config.max_num_seqs;
  const size_t seq_state_bytes = slot_bytes * slots_per_seq;
  const size_t one_seq_blocks = static_cast<size_t>(blocks_per_seq) * block_bytes;
  if (seq_state_bytes > 0 &&
      seq_state_bytes * num_seqs_with_states + one_seq_blocks > config.cache_memory_bytes &&
      config.cache_memory_bytes > one_seq_blocks + seq_state_bytes) {
    num_seqs_with_states = static_cast<int32_t>(
        (config.cache_memory_bytes - one_seq_blocks) / seq_state_bytes);
    log_warn("Gated DeltaNet states of ", config.max_num_seqs, " sequences (", slots_per_seq,
             " slots each, ", seq_state_bytes, " bytes per sequence) do not fit next to the KV "
             "cache: at most ", num_seqs_with_states, " sequences run at once");
  }
  sizes.num_state_slots = num_seqs_with_states * slots_per_seq;
  size_t slots_total = slot_bytes * sizes.num_state_slots;
  BF_CHECK(slots_total < config.cache_memory_bytes, "cache memory (", config.cache_memory_bytes,
           " bytes) cannot hold the Gated DeltaNet states of one sequence (", slots_total,
           " bytes)");
  int64_t wanted = blocks_per_seq * num_seqs_with_states;
  int64_t affordable = block_bytes == 0 ? wanted
                                        : static_cast<int64_t>((config.cache_memory_bytes - slots_total) / block_bytes);
  sizes.num_blocks = static_cast<int32_t>(std::min<int64_t>({wanted, affordable, 1 << 30}));
  BF_CHECK(sizes.num_blocks >= blocks_per_seq || model.num_full_attention_layers() == 0,
           "max_model_len ", config.max_model_len, " needs ", blocks_per_seq,
           " KV blocks but the cache memory holds only ", sizes.num_blocks,
           "; lower --max-model-len or raise the cache memory");
  return sizes;
}

// Decode graphs pad batches with dummy decodes that need a state slot and a KV block of
// their own: one more of each, past the ones the scheduler hands out.
CacheSizes with_graph_padding(CacheSizes sizes, bool use_graphs) {
  if (use_graphs) {
    ++sizes.num_blocks;
    ++sizes.num_state_slots;
  }
  return sizes;
}

}  // namespace

Engine::Engine(std::unique_ptr<Model> model, std::shared_ptr<const Tokenizer> tokenizer,
               EngineConfig config, std::unique_ptr<DFlashDrafter> drafter)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      config_([&] {
        if (config.max_model_len <= 0)
          config.max_model_len = model_->config().max_position_embeddings;
        if (drafter) {
          const int32_t most = drafter->config().block_size - 1;
          if (config.num_speculative_tokens == 0) config.num_speculative_tokens = most;
          BF_CHECK(config.num_speculative_tokens >= 1 && config.num_speculative_tokens <= most,
                   "num_speculative_tokens must be in [1, ", most,
                   "] for this DFlash drafter (block_size ", most + 1, "), got ",
                   config.num_speculative_tokens);
        }
        if (const char* host = std::getenv("BLOCKFLASH_HOST_SAMPLER");
            host != nullptr && std::string(host) == "1")
          config.device_sampling = false;
        BF_CHECK(config.max_num_seqs >= 1, "max_num_seqs must be at least 1");
        BF_CHECK(config.max_num_batched_tokens >= 1, "max_num_batched_tokens must be at least 1");
        BF_CHECK(config.block_size >= 1 && config.block_size <= 1024,
                 "block_size must be in [1, 1024]");
        return config;
      }()),
      use_graphs_(model_->backend().supports_graphs() && !config_.enforce_eager && !drafter),
      cache_(ModelCache::allocate(
          model_->backend(), model_->config(),
          with_graph_padding(plan_cache(model_->config(), config_, drafter.get(),
                                        dtype_size(model_->backend().activation_dtype())),
                             use_graphs_))),
      scheduler_(scheduler_config(config_, cache_.sizes.num_blocks - (use_graphs_ ? 1 : 0),
                                  cache_.sizes.num_state_slots - (use_graphs_ ? 1 : 0))),
      drafter_(std::move(drafter)) {
  if (drafter_) {
    draft_cache_ = DraftCache::allocate(model_->backend(), drafter_->config(),
                                        cache_.sizes.num_blocks, config_.block_size);
    // Every position is exported from the start (as zeros), as vLLM's per-position counters.
    spec_stats_.accepted_per_position.assign(config_.num_speculative_tokens, 0);
    log_info("speculative decoding: DFlash, ", config_.num_speculative_tokens,
             " draft tokens per step, ", 1 + config_.num_speculative_tokens,
             " state slots per sequence");
    last_spec_log_s_ = now_seconds();
  }
  if (use_graphs_) {
    // The last slot and block are the padding's (the scheduler never hands them out).
    const GraphPadding padding{.state_slot = cache_.sizes.num_state_slots - 1,
                               .kv_block = cache_.sizes.num_blocks - 1};
    graphs_ = std::make_unique<DecodeGraphRunner>(
        *model_, cache_, decode_graph_buckets(config_.max_num_seqs), padding,
        config_.max_model_len);
    graphs_->capture();
  }
  log_info("engine: ", cache_.sizes.num_blocks, " KV blocks of ", config_.block_size,
           " tokens, ", cache_.sizes.num_state_slots, " state slots, max_model_len ",
           config_.max_model_len, ", max_num_seqs ", config_.max_num_seqs,
           ", max_num_batched_tokens ", config_.max_num_batched_tokens);
}

void Engine::validate_request(const EngineRequest& request) const {
  const int32_t vocab = model_->config().vocab_size;
  const int32_t prompt_len = static_cast<int32_t>(request.prompt_token_ids.size());
  const SamplingParams& params = request.params;
  params.validate(vocab, config_.max_logprobs);
  BF_CHECK(prompt_len > 0, "the prompt is empty");
  for (int32_t id : request.prompt_token_ids)
    BF_CHECK(id >= 0 && id < vocab, "prompt token id ", id, " is out of range [0, ", vocab, ")");
  BF_CHECK(prompt_len + params.max_tokens <= config_.max_model_len,
           "this model's maximum context length is ", config_.max_model_len,
           " tokens, but the request has ", prompt_len, " prompt tokens and asks for ",
           params.max_tokens, " output tokens (", prompt_len + params.max_tokens, " in total)");
}

void Engine::add_request(EngineRequest request, UpdateCallback callback) {
  validate_request(request);
  const SamplingParams& params = request.params;
  uint64_t seed = resolve_seed(params.seed);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (int32_t index = 0; index < params.n; ++index) {
    SeqId id{request.request_id, index};
    BF_CHECK(!contexts_.count(id), "request id ", request.request_id, " is already running");
    seqs.push_back(std::make_unique<Sequence>(id, request.prompt_token_ids, params.max_tokens,
                                              num_speculative_tokens()));
  }
  for (auto& seq : seqs) {
    SequenceContext context;
    context.params = params;
    context.seed = child_seed(seed, seq->id.index);
    context.callback = callback;
    context.detokenizer =
        std::make_unique<IncrementalDetokenizer>(*tokenizer_, params.skip_special_tokens);
    // Only the first sequence of a request reports prompt logprobs.
    context.prompt_logprobs_done = !params.prompt_logprobs || seq->id.index > 0;
    SeqId id = seq->id;
    scheduler_.add(std::move(seq));  // throws before anything is recorded for this id
    contexts_.emplace(id, std::move(context));
  }
}

void Engine::abort_request(int64_t request_id) {
  scheduler_.abort_request(request_id);
  send_finished();
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.num_running = scheduler_.num_running();
  s.num_waiting = scheduler_.num_waiting();
  s.num_blocks = scheduler_.block_manager().num_blocks();
  s.num_free_blocks = scheduler_.block_manager().num_free_blocks();
  s.num_state_slots = cache_.sizes.num_state_slots;
  s.num_free_state_slots = scheduler_.state_slot_pool().num_free();
  s.kv_cache_usage = scheduler_.block_manager().usage();
  s.num_preemptions = num_preemptions_;
  s.speculative = drafter_ != nullptr;
  s.spec = spec_stats_;
  return s;
}

std::vector<std::vector<int32_t>> Engine::propose_drafts(const StepPlan& plan) {
  std::vector<std::vector<int32_t>> drafts(plan.seqs.size());
  if (!drafter_) return drafts;
  const int32_t block_size = config_.block_size;
  const int32_t mask = drafter_->config().mask_token_id;
  ForwardBatch batch;
  for (const ScheduledSequence& entry : plan.seqs) {
    if (entry.num_draft_tokens == 0) continue;
    const Sequence& seq = *entry.seq;
    BatchSequence bs;
    bs.query_start = batch.num_tokens();
    bs.query_len = 1 + entry.num_draft_tokens;
    bs.num_computed = entry.num_computed;  // the drafter's context covers [0, num_computed)
    bs.block_table = seq.block_table;
    for (int32_t i = 0; i < bs.query_len; ++i) {
      const int32_t pos = entry.num_computed + i;
      batch.token_ids.push_back(i == 0 ? seq.token_at(pos) : mask);
      batch.positions.push_back(pos);
      batch.slot_mapping.push_back(seq.block_table.at(pos / block_size) * block_size +
                                   pos % block_size);
      if (i > 0) batch.logits_rows.push_back(bs.query_start + i);
    }
    batch.seqs.push_back(std::move(bs));
  }
  if (batch.seqs.empty()) return drafts;
  // Greedy drafts: only the argmax ids leave the device, unless an observer wants the logits.
  const int32_t vocab = model_->config().vocab_size;
  Tensor logits;
  std::vector<int32_t> ids;
  if (draft_observer_) {
    logits = drafter_->draft_logits(batch, draft_cache_);
    for (int64_t r = 0; r < logits.dim(0); ++r) {
      const float* row = logits.f32() + r * vocab;
      ids.push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
    }
  } else {
    ids = drafter_->draft_tokens(batch, draft_cache_);
  }
  size_t row = 0;
  for (size_t e = 0; e < plan.seqs.size(); ++e) {
    if (draft_observer_ && plan.seqs[e].num_draft_tokens > 0)
      draft_observer_(*plan.seqs[e].seq,
                      std::span<const float>(logits.f32() + row * vocab,
                                             static_cast<size_t>(plan.seqs[e].num_draft_tokens) * vocab));
    for (int32_t i = 0; i < plan.seqs[e].num_draft_tokens; ++i, ++row) drafts[e].push_back(ids[row]);
    if (draft_override_ && !drafts[e].empty()) {
      const size_t size = drafts[e].size();
      draft_override_(*plan.seqs[e].seq, drafts[e]);
      BF_CHECK(drafts[e].size() == size, "draft override changed the draft length");
    }
  }
  return drafts;
}

ForwardBatch Engine::build_batch(const StepPlan& plan,
                                 const std::vector<std::vector<int32_t>>& drafts) const {
  ForwardBatch batch;
  const int32_t block_size = config_.block_size;
  for (size_t e = 0; e < plan.seqs.size(); ++e) {
    const ScheduledSequence& entry = plan.seqs[e];
    const Sequence& seq = *entry.seq;
    BatchSequence bs;
    bs.query_start = batch.num_tokens();
    bs.query_len = entry.num_new_tokens;
    bs.num_computed = entry.num_computed;
    bs.state_slot = seq.state_slots.at(0);
    bs.block_table = seq.block_table;
    if (entry.num_draft_tokens > 0) {
      // Verify block [pending, d_1..d_k]: logits at every row, one GDN snapshot per token.
      const std::vector<int32_t>& draft = drafts[e];
      bs.query_len = 1 + static_cast<int32_t>(draft.size());
      bs.snapshot_slots.assign(seq.state_slots.begin(), seq.state_slots.begin() + bs.query_len);
      for (int32_t i = 0; i < bs.query_len; ++i) {
        const int32_t pos = entry.num_computed + i;
        batch.token_ids.push_back(i == 0 ? seq.token_at(pos) : draft[i - 1]);
        batch.positions.push_back(pos);
        batch.slot_mapping.push_back(seq.block_table.at(pos / block_size) * block_size +
                                     pos % block_size);
        batch.logits_rows.push_back(bs.query_start + i);
      }
      batch.seqs.push_back(std::move(bs));
      continue;
    }
    for (int32_t i = 0; i < entry.num_new_tokens; ++i) {
      int32_t pos = entry.num_computed + i;
      batch.token_ids.push_back(seq.token_at(pos));
      batch.positions.push_back(pos);
      batch.slot_mapping.push_back(seq.block_table.at(pos / block_size) * block_size +
                                   pos % block_size);
    }
    // Prompt logprobs need the distribution at every prompt row of the chunk.
    const SequenceContext& context = contexts_.at(seq.id);
    bool wants_prompt_rows = !context.prompt_logprobs_done;
    for (int32_t i = 0; i < entry.num_new_tokens; ++i) {
      bool last = i == entry.num_new_tokens - 1;
      if ((last && entry.needs_sample) || (wants_prompt_rows && !last) ||
          (wants_prompt_rows && last && !entry.needs_sample))
        batch.logits_rows.push_back(bs.query_start + i);
    }
    batch.seqs.push_back(std::move(bs));
  }
  return batch;
}

// Rows of the chunk [num_computed, num_computed + n) predict tokens at positions +1; the
// distribution predicting prompt token p is at row p - 1.
void Engine::collect_prompt_logprobs(const ScheduledSequence& entry, const Tensor& logits,
                                     size_t first_row) {
  Sequence& seq = *entry.seq;
  SequenceContext& context = contexts_.at(seq.id);
  const int32_t vocab = model_->config().vocab_size;
  const int32_t k = *context.params.prompt_logprobs;
  const int32_t prompt_len = seq.num_prompt_tokens();
  if (context.prompt_logprobs.empty()) context.prompt_logprobs.resize(1);  // position 0
  for (int32_t i = 0; i < entry.num_new_tokens; ++i) {
    int32_t target = entry.num_computed + i + 1;
    if (target >= prompt_len) break;
    std::span<const float> row(logits.f32() + (first_row + i) * vocab, vocab);
    PositionLogprobs entry_lp;
    entry_lp.token = seq.prompt_token_ids[target];
    entry_lp.logprob = token_logprob(row, entry_lp.token);
    entry_lp.rank = token_rank(row, entry_lp.token);
    entry_lp.top = top_logprobs(row, k);
    context.prompt_logprobs.push_back(std::move(entry_lp));
  }
  if (entry.num_computed + entry.num_new_tokens >= prompt_len) context.prompt_logprobs_done = true;
}

void Engine::process_new_token(Sequence& seq, SequenceContext& context, const SampleResult& sample,
                               SequenceUpdate& update) {
  const SamplingParams& params = context.params;
  const int32_t token = sample.token;
  update.new_token_ids.push_back(token);
  if (params.logprobs) {
    PositionLogprobs lp;
    lp.token = token;
    lp.logprob = sample.logprob;
    lp.rank = sample.rank;
    lp.top = sample.top_logprobs;
    update.new_logprobs.push_back(std::move(lp));
  }
  std::string piece = context.detokenizer->push(token);
  const bool min_reached = seq.num_output_tokens() >= params.min_tokens;

  bool is_eos = false;
  if (!params.ignore_eos)
    for (int32_t eos : model_->config().eos_token_ids) is_eos |= token == eos;
  bool is_stop_token = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(),
                                 token) != params.stop_token_ids.end();
  if (min_reached && (is_eos || is_stop_token)) {
    if (is_stop_token && !is_eos) update.stop_reason = std::to_string(token);
    scheduler_.finish(seq.id, FinishReason::kStop);
  }
  // A finished-by-length sequence flushes its detokenizer below; stop strings search the
  // text that may now contain one, starting where a match could begin.
  size_t search_from = context.text.size();
  context.text += piece;
  if (seq.is_finished() || seq.status == SequenceStatus::kFinished) context.text += context.detokenizer->flush();
  if (min_reached && !params.stop.empty()) {
    size_t best = std::string::npos;
    const std::string* matched = nullptr;
    for (const std::string& stop : params.stop) {
      size_t from = search_from >= stop.size() ? search_from - stop.size() + 1 : 0;
      size_t at = context.text.find(stop, from);
      if (at != std::string::npos && at < best) {
        best = at;
        matched = &stop;
      }
    }
    if (matched) {
      context.text.resize(best + (params.include_stop_str_in_output ? matched->size() : 0));
      update.stop_reason = *matched;
      scheduler_.finish(seq.id, FinishReason::kStop);
    }
  }
}

void Engine::write_draft_context(const StepPlan& plan, const ForwardBatch& batch,
                                 const ForwardOutput& output,
                                 const std::vector<VerifyResult>& verified) {
  ContextRows rows;
  for (size_t e = 0; e < plan.seqs.size(); ++e) {
    const BatchSequence& bs = batch.seqs[e];
    // Verify: the pending token and the accepted drafts; otherwise every new row.
    const int32_t committed = plan.seqs[e].num_draft_tokens > 0 ? verified[e].num_accepted + 1
                                                                 : bs.query_len;
    for (int32_t i = 0; i < committed; ++i) {
      const int32_t row = bs.query_start + i;
      rows.rows.push_back(row);
      rows.positions.push_back(batch.positions[row]);
      rows.slots.push_back(batch.slot_mapping[row]);
    }
  }
  drafter_->write_context(output.captured_hidden, rows, draft_cache_);
}

void Engine::commit_verified(const ScheduledSequence& entry, const std::vector<int32_t>& draft,
                             const VerifyResult& result) {
  Sequence& seq = *entry.seq;
  SequenceContext& context = contexts_.at(seq.id);
  SequenceUpdate& update = pending_updates_[seq.id];
  update.id = seq.id;
  update.spec_steps.push_back({draft, result.num_accepted});
  spec_stats_.record(static_cast<int32_t>(draft.size()), result.num_accepted);
  scheduler_.commit_verified(entry, result.num_accepted);
  // Token by token, exactly as plain decoding would: a stop token, stop string or length
  // limit inside the block ends the sequence there and drops the rest.
  for (const SampleResult& sample : result.tokens) {
    if (!scheduler_.append_output(seq, sample.token)) break;
    process_new_token(seq, context, sample, update);
    if (seq.is_finished()) break;
  }
}

void Engine::log_spec_stats() {
  const double now = now_seconds();
  if (now - last_spec_log_s_ < config_.spec_log_interval_s) return;
  const double elapsed = now - last_spec_log_s_;
  last_spec_log_s_ = now;
  const SpecDecodeStats& a = spec_stats_;
  const SpecDecodeStats& b = spec_stats_logged_;
  const int64_t drafts = a.num_drafts - b.num_drafts;
  if (drafts == 0) return;
  const int64_t drafted = a.num_draft_tokens - b.num_draft_tokens;
  const int64_t accepted = a.num_accepted_tokens - b.num_accepted_tokens;
  std::string per_position;
  char buf[64];
  for (size_t i = 0; i < a.accepted_per_position.size(); ++i) {
    const int64_t before = i < b.accepted_per_position.size() ? b.accepted_per_position[i] : 0;
    std::snprintf(buf, sizeof buf, "%s%.3f", i ? ", " : "",
                  static_cast<double>(a.accepted_per_position[i] - before) / drafts);
    per_position += buf;
  }
  std::snprintf(buf, sizeof buf, "%.2f", 1.0 + static_cast<double>(accepted) / drafts);
  std::string mean = buf;
  std::snprintf(buf, sizeof buf, "%.1f tokens/s", accepted / elapsed);
  log_info("SpecDecoding metrics: Mean acceptance length: ", mean, ", Accepted throughput: ", buf,
           ", Accepted: ", accepted, " tokens, Drafted: ", drafted,
           " tokens, Per-position acceptance rate: ", per_position);
  spec_stats_logged_ = spec_stats_;
}

bool Engine::argmax_suffices(const StepPlan& plan) const {
  for (const ScheduledSequence& entry : plan.seqs) {
    const SequenceContext& context = contexts_.at(entry.seq->id);
    if (!context.prompt_logprobs_done) return false;
    if (!entry.needs_sample) continue;
    const SamplingParams& p = context.params;
    if (!p.greedy() || p.logprobs || p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f ||
        p.presence_penalty != 0.0f || entry.seq->num_output_tokens() < p.min_tokens)
      return false;
  }
  return true;
}

bool Engine::device_sampling_suffices(const StepPlan& plan) const {
  if (!config_.device_sampling) return false;
  for (const ScheduledSequence& entry : plan.seqs) {
    const SequenceContext& context = contexts_.at(entry.seq->id);
    if (!context.prompt_logprobs_done || entry.num_draft_tokens > 0) return false;
    if (!entry.needs_sample) continue;
    const SamplingParams& p = context.params;
    if (p.logprobs.value_or(0) > kSampleRowsMaxLogprobs || p.repetition_penalty != 1.0f ||
        p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f ||
        entry.seq->num_output_tokens() < p.min_tokens)
      return false;
  }
  return true;
}

void Engine::step() {
  StepPlan plan = scheduler_.schedule();
  num_preemptions_ += static_cast<int64_t>(plan.preempted.size());
  if (plan.empty()) {
    send_finished();
    return;
  }
  std::vector<std::vector<int32_t>> drafts = propose_drafts(plan);
  ForwardBatch batch = build_batch(plan, drafts);
  static const std::vector<int32_t> no_taps;
  const LogitsOutput logits_output = argmax_suffices(plan)           ? LogitsOutput::kArgmax
                                     : device_sampling_suffices(plan) ? LogitsOutput::kDevice
                                                                      : LogitsOutput::kFull;
  const std::vector<int32_t>& taps = drafter_ ? drafter_->tap_layers() : no_taps;
  ForwardOutput output = graphs_ && taps.empty() && graphs_->can_run(batch)
                             ? graphs_->forward(batch, logits_output)
                             : model_->forward(batch, cache_, taps, logits_output);
  StepSamples samples = sample_step(plan, drafts, output, logits_output);
  if (drafter_) write_draft_context(plan, batch, output, samples.verified);
  commit_step(plan, drafts, samples);
  if (drafter_) log_spec_stats();
  send_finished();
}

// Walks the plan in order: each entry's logits rows are consecutive in batch.logits_rows.
Engine::StepSamples Engine::sample_step(const StepPlan& plan,
                                        const std::vector<std::vector<int32_t>>& drafts,
                                        const ForwardOutput& output,
                                        LogitsOutput logits_output) {
  const int32_t vocab = model_->config().vocab_size;
  const bool argmax_only = logits_output == LogitsOutput::kArgmax;
  StepSamples out;
  // kDevice: every logits row is one plain sample (device_sampling_suffices), in plan order.
  std::vector<SampleResult> device_samples;
  if (logits_output == LogitsOutput::kDevice) {
    std::vector<RowSampling> rows;
    for (const ScheduledSequence& entry : plan.seqs) {
      if (!entry.needs_sample) continue;
      const SequenceContext& context = contexts_.at(entry.seq->id);
      const SamplingParams& p = context.params;
      rows.push_back(RowSampling{.temperature = p.temperature,
                                 .top_k = p.top_k,
                                 .top_p = p.top_p,
                                 .min_p = p.min_p,
                                 .seed = context.seed,
                                 .position = entry.seq->output_token_ids.size(),
                                 .num_logprobs = p.logprobs.value_or(0)});
    }
    device_samples = model_->backend().sample_rows(output.device_logits, rows);
  }
  out.verified.resize(plan.seqs.size());
  size_t row = 0;
  for (size_t e = 0; e < plan.seqs.size(); ++e) {
    const ScheduledSequence& entry = plan.seqs[e];
    Sequence& seq = *entry.seq;
    SequenceContext& context = contexts_.at(seq.id);
    if (entry.num_draft_tokens > 0) {
      const size_t rows = drafts[e].size() + 1;
      if (argmax_only) {
        out.verified[e] = verify_greedy(
            std::span<const int32_t>(output.argmax).subspan(row, rows), drafts[e]);
      } else {
        std::span<const float> logits(output.logits.f32() + row * vocab, rows * vocab);
        out.verified[e] = verify_draft(logits, vocab, drafts[e], context.params,
                                       seq.prompt_token_ids, seq.output_token_ids,
                                       model_->config().eos_token_ids, context.seed,
                                       seq.output_token_ids.size());
      }
      row += rows;
      continue;
    }
    if (!context.prompt_logprobs_done) {
      collect_prompt_logprobs(entry, output.logits, row);
      row += entry.num_new_tokens - 1;
      if (!entry.needs_sample) ++row;
    }
    if (!entry.needs_sample) continue;
    SampleResult sample{.token = 0, .logprob = 0.0f, .rank = 0, .top_logprobs = {}};
    if (argmax_only) {
      sample.token = output.argmax[row];
    } else if (logits_output == LogitsOutput::kDevice) {
      sample = std::move(device_samples[row]);
    } else {
      std::span<const float> logits(output.logits.f32() + row * vocab, vocab);
      sample = sample_token(logits, context.params, seq.prompt_token_ids, seq.output_token_ids,
                            model_->config().eos_token_ids, context.seed,
                            seq.output_token_ids.size());
    }
    ++row;
    out.samples.push_back(std::move(sample));
  }
  return out;
}

void Engine::commit_step(const StepPlan& plan, const std::vector<std::vector<int32_t>>& drafts,
                         const StepSamples& samples) {
  std::vector<int32_t> tokens;
  for (const SampleResult& sample : samples.samples) tokens.push_back(sample.token);
  scheduler_.commit(plan, tokens);
  size_t sample_index = 0;
  for (size_t e = 0; e < plan.seqs.size(); ++e) {
    const ScheduledSequence& entry = plan.seqs[e];
    if (entry.num_draft_tokens > 0) {
      commit_verified(entry, drafts[e], samples.verified[e]);
      continue;
    }
    if (!entry.needs_sample) continue;
    Sequence& seq = *entry.seq;
    SequenceContext& context = contexts_.at(seq.id);
    SequenceUpdate& update = pending_updates_[seq.id];
    update.id = seq.id;
    process_new_token(seq, context, samples.samples[sample_index++], update);
  }
}

// Sends every pending update: running sequences get the text that is safe to stream,
// finished ones everything that is left and their finish reason.
void Engine::send_finished() {
  std::map<SeqId, std::unique_ptr<Sequence>> finished;
  for (auto& seq : scheduler_.take_finished()) finished.emplace(seq->id, std::move(seq));
  for (auto& [id, seq] : finished) pending_updates_[id].id = id;

  for (auto& [id, update] : pending_updates_) {
    auto context_it = contexts_.find(id);
    if (context_it == contexts_.end()) continue;
    SequenceContext& context = context_it->second;
    auto finished_it = finished.find(id);
    bool done = finished_it != finished.end();
    const Sequence* seq = done ? finished_it->second.get() : nullptr;
    if (done && seq->finish_reason == FinishReason::kLength && context.detokenizer) {
      // The stop-string pass above did not see this as finished yet.
      context.text += context.detokenizer->flush();
    }
    size_t holdback = 0;
    if (!done)
      for (const std::string& stop : context.params.stop)
        holdback = std::max(holdback, stop.size() - 1);
    size_t end = done ? context.text.size() : safe_text_end(context.text, holdback);
    if (end > context.sent_text_bytes) {
      update.new_text = context.text.substr(context.sent_text_bytes, end - context.sent_text_bytes);
      context.sent_text_bytes = end;
    }
    if (context.prompt_logprobs_done && context.params.prompt_logprobs &&
        !context.prompt_logprobs.empty()) {
      update.prompt_logprobs = std::move(context.prompt_logprobs);
      context.prompt_logprobs.clear();
      context.params.prompt_logprobs.reset();  // sent once
    }
    if (done) {
      update.finished = true;
      update.finish_reason = seq->finish_reason;
      update.num_prompt_tokens = seq->num_prompt_tokens();
      update.num_output_tokens = seq->num_output_tokens();
    }
    if (update.new_token_ids.empty() && update.new_text.empty() && !update.finished &&
        !update.prompt_logprobs && update.spec_steps.empty())
      continue;
    UpdateCallback callback = context.callback;
    if (done) contexts_.erase(context_it);
    if (callback) callback(update);
  }
  pending_updates_.clear();
}

}  // namespace bf
