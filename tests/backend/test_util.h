// Helpers of the backend tests: seeded random tensors, an elementwise closeness check that
// reports the worst element, and a ForwardBatch builder from per-sequence specs.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"

namespace bf::test {

inline Tensor random_tensor(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
  return t;
}

inline Tensor clone(const Tensor& t) {
  Tensor copy = Tensor::empty(t.shape());
  std::copy_n(t.f32(), t.numel(), copy.f32());
  return copy;
}

// |got - want| <= atol + rtol * |want| for every element.
inline ::testing::AssertionResult all_close(const float* got, const std::vector<double>& want,
                                            double rtol, double atol) {
  int64_t worst = -1;
  double worst_excess = 0.0, max_abs_err = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    max_abs_err = std::max(max_abs_err, std::isnan(err) ? INFINITY : err);
    const double excess = std::isnan(err) ? INFINITY : err - (atol + rtol * std::abs(want[i]));
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = static_cast<int64_t>(i);
    }
  }
  if (worst < 0) return ::testing::AssertionSuccess() << "max abs error " << max_abs_err;
  return ::testing::AssertionFailure()
         << "element " << worst << " of " << want.size() << ": got " << got[worst] << ", want "
         << want[worst] << " (rtol " << rtol << ", atol " << atol << "); max abs error "
         << max_abs_err;
}

inline ::testing::AssertionResult all_close(const Tensor& got, const std::vector<double>& want,
                                            double rtol, double atol) {
  if (got.numel() != static_cast<int64_t>(want.size()))
    return ::testing::AssertionFailure() << "size " << got.numel() << " vs " << want.size();
  return all_close(got.f32(), want, rtol, atol);
}

inline ::testing::AssertionResult all_close(const Tensor& got, const Tensor& want, double rtol,
                                            double atol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << shape_string(got.shape()) << " vs "
                                         << shape_string(want.shape());
  return all_close(got.f32(), std::vector<double>(want.f32(), want.f32() + want.numel()), rtol,
                   atol);
}

inline ::testing::AssertionResult bitwise_equal(const float* got, const float* want, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (got[i] != want[i])
      return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " vs " << want[i];
  return ::testing::AssertionSuccess();
}

struct SeqSpec {
  int32_t query_len = 0;
  int32_t num_computed = 0;
  int32_t state_slot = 0;
  std::vector<int32_t> block_table = {};
};

// Sequences laid end to end in the given order; positions continue from num_computed; the
// slot mapping follows the block tables when block_size > 0.
inline ForwardBatch make_batch(const std::vector<SeqSpec>& specs, int32_t block_size = 0) {
  ForwardBatch batch;
  for (const SeqSpec& spec : specs) {
    BatchSequence seq;
    seq.query_start = batch.num_tokens();
    seq.query_len = spec.query_len;
    seq.num_computed = spec.num_computed;
    seq.state_slot = spec.state_slot;
    seq.block_table = spec.block_table;
    for (int32_t i = 0; i < spec.query_len; ++i) {
      const int32_t pos = spec.num_computed + i;
      batch.token_ids.push_back(0);
      batch.positions.push_back(pos);
      if (block_size > 0)
        batch.slot_mapping.push_back(spec.block_table.at(pos / block_size) * block_size +
                                     pos % block_size);
    }
    batch.seqs.push_back(seq);
  }
  return batch;
}

}  // namespace bf::test
