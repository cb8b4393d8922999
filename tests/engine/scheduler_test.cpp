// Scheduler: hand-checked timelines (exact chunk sizes and preemptions per step), request
// validation, abort/finish, and randomized runs against a fake forward that appends tokens,
// asserting the invariants after every step.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>

#include "core/error.h"

namespace bf {
namespace {

// The token a fake forward "samples" for position pos of a sequence: a function of both, so
// outputs are checkable after preemption and recompute.
int32_t fake_token(SeqId id, int32_t pos) {
  return static_cast<int32_t>((id.request_id * 7919 + id.index * 104729 + pos * 31) % 50000);
}

std::unique_ptr<Sequence> make_sequence(int64_t request_id, int32_t num_prompt_tokens,
                                        int32_t max_tokens, int32_t num_lookahead_tokens = 0,
                                        int32_t index = 0) {
  std::vector<int32_t> prompt;
  for (int32_t pos = 0; pos < num_prompt_tokens; ++pos) {
    prompt.push_back(fake_token({request_id, index}, pos) + 1);
  }
  return std::make_unique<Sequence>(SeqId{request_id, index}, std::move(prompt), max_tokens,
                                    num_lookahead_tokens);
}

// The fake forward: samples a token for every entry that needs one and commits.
// A fake forward: every sampled token is fake_token(id, position). A verify entry (drafts)
// accepts a pseudo-random number of its drafts; returns how far each entry advanced.
std::map<SeqId, int32_t> run_forward(Scheduler& scheduler, const StepPlan& plan) {
  std::vector<int32_t> sampled;
  std::map<SeqId, int32_t> advanced;
  for (const ScheduledSequence& entry : plan.seqs) {
    if (entry.needs_sample && entry.num_draft_tokens == 0)
      sampled.push_back(fake_token(entry.seq->id, entry.seq->num_tokens()));
    advanced[entry.seq->id] = entry.num_new_tokens;
  }
  scheduler.commit(plan, sampled);
  for (const ScheduledSequence& entry : plan.seqs) {
    if (entry.num_draft_tokens == 0 || entry.seq->is_finished()) continue;
    Sequence& seq = *entry.seq;
    const int32_t accepted =
        fake_token(seq.id, seq.num_tokens()) % (entry.num_draft_tokens + 1);
    scheduler.commit_verified(entry, accepted);
    advanced[seq.id] = accepted + 1;
    for (int32_t i = 0; i <= accepted; ++i)
      if (!scheduler.append_output(seq, fake_token(seq.id, seq.num_tokens()))) break;
  }
  return advanced;
}

// One step as (request_id, num_computed, num_new_tokens, needs_sample) per scheduled sequence.
using Entry = std::tuple<int64_t, int32_t, int32_t, bool>;
std::vector<Entry> entries(const StepPlan& plan) {
  std::vector<Entry> out;
  for (const ScheduledSequence& e : plan.seqs) {
    out.emplace_back(e.seq->id.request_id, e.num_computed, e.num_new_tokens, e.needs_sample);
  }
  return out;
}

SchedulerConfig roomy_config() {
  return {.max_num_seqs = 8,
          .max_num_batched_tokens = 64,
          .max_model_len = 128,
          .block_size = 4,
          .num_blocks = 256,
          .num_state_slots = 16};
}

// ---- timelines ----

TEST(SchedulerTimeline, TwoLongPromptsChunkedUnderBudget32) {
  SchedulerConfig config = roomy_config();
  config.max_num_batched_tokens = 32;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 50, 3));
  scheduler.add(make_sequence(2, 50, 3));
  const std::vector<std::vector<Entry>> expected = {
      {{1, 0, 32, false}},
      {{1, 32, 18, true}, {2, 0, 14, false}},
      {{1, 50, 1, true}, {2, 14, 31, false}},
      {{1, 51, 1, true}, {2, 45, 5, true}},  // 1 finishes: 3 outputs
      {{2, 50, 1, true}},
      {{2, 51, 1, true}},
  };
  for (const std::vector<Entry>& step : expected) {
    StepPlan plan = scheduler.schedule();
    EXPECT_EQ(entries(plan), step);
    EXPECT_TRUE(plan.preempted.empty());
    run_forward(scheduler, plan);
    scheduler.check_integrity();
  }
  EXPECT_FALSE(scheduler.has_unfinished());
  std::vector<std::unique_ptr<Sequence>> finished = scheduler.take_finished();
  ASSERT_EQ(finished.size(), 2u);
  for (const auto& seq : finished) {
    EXPECT_EQ(seq->num_output_tokens(), 3);
    EXPECT_EQ(seq->finish_reason, FinishReason::kLength);
  }
  EXPECT_EQ(scheduler.block_manager().num_free_blocks(), config.num_blocks);
}

