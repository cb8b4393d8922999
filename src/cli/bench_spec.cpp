#include "cli/bench_spec.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "cli/device_options.h"
#include "cli/engine_setup.h"
#include "core/log.h"
#include "model/decode_graphs.h"
#include "model/dflash_drafter.h"

namespace bf::cli {
namespace {

struct SpecBenchOptions {
  std::string model, draft, device = "auto";
  std::vector<int32_t> batch_sizes = {1, 4, 16};
  std::vector<double> acceptance_lengths = {3, 5, 7};
  int32_t context_len = 1024;
  int32_t num_speculative_tokens = 0;  // 0: drafter block_size - 1
  int32_t block_size = 16;
  int32_t iters = 10, warmup = 2;
  bool json = false;
};

// A batch of B sequences, each with context_len tokens already "computed" (cache contents are
// whatever the allocation holds: timing does not depend on them) and query_len new tokens.
ForwardBatch make_batch(int32_t batch, int32_t context_len, int32_t query_len, int32_t block_size,
                        int32_t blocks_per_seq, int32_t slots_per_seq, int32_t vocab,
                        bool snapshots, bool all_logits, int32_t mask_token) {
  std::mt19937 rng(batch * 131 + query_len);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  ForwardBatch b;
  for (int32_t s = 0; s < batch; ++s) {
    BatchSequence seq;
    seq.query_start = b.num_tokens();
    seq.query_len = query_len;
    seq.num_computed = context_len;
    seq.state_slot = s * slots_per_seq;
    for (int32_t i = 0; i < blocks_per_seq; ++i) seq.block_table.push_back(s * blocks_per_seq + i);
    if (snapshots)
      for (int32_t i = 0; i < query_len; ++i) seq.snapshot_slots.push_back(s * slots_per_seq + i);
    for (int32_t i = 0; i < query_len; ++i) {
      const int32_t pos = context_len + i;
      b.token_ids.push_back(mask_token >= 0 && i > 0 ? mask_token : token(rng));
      b.positions.push_back(pos);
      b.slot_mapping.push_back(seq.block_table[pos / block_size] * block_size + pos % block_size);
      if (all_logits || i == query_len - 1)
        if (!(mask_token >= 0 && i == 0)) b.logits_rows.push_back(seq.query_start + i);
    }
    b.seqs.push_back(std::move(seq));
  }
  return b;
}

template <typename F>
double time_ms(const SpecBenchOptions& o, F&& run) {
  for (int32_t i = 0; i < o.warmup; ++i) run();
  const auto t0 = std::chrono::steady_clock::now();
  for (int32_t i = 0; i < o.iters; ++i) run();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
         o.iters;
}

int run_bench(const SpecBenchOptions& o) {
  BF_CHECK(!o.model.empty() && !o.draft.empty(), "bench spec needs --model and --draft");
  BF_CHECK(o.context_len >= 1 && o.iters >= 1 && o.warmup >= 0, "bad --context-len/--iters/--warmup");
  std::unique_ptr<Backend> backend = make_device_backend(o.device);
  const LoadFormat format =
      device_options().load_format == "dummy" ? LoadFormat::kDummy : LoadFormat::kSafetensors;
  auto load_start = std::chrono::steady_clock::now();
  auto model = Model::load(o.model, *backend, format);
  auto drafter = DFlashDrafter::load(o.draft, *model, format);
  log_info("bench spec: weights ready in ",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
           " s on ", backend->name());
  const ModelConfig& c = model->config();
  const int32_t K = o.num_speculative_tokens > 0 ? o.num_speculative_tokens
                                                 : drafter->config().block_size - 1;
  BF_CHECK(K < drafter->config().block_size, "--num-spec-tokens must be < the drafter's block_size");
  const int32_t bs = o.block_size, slots_per_seq = 1 + K;
  const int32_t blocks_per_seq = (o.context_len + K + 1 + bs - 1) / bs;

  // The plain decode step as serving runs it: a replayed graph unless --enforce-eager.
  const bool graphs = backend->supports_graphs() && !device_options().enforce_eager;
  nlohmann::json results = nlohmann::json::array();
  if (!o.json)
    std::printf("%6s %10s %10s %10s %10s %10s %8s %8s |", "batch", "decode_ms", "draft_ms",
                "verify_ms", "chunk_ms", "ctx_ms", "verify/d", "draft/d");
  if (!o.json)
    for (double tau : o.acceptance_lengths) std::printf(" speedup@%-4g", tau);
  if (!o.json) std::printf("\n");
  for (int32_t B : o.batch_sizes) {
    // One more block and slot: the graph's padding (its recording runs a padding-only batch).
    ModelCache cache = ModelCache::allocate(
        *backend, c, {.num_blocks = B * blocks_per_seq + 1, .block_size = bs,
                      .num_state_slots = B * slots_per_seq + 1});
    DraftCache draft_cache = DraftCache::allocate(*backend, drafter->config(), B * blocks_per_seq, bs);
    const ForwardBatch decode = make_batch(B, o.context_len, 1, bs, blocks_per_seq, slots_per_seq,
                                           c.vocab_size, false, false, -1);
    const ForwardBatch verify = make_batch(B, o.context_len, 1 + K, bs, blocks_per_seq,
                                           slots_per_seq, c.vocab_size, true, true, -1);
    const ForwardBatch draft = make_batch(B, o.context_len, 1 + K, bs, blocks_per_seq,
                                          slots_per_seq, c.vocab_size, false, true,
                                          drafter->config().mask_token_id);
    // Greedy serving: only the argmax ids of the logits rows leave the device (the engine's
    // path for greedy requests without logprobs), for decode and verify alike.
    std::unique_ptr<DecodeGraphRunner> runner;
    if (graphs) {
      runner = std::make_unique<DecodeGraphRunner>(
          *model, cache, std::vector<int32_t>{B},
          GraphPadding{.state_slot = B * slots_per_seq, .kv_block = B * blocks_per_seq},
          blocks_per_seq * bs);
      runner->capture();
    }
    const double t_decode = time_ms(o, [&] {
      if (runner)
        runner->forward(decode, LogitsOutput::kArgmax);
      else
        model->forward(decode, cache, {}, LogitsOutput::kArgmax);
    });
    ForwardOutput verified;
    const double t_verify = time_ms(o, [&] {
      verified = model->forward(verify, cache, drafter->tap_layers(), LogitsOutput::kArgmax);
    });
    const double t_draft = time_ms(o, [&] { drafter->draft_tokens(draft, draft_cache); });
    // The same 1+K tokens as a plain chunk (no GDN snapshots, no taps): what the verify's
    // extra work costs.
    const ForwardBatch chunk = make_batch(B, o.context_len, 1 + K, bs, blocks_per_seq,
                                          slots_per_seq, c.vocab_size, false, true, -1);
    const double t_chunk = time_ms(
        o, [&] { model->forward(chunk, cache, {}, LogitsOutput::kArgmax); });
    nlohmann::json per_tau = nlohmann::json::array();
    std::vector<double> speedups;
    double t_ctx_max = 0;
    for (double tau : o.acceptance_lengths) {
      const int32_t committed = std::max(1, std::min(1 + K, static_cast<int32_t>(std::lround(tau))));
      ContextRows rows;
      for (int32_t s = 0; s < B; ++s)
        for (int32_t i = 0; i < committed; ++i) {
          const int32_t r = verify.seqs[s].query_start + i;
          rows.rows.push_back(r);
          rows.positions.push_back(verify.positions[r]);
          rows.slots.push_back(verify.slot_mapping[r]);
        }
      const double t_ctx = time_ms(o, [&] {
        drafter->write_context(verified.captured_hidden, rows, draft_cache);
        backend->to_host(draft_cache.kv.back().k.rows(0, 1));  // waits for the writes
      });
      t_ctx_max = std::max(t_ctx_max, t_ctx);
      const double speedup = tau * t_decode / (t_draft + t_verify + t_ctx);
      speedups.push_back(speedup);
      per_tau.push_back({{"acceptance_length", tau}, {"ctx_write_ms", t_ctx}, {"speedup", speedup}});
    }
    results.push_back({{"batch", B}, {"context_len", o.context_len}, {"num_speculative_tokens", K},
                       {"decode_graph", graphs},
                       {"decode_ms", t_decode}, {"draft_ms", t_draft}, {"verify_ms", t_verify},
                       {"chunk_without_snapshots_ms", t_chunk},
                       {"verify_over_decode", t_verify / t_decode},
                       {"draft_over_decode", t_draft / t_decode}, {"by_acceptance", per_tau}});
    if (!o.json) {
      std::printf("%6d %10.3f %10.3f %10.3f %10.3f %10.3f %8.2f %8.3f |", B, t_decode, t_draft,
                  t_verify, t_chunk, t_ctx_max, t_verify / t_decode, t_draft / t_decode);
      for (double s : speedups) std::printf(" %12.2f", s);
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  if (o.json)
    std::cout << nlohmann::json{{"device", backend->name()}, {"model", o.model}, {"draft", o.draft},
                                {"results", results}}
                     .dump()
              << std::endl;
  return 0;
}

}  // namespace

Command add_bench_spec(CLI::App* bench) {
  auto o = std::make_shared<SpecBenchOptions>();
  CLI::App* sub = bench->add_subcommand(
      "spec", "Time a DFlash step (draft + verify + context write) against a plain decode step");
  sub->add_option("--model", o->model, "Target model directory (config.json; weights unless "
                                       "--load-format dummy)")->required();
  sub->add_option("--draft", o->draft, "DFlash drafter directory")->required();
  sub->add_option("--device", o->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--batch-sizes", o->batch_sizes, "Batch sizes")->delimiter(',')->capture_default_str();
  sub->add_option("--acceptance-lengths", o->acceptance_lengths,
                  "Mean tokens committed per step to report the speedup at")
      ->delimiter(',')->capture_default_str();
  sub->add_option("--context-len", o->context_len, "Tokens already in each sequence's cache")
      ->capture_default_str();
  sub->add_option("--num-spec-tokens", o->num_speculative_tokens,
                  "Draft tokens per step (default: the drafter's block_size - 1)");
  sub->add_option("--block-size", o->block_size, "KV cache block size")->capture_default_str();
  sub->add_option("--iters", o->iters, "Timed iterations")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "Untimed iterations first")->capture_default_str();
  sub->add_flag("--json", o->json, "Print one JSON object");
  add_device_flags(sub);
  return [o]() { return run_bench(*o); };
}

}  // namespace bf::cli
