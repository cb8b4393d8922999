// Counter-based randomness: deterministic in (seed, position, stream), uniform, and with
// unrelated outputs for neighbouring seeds, positions and streams.
#include "engine/random.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <vector>

namespace bf {
namespace {

// Pearson chi-square of counts against equal expected counts.
double chi_square_uniform(const std::vector<int64_t>& counts, int64_t draws) {
  double expected = static_cast<double>(draws) / counts.size();
  double chi = 0.0;
  for (int64_t c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}

// 100 bins -> 99 degrees of freedom; the chi-square critical value at p = 0.001 is 148.23.
// Inputs are fixed, so the test is deterministic; the threshold says how surprising a
// failure would be for a good generator.
constexpr int bins = 100;
constexpr double chi_square_99_p001 = 148.23;

TEST(Random, DeterministicInAllInputs) {
  EXPECT_EQ(uniform(42, 7, 0), uniform(42, 7, 0));
  EXPECT_EQ(random_bits(42, 7, 1), random_bits(42, 7, 1));
  EXPECT_NE(random_bits(42, 7, 0), random_bits(43, 7, 0));
  EXPECT_NE(random_bits(42, 7, 0), random_bits(42, 8, 0));
  EXPECT_NE(random_bits(42, 7, 0), random_bits(42, 7, 1));
  // Swapping inputs must not collide: the three are mixed in sequence, not summed.
  EXPECT_NE(random_bits(1, 2, 0), random_bits(2, 1, 0));
  EXPECT_NE(random_bits(0, 0, 1), random_bits(0, 1, 0));
}

TEST(Random, UniformInHalfOpenRange) {
  for (uint64_t i = 0; i < 10000; ++i) {
    double u = uniform(i, i * 3, 0);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(Random, ChiSquareOverPositions) {
  // What decoding uses: one seed, consecutive positions.
  constexpr int64_t draws = 200000;
  std::vector<int64_t> counts(bins, 0);
  for (int64_t i = 0; i < draws; ++i) ++counts[static_cast<int>(uniform(1234, i, 0) * bins)];
  EXPECT_LT(chi_square_uniform(counts, draws), chi_square_99_p001);
}

TEST(Random, ChiSquareOverSeedsAndStreams) {
  // Consecutive seeds (child_seed gives seed + index) at one position, and streams.
  constexpr int64_t draws = 200000;
  std::vector<int64_t> by_seed(bins, 0), by_stream(bins, 0);
  for (int64_t i = 0; i < draws; ++i) {
    ++by_seed[static_cast<int>(uniform(i, 0, 0) * bins)];
    ++by_stream[static_cast<int>(uniform(99, 5, i) * bins)];
  }
  EXPECT_LT(chi_square_uniform(by_seed, draws), chi_square_99_p001);
  EXPECT_LT(chi_square_uniform(by_stream, draws), chi_square_99_p001);
}

TEST(Random, PairsOfNeighbouringPositionsAreIndependent) {
  // 10x10 grid of (u[i], u[i+1]): serial correlation would pile draws into some cells.
  constexpr int64_t draws = 200000;
  std::vector<int64_t> counts(bins, 0);
  for (int64_t i = 0; i < draws; ++i) {
    int a = static_cast<int>(uniform(7, i, 0) * 10);
    int b = static_cast<int>(uniform(7, i + 1, 0) * 10);
    ++counts[a * 10 + b];
  }
  EXPECT_LT(chi_square_uniform(counts, draws), chi_square_99_p001);
}

TEST(Random, EveryBitIsBalanced) {
  // Each bit is set with probability 1/2: over 100k draws, 5 sigma is 790.
  constexpr int64_t draws = 100000;
  std::vector<int64_t> ones(64, 0);
  for (int64_t i = 0; i < draws; ++i) {
    uint64_t bits = random_bits(0, i, 0);
    for (int b = 0; b < 64; ++b) ones[b] += (bits >> b) & 1;
  }
  for (int b = 0; b < 64; ++b) EXPECT_NEAR(ones[b], draws / 2, 790) << "bit " << b;
}

TEST(Random, RequestSeedsAreDistinct) {
  std::set<uint64_t> seeds;
  for (int i = 0; i < 1000; ++i) seeds.insert(make_request_seed());
  EXPECT_EQ(seeds.size(), 1000u);
  EXPECT_EQ(resolve_seed(uint64_t{5}), 5u);
  EXPECT_EQ(child_seed(5, 2), 7u);
}

}  // namespace
}  // namespace bf