TEST(SchedulerTimeline, PreemptsNewestWhenBlocksRunOutAndRecomputes) {
  // 4 blocks of 4 tokens; two 6-token prompts take 2 blocks each. When the older sequence
  // reaches its 9th position it needs a third block: the newer one is preempted, waits until
  // the older finishes, then recomputes prompt + its 3 outputs in one chunk.
  SchedulerConfig config = roomy_config();
  config.num_blocks = 4;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 6, 6));
  scheduler.add(make_sequence(2, 6, 6));
  struct Step {
    std::vector<Entry> entries;
    std::vector<int64_t> preempted;
  };
  const std::vector<Step> expected = {
      {{{1, 0, 6, true}, {2, 0, 6, true}}, {}},
      {{{1, 6, 1, true}, {2, 6, 1, true}}, {}},
      {{{1, 7, 1, true}, {2, 7, 1, true}}, {}},
      {{{1, 8, 1, true}}, {2}},
      {{{1, 9, 1, true}}, {}},   // 2 needs 3 blocks to recompute 9 tokens; 1 is free
      {{{1, 10, 1, true}}, {}},  // 1 finishes with 6 outputs
      {{{2, 0, 9, true}}, {}},   // recompute prompt (6) + outputs (3)
      {{{2, 9, 1, true}}, {}},
      {{{2, 10, 1, true}}, {}},
  };
  for (const Step& step : expected) {
    StepPlan plan = scheduler.schedule();
    EXPECT_EQ(entries(plan), step.entries);
    std::vector<int64_t> preempted;
    for (SeqId id : plan.preempted) preempted.push_back(id.request_id);
    EXPECT_EQ(preempted, step.preempted);
    run_forward(scheduler, plan);
    scheduler.check_integrity();
  }
  EXPECT_FALSE(scheduler.has_unfinished());
  std::vector<std::unique_ptr<Sequence>> finished = scheduler.take_finished();
  ASSERT_EQ(finished.size(), 2u);
  EXPECT_EQ(finished[1]->id.request_id, 2);
  EXPECT_EQ(finished[1]->num_preemptions, 1);
  for (const auto& seq : finished) {
    ASSERT_EQ(seq->num_output_tokens(), 6);
    for (int32_t i = 0; i < 6; ++i) EXPECT_EQ(seq->output_token_ids[i], fake_token(seq->id, 6 + i));
  }
}

TEST(SchedulerTimeline, WithoutChunkingAPromptWaitsForAWholeStep) {
  SchedulerConfig config = roomy_config();
  config.enable_chunked_prefill = false;
  config.max_model_len = 64;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 40, 2));
  scheduler.add(make_sequence(2, 30, 2));
  scheduler.add(make_sequence(3, 10, 2));  // fits the budget but must not overtake 2
  StepPlan plan = scheduler.schedule();
  EXPECT_EQ(entries(plan), (std::vector<Entry>{{1, 0, 40, true}}));
  run_forward(scheduler, plan);
  plan = scheduler.schedule();
  EXPECT_EQ(entries(plan), (std::vector<Entry>{{1, 40, 1, true}, {2, 0, 30, true}, {3, 0, 10, true}}));
}

