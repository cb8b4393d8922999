// Decode graphs, the host side: which batch sizes get a graph, which bucket a step uses, which
// steps qualify, and what padding adds. (Recording and replaying: tests/cuda/cuda_graphs_test.)
#include "model/decode_graphs.h"

#include <gtest/gtest.h>

namespace bf {
namespace {

TEST(DecodeGraphBuckets, PowersOfTwoThenMultiplesOfEight) {
  EXPECT_EQ(decode_graph_buckets(1), (std::vector<int32_t>{1}));
  EXPECT_EQ(decode_graph_buckets(3), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(decode_graph_buckets(8), (std::vector<int32_t>{1, 2, 4, 8}));
  EXPECT_EQ(decode_graph_buckets(12), (std::vector<int32_t>{1, 2, 4, 8, 12}));
  EXPECT_EQ(decode_graph_buckets(32), (std::vector<int32_t>{1, 2, 4, 8, 16, 24, 32}));
  const std::vector<int32_t> many = decode_graph_buckets(1000);  // capped at 256
  EXPECT_EQ(many.size(), 3u + 32u);
  EXPECT_EQ(many.back(), 256);
  for (size_t i = 1; i < many.size(); ++i) EXPECT_LT(many[i - 1], many[i]);
}

TEST(DecodeGraphBuckets, SmallestBucketThatHolds) {
  const std::vector<int32_t> buckets = decode_graph_buckets(64);
  EXPECT_EQ(decode_graph_bucket(buckets, 1), 1);
  EXPECT_EQ(decode_graph_bucket(buckets, 3), 4);
  EXPECT_EQ(decode_graph_bucket(buckets, 5), 8);
  EXPECT_EQ(decode_graph_bucket(buckets, 8), 8);
  EXPECT_EQ(decode_graph_bucket(buckets, 9), 16);
  EXPECT_EQ(decode_graph_bucket(buckets, 64), 64);
  EXPECT_EQ(decode_graph_bucket(buckets, 65), 0);  // too many: eager
  EXPECT_EQ(decode_graph_bucket(buckets, 0), 0);
}

// n decodes; sequence s has 10 + s tokens computed and blocks {2s, 2s+1} of 16 tokens.
ForwardBatch decodes(int32_t n) {
  ForwardBatch b;
  for (int32_t s = 0; s < n; ++s) {
    BatchSequence seq;
    seq.query_start = s;
    seq.query_len = 1;
    seq.num_computed = 10 + s;
    seq.state_slot = s;
    seq.block_table = {2 * s, 2 * s + 1};
    b.token_ids.push_back(100 + s);
    b.positions.push_back(10 + s);
    b.slot_mapping.push_back(2 * s * 16 + 10 + s);
    b.logits_rows.push_back(s);
    b.seqs.push_back(seq);
  }
  return b;
}

TEST(DecodeGraphs, OnlyPlainDecodesQualify) {
  EXPECT_TRUE(is_plain_decode(decodes(3)));
  EXPECT_FALSE(is_plain_decode(ForwardBatch{}));

  ForwardBatch prefill = decodes(2);  // sequence 1 gets a second new token
  prefill.seqs[1].query_len = 2;
  prefill.token_ids.push_back(7);
  prefill.positions.push_back(12);
  prefill.slot_mapping.push_back(50);
  EXPECT_FALSE(is_plain_decode(prefill));

  ForwardBatch verify = decodes(2);
  verify.seqs[0].snapshot_slots = {5};
  EXPECT_FALSE(is_plain_decode(verify));

  ForwardBatch no_logits = decodes(2);  // a row without logits (a graph computes them all)
  no_logits.logits_rows = {1};
  EXPECT_FALSE(is_plain_decode(no_logits));

  ForwardBatch reordered = decodes(2);
  reordered.logits_rows = {1, 0};
  EXPECT_FALSE(is_plain_decode(reordered));
}

TEST(DecodeGraphs, PaddingAddsDummyDecodesThatTouchNothingReal) {
  const GraphPadding padding{.state_slot = 40, .kv_block = 99};
  ForwardBatch b = decodes(3);
  const ForwardBatch before = b;
  pad_decode_batch(b, 4, padding);
  ASSERT_EQ(b.seqs.size(), 4u);
  EXPECT_TRUE(is_plain_decode(b));
  for (int32_t s = 0; s < 3; ++s) {  // the real ones are unchanged
    EXPECT_EQ(b.token_ids[s], before.token_ids[s]);
    EXPECT_EQ(b.positions[s], before.positions[s]);
    EXPECT_EQ(b.slot_mapping[s], before.slot_mapping[s]);
    EXPECT_EQ(b.seqs[s].block_table, before.seqs[s].block_table);
    EXPECT_EQ(b.seqs[s].state_slot, before.seqs[s].state_slot);
  }
  const BatchSequence& pad = b.seqs[3];
  EXPECT_EQ(pad.query_start, 3);
  EXPECT_EQ(pad.query_len, 1);
  EXPECT_EQ(pad.num_computed, 0);  // no initial state is read
  EXPECT_EQ(pad.state_slot, 40);
  EXPECT_EQ(pad.block_table, std::vector<int32_t>{99});
  EXPECT_EQ(b.token_ids[3], 0);
  EXPECT_EQ(b.positions[3], 0);
  EXPECT_EQ(b.slot_mapping[3], -1);  // kv_write skips it
  EXPECT_EQ(b.logits_rows[3], 3);

  ForwardBatch same = decodes(4);
  pad_decode_batch(same, 4, padding);  // already the bucket's size
  EXPECT_EQ(same.seqs.size(), 4u);

  ForwardBatch only_padding;
  pad_decode_batch(only_padding, 2, padding);  // what a graph is recorded with
  EXPECT_EQ(only_padding.seqs.size(), 2u);
  EXPECT_TRUE(is_plain_decode(only_padding));

  ForwardBatch unreserved = decodes(1);
  EXPECT_THROW(pad_decode_batch(unreserved, 2, GraphPadding{}), Error);
}

}  // namespace
}  // namespace bf