TEST(SchedulerTimeline, LongPrefillThresholdCapsChunks) {
  SchedulerConfig config = roomy_config();
  config.long_prefill_token_threshold = 16;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 40, 2));
  scheduler.add(make_sequence(2, 20, 2));
  const std::vector<std::vector<Entry>> expected = {
      {{1, 0, 16, false}, {2, 0, 16, false}},
      {{1, 16, 16, false}, {2, 16, 4, true}},
      {{1, 32, 8, true}, {2, 20, 1, true}},
      {{1, 40, 1, true}},
  };
  for (const std::vector<Entry>& step : expected) {
    StepPlan plan = scheduler.schedule();
    EXPECT_EQ(entries(plan), step);
    run_forward(scheduler, plan);
  }
  EXPECT_FALSE(scheduler.has_unfinished());
}

TEST(SchedulerTimeline, MaxNumSeqsAndStateSlotsLimitAdmission) {
  SchedulerConfig config = roomy_config();
  config.max_num_seqs = 2;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 4, 1));
  scheduler.add(make_sequence(2, 4, 2));
  scheduler.add(make_sequence(3, 4, 1));
  StepPlan plan = scheduler.schedule();
  EXPECT_EQ(entries(plan), (std::vector<Entry>{{1, 0, 4, true}, {2, 0, 4, true}}));
  run_forward(scheduler, plan);  // 1 finishes, a seat frees
  plan = scheduler.schedule();
  EXPECT_EQ(entries(plan), (std::vector<Entry>{{2, 4, 1, true}, {3, 0, 4, true}}));

  config = roomy_config();
  config.num_state_slots = 3;
  Scheduler slots_scheduler(config);
  slots_scheduler.add(make_sequence(1, 4, 2, /*num_lookahead_tokens=*/1));  // 2 slots
  slots_scheduler.add(make_sequence(2, 4, 2, /*num_lookahead_tokens=*/1));  // 2 more: wait
  plan = slots_scheduler.schedule();
  EXPECT_EQ(entries(plan), (std::vector<Entry>{{1, 0, 4, true}}));
  EXPECT_EQ(slots_scheduler.state_slot_pool().num_free(), 1);
}

TEST(SchedulerTimeline, LookaheadReservesBlocksAndSlots) {
  Scheduler scheduler(roomy_config());  // block_size 4
  scheduler.add(make_sequence(1, 5, 3, /*num_lookahead_tokens=*/3));
  StepPlan plan = scheduler.schedule();
  const Sequence& seq = *plan.seqs.at(0).seq;
  EXPECT_EQ(seq.state_slots.size(), 4u);  // 1 + K
  EXPECT_EQ(seq.block_table.size(), 2u);  // 5 + 3 positions
  run_forward(scheduler, plan);
  plan = scheduler.schedule();
  EXPECT_EQ(entries(plan), (std::vector<Entry>{{1, 5, 1, true}}));
  EXPECT_EQ(seq.block_table.size(), 3u);  // 6 + 3 positions
}

TEST(SchedulerTimeline, StopsAtMaxModelLen) {
  SchedulerConfig config = roomy_config();
  config.max_model_len = 16;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 10, 100));
  scheduler.add(make_sequence(2, 16, 100));  // a full-length prompt still gets one token
  while (scheduler.has_unfinished()) run_forward(scheduler, scheduler.schedule());
  std::vector<std::unique_ptr<Sequence>> finished = scheduler.take_finished();
  ASSERT_EQ(finished.size(), 2u);
  std::sort(finished.begin(), finished.end(), [](auto& a, auto& b) { return a->id < b->id; });
  EXPECT_EQ(finished[0]->num_output_tokens(), 6);
  EXPECT_EQ(finished[0]->num_tokens(), 16);
  EXPECT_EQ(finished[0]->finish_reason, FinishReason::kLength);
  EXPECT_EQ(finished[1]->num_output_tokens(), 1);
  EXPECT_EQ(finished[1]->finish_reason, FinishReason::kLength);
}

// ---- validation ----

std::string add_error(Scheduler& scheduler, std::unique_ptr<Sequence> seq) {
  try {
    scheduler.add(std::move(seq));
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(SchedulerAdd, RejectsRequestsThatCanNeverRun) {
  SchedulerConfig config = roomy_config();
  config.max_model_len = 16;
  config.num_blocks = 3;  // 12 tokens
  config.num_state_slots = 2;
  Scheduler scheduler(config);
  std::string error = add_error(scheduler, make_sequence(1, 17, 1));
  EXPECT_NE(error.find("17"), std::string::npos) << error;
  EXPECT_NE(error.find("max_model_len=16"), std::string::npos) << error;
  error = add_error(scheduler, make_sequence(2, 6, 10));  // may reach 16 tokens = 4 blocks
  EXPECT_NE(error.find("4 KV blocks"), std::string::npos) << error;
  EXPECT_NE(error.find("only 3"), std::string::npos) << error;
  EXPECT_NE(add_error(scheduler, make_sequence(3, 0, 1)), "");
  EXPECT_NE(add_error(scheduler, make_sequence(4, 4, 0)), "");
  EXPECT_NE(add_error(scheduler, make_sequence(5, 4, 1, /*num_lookahead_tokens=*/2)), "");
  EXPECT_EQ(add_error(scheduler, make_sequence(6, 6, 6)), "");  // 12 tokens: fits exactly
  EXPECT_NE(add_error(scheduler, make_sequence(6, 6, 6)), "");  // duplicate id
  EXPECT_EQ(scheduler.num_waiting(), 1);
}

TEST(SchedulerAdd, RejectsBadConfig) {
  SchedulerConfig config = roomy_config();
  config.enable_chunked_prefill = false;  // 64 tokens per step < max_model_len 128
  EXPECT_THROW(Scheduler{config}, Error);
  config = roomy_config();
  config.max_num_seqs = 0;
  EXPECT_THROW(Scheduler{config}, Error);
}

// ---- abort / finish ----

TEST(SchedulerAbort, FreesBlocksAndSlotsImmediately) {
  SchedulerConfig config = roomy_config();
  config.max_num_seqs = 3;
  Scheduler scheduler(config);
  scheduler.add(make_sequence(1, 20, 5));
  scheduler.add(make_sequence(2, 20, 5, 0, /*index=*/0));
  scheduler.add(make_sequence(2, 20, 5, 0, /*index=*/1));
  scheduler.add(make_sequence(3, 20, 5));
  run_forward(scheduler, scheduler.schedule());  // 1, 2.0, 2.1 admitted, 3 waits for a seat
  ASSERT_EQ(scheduler.num_running(), 3);
  ASSERT_EQ(scheduler.num_waiting(), 1);
  const int32_t free_before = scheduler.block_manager().num_free_blocks();
  EXPECT_TRUE(scheduler.abort({1, 0}));
  EXPECT_EQ(scheduler.block_manager().num_free_blocks(), free_before + 5);  // 20 positions
  EXPECT_EQ(scheduler.state_slot_pool().num_free(), config.num_state_slots - 2);
  scheduler.check_integrity();
  EXPECT_TRUE(scheduler.abort({3, 0}));  // waiting
  EXPECT_FALSE(scheduler.abort({3, 0}));
  EXPECT_FALSE(scheduler.abort({99, 0}));
  EXPECT_EQ(scheduler.abort_request(2), 2);
  EXPECT_FALSE(scheduler.has_unfinished());
  EXPECT_EQ(scheduler.block_manager().num_free_blocks(), config.num_blocks);
  EXPECT_EQ(scheduler.state_slot_pool().num_free(), config.num_state_slots);
  scheduler.check_integrity();
  std::vector<std::unique_ptr<Sequence>> finished = scheduler.take_finished();
  ASSERT_EQ(finished.size(), 4u);
  for (const auto& seq : finished) EXPECT_EQ(seq->finish_reason, FinishReason::kAbort);
}

TEST(SchedulerAbort, AbortBetweenScheduleAndCommitIsSkipped) {
  Scheduler scheduler(roomy_config());
  scheduler.add(make_sequence(1, 8, 5));
  scheduler.add(make_sequence(2, 8, 5));
  StepPlan plan = scheduler.schedule();
  EXPECT_TRUE(scheduler.abort({1, 0}));
  run_forward(scheduler, plan);  // still one sampled token per needs_sample entry
  EXPECT_EQ(plan.seqs[0].seq->num_output_tokens(), 0);
  EXPECT_EQ(plan.seqs[1].seq->num_output_tokens(), 1);
  scheduler.check_integrity();
}

TEST(SchedulerFinish, StopFreesAndOverridesLength) {
  Scheduler scheduler(roomy_config());
  scheduler.add(make_sequence(1, 8, 1));
  scheduler.add(make_sequence(2, 8, 5));
  run_forward(scheduler, scheduler.schedule());  // 1 reaches max_tokens
  EXPECT_FALSE(scheduler.finish({1, 0}, FinishReason::kStop));  // its token was EOS too
  EXPECT_TRUE(scheduler.finish({2, 0}, FinishReason::kStop));
  EXPECT_FALSE(scheduler.has_unfinished());
  std::vector<std::unique_ptr<Sequence>> finished = scheduler.take_finished();
  ASSERT_EQ(finished.size(), 2u);
  EXPECT_EQ(finished[0]->finish_reason, FinishReason::kStop);
  EXPECT_EQ(finished[1]->finish_reason, FinishReason::kStop);
  EXPECT_STREQ(to_string(finished[1]->finish_reason), "stop");
  EXPECT_EQ(scheduler.block_manager().num_free_blocks(), roomy_config().num_blocks);
}

// ---- randomized runs against a fake forward ----

struct RandomRunOptions {
  uint32_t seed = 0;
  SchedulerConfig config;
  int32_t num_requests = 60;
  int32_t max_prompt_tokens = 60;
  int32_t max_max_tokens = 40;
  int32_t max_lookahead = 0;
  double abort_probability = 0.0;  // per step, of one random live sequence
};

struct RunStats {
  int32_t num_preemptions = 0;
  int32_t num_finished = 0;
  int32_t num_aborted = 0;
  int32_t num_steps = 0;
};

// Adds requests at random steps, runs schedule -> fake forward -> commit, and checks every
// invariant after each step and every finished sequence's outputs.
RunStats random_run(const RandomRunOptions& options) {
  const SchedulerConfig& config = options.config;
  Scheduler scheduler(config);
  std::mt19937 rng(options.seed);
  auto uniform = [&rng](int32_t lo, int32_t hi) {
    return std::uniform_int_distribution<int32_t>(lo, hi)(rng);
  };
  auto chance = [&rng](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };

  RunStats stats;
  std::map<SeqId, int32_t> covered;  // positions computed in the current (re)computation
  int64_t next_request_id = 0;
  int64_t last_first_admission = -1;  // arrival index of the last first-time admission
  std::set<SeqId> ever_admitted;

  while (next_request_id < options.num_requests || scheduler.has_unfinished()) {
    if (++stats.num_steps > 100000) {
      ADD_FAILURE() << "no progress after 100000 steps";
      break;
    }
    // Random arrivals.
    if (next_request_id < options.num_requests && chance(0.3)) {
      for (int32_t n = uniform(1, 3); n > 0 && next_request_id < options.num_requests; --n) {
        scheduler.add(make_sequence(next_request_id++, uniform(1, options.max_prompt_tokens),
                                    uniform(1, options.max_max_tokens),
                                    uniform(0, options.max_lookahead)));
      }
    }
    // Random abort; its blocks and slots are free at once.
    if (chance(options.abort_probability) && scheduler.has_unfinished()) {
      std::vector<const Sequence*> live = scheduler.running_sequences();
      for (const Sequence* seq : scheduler.waiting_sequences()) live.push_back(seq);
      const Sequence* victim = live[uniform(0, static_cast<int32_t>(live.size()) - 1)];
      const int32_t free_before = scheduler.block_manager().num_free_blocks();
      const int32_t num_owned = static_cast<int32_t>(victim->block_table.size());
      EXPECT_TRUE(scheduler.abort(victim->id));
      EXPECT_EQ(scheduler.block_manager().num_free_blocks(), free_before + num_owned);
      scheduler.check_integrity();
    }

    const std::vector<const Sequence*> waiting_before = scheduler.waiting_sequences();
    std::set<const Sequence*> running_before;
    for (const Sequence* seq : scheduler.running_sequences()) running_before.insert(seq);

    StepPlan plan = scheduler.schedule();
    scheduler.check_integrity();
    EXPECT_LE(plan.num_tokens(), config.max_num_batched_tokens);
    EXPECT_LE(static_cast<int32_t>(plan.seqs.size()), config.max_num_seqs);
    EXPECT_LE(scheduler.num_running(), config.max_num_seqs);
    if (plan.empty()) {
      EXPECT_TRUE(!scheduler.has_unfinished() || scheduler.num_running() == 0);
    }

    // Preempted sequences restart from position 0.
    for (SeqId id : plan.preempted) {
      covered[id] = 0;
      ++stats.num_preemptions;
    }
    if (!plan.preempted.empty()) {  // the last preempted (oldest of them) is next in line
      const std::vector<const Sequence*> waiting = scheduler.waiting_sequences();
      EXPECT_TRUE(!waiting.empty() && waiting.front()->id == plan.preempted.back());
    }

    // Admissions are a prefix of the waiting queue (FCFS), first admissions in arrival order.
    size_t num_admitted = 0;
    std::set<int32_t> slots_this_step;
    for (const ScheduledSequence& entry : plan.seqs) {
      const Sequence& seq = *entry.seq;
      if (!running_before.count(entry.seq)) {
        EXPECT_TRUE(plan.preempted.empty());
        EXPECT_LT(num_admitted, waiting_before.size());
        if (num_admitted < waiting_before.size()) {
          EXPECT_EQ(waiting_before[num_admitted], &seq);
        }
        ++num_admitted;
        if (ever_admitted.insert(seq.id).second) {
          EXPECT_GT(seq.arrival_index, last_first_admission);
          last_first_admission = seq.arrival_index;
        }
      }
      // Each (re)computation covers positions 0, 1, ... exactly once, in order.
      EXPECT_EQ(entry.num_computed, covered[seq.id]) << seq.id;
      EXPECT_EQ(entry.num_computed, seq.num_computed_tokens);
      EXPECT_GT(entry.num_new_tokens, 0);
      EXPECT_EQ(entry.needs_sample, entry.num_computed + entry.num_new_tokens == seq.num_tokens());
      EXPECT_LE(entry.num_computed + entry.num_new_tokens, std::max(config.max_model_len, seq.num_prompt_tokens()));
      EXPECT_GE(static_cast<int64_t>(seq.block_table.size()) * config.block_size,
                entry.num_computed + entry.num_new_tokens + seq.num_lookahead_tokens);
      EXPECT_EQ(static_cast<int32_t>(seq.state_slots.size()), seq.num_state_slots_needed());
      for (int32_t slot : seq.state_slots) EXPECT_TRUE(slots_this_step.insert(slot).second);
      for (int32_t pos = entry.num_computed; pos < entry.num_computed + entry.num_new_tokens; ++pos) {
        const int32_t expected = pos < seq.num_prompt_tokens() ? fake_token(seq.id, pos) + 1
                                                               : fake_token(seq.id, pos);
        EXPECT_EQ(seq.token_at(pos), expected) << seq.id << " position " << pos;
      }
    }

    // Occasionally abort a scheduled sequence between schedule and commit.
    if (!plan.empty() && chance(options.abort_probability)) {
      EXPECT_TRUE(scheduler.abort(plan.seqs[uniform(0, static_cast<int32_t>(plan.seqs.size()) - 1)].seq->id));
    }
    for (const auto& [id, advance] : run_forward(scheduler, plan)) covered[id] += advance;
    scheduler.check_integrity();

    for (const std::unique_ptr<Sequence>& seq : scheduler.take_finished()) {
      ++stats.num_finished;
      if (seq->finish_reason == FinishReason::kAbort) {
        ++stats.num_aborted;
        continue;
      }
      EXPECT_EQ(seq->finish_reason, FinishReason::kLength);
      const int32_t expected_outputs =
          std::min(seq->max_tokens, std::max(config.max_model_len - seq->num_prompt_tokens(), 1));
      EXPECT_EQ(seq->num_output_tokens(), expected_outputs) << seq->id;
      EXPECT_EQ(covered[seq->id], seq->num_tokens() - 1) << seq->id;  // all but the last token
      for (int32_t i = 0; i < seq->num_output_tokens(); ++i) {
        EXPECT_EQ(seq->output_token_ids[i], fake_token(seq->id, seq->num_prompt_tokens() + i));
      }
    }
  }
  EXPECT_EQ(stats.num_finished, options.num_requests);
  EXPECT_EQ(scheduler.block_manager().num_free_blocks(), config.num_blocks);
  EXPECT_EQ(scheduler.state_slot_pool().num_free(), config.num_state_slots);
  return stats;
}

SchedulerConfig tight_config() {
  return {.max_num_seqs = 6,
          .max_num_batched_tokens = 32,
          .max_model_len = 64,
          .block_size = 4,
          .num_blocks = 24,  // 96 tokens: forces preemption
          .num_state_slots = 12};
}

TEST(SchedulerRandom, TightBlocksForcePreemptionAndEverythingFinishes) {
  int32_t total_preemptions = 0;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    RunStats stats = random_run({.seed = seed, .config = tight_config()});
    total_preemptions += stats.num_preemptions;
  }
  EXPECT_GT(total_preemptions, 20);
}

TEST(SchedulerRandom, LookaheadAndFewStateSlots) {
  SchedulerConfig config = tight_config();
  config.num_state_slots = 5;
  int32_t total_preemptions = 0;
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE(seed);
    total_preemptions += random_run({.seed = seed, .config = config, .max_lookahead = 3})
                             .num_preemptions;
  }
  EXPECT_GT(total_preemptions, 0);
}

TEST(SchedulerRandom, LongPrefillThresholdAndNoChunking) {
  SchedulerConfig config = tight_config();
  config.long_prefill_token_threshold = 8;
  for (uint32_t seed = 1; seed <= 5; ++seed) random_run({.seed = seed, .config = config});
  config = tight_config();
  config.enable_chunked_prefill = false;
  config.max_num_batched_tokens = 64;
  for (uint32_t seed = 1; seed <= 5; ++seed) random_run({.seed = seed, .config = config});
}

TEST(SchedulerRandom, AbortsFreeWithinTheStep) {
  int32_t total_aborted = 0;
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    SCOPED_TRACE(seed);
    total_aborted +=
        random_run({.seed = seed, .config = tight_config(), .abort_probability = 0.05}).num_aborted;
  }
  EXPECT_GT(total_aborted, 5);
}

}  // namespace
}  // namespace bf
