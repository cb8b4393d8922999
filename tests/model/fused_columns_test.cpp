// take_columns: the parts of a fused projection's output, as views for one row (decode)
// and as copies for many rows.
#include <gtest/gtest.h>

#include "model/layers.h"

namespace bf {
namespace {

Tensor iota(Backend& be, int64_t rows, int64_t cols) {
  Tensor t = be.empty({rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) t.f32()[i] = static_cast<float>(i);
  return t;
}

TEST(TakeColumns, OneRowIsAViewWhenAligned) {
  auto be = make_cpu_backend();
  Tensor x = iota(*be, 1, 40);
  Tensor part = take_columns(*be, x, 8, 12);  // 32 bytes in: aligned
  ASSERT_EQ(part.shape(), (Shape{1, 12}));
  EXPECT_EQ(part.raw(), static_cast<const float*>(x.raw()) + 8);
  for (int j = 0; j < 12; ++j) EXPECT_EQ(part.f32()[j], 8 + j);
  Tensor unaligned = take_columns(*be, x, 3, 5);  // 12 bytes in: copied
  EXPECT_NE(unaligned.raw(), static_cast<const float*>(x.raw()) + 3);
  for (int j = 0; j < 5; ++j) EXPECT_EQ(unaligned.f32()[j], 3 + j);
}

TEST(TakeColumns, ManyRowsAreCopied) {
  auto be = make_cpu_backend();
  Tensor x = iota(*be, 3, 10);
  Tensor part = take_columns(*be, x, 4, 6);
  ASSERT_EQ(part.shape(), (Shape{3, 6}));
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(part.f32()[r * 6 + j], r * 10 + 4 + j);
  EXPECT_THROW(take_columns(*be, x, 5, 6), Error);
}

}  // namespace
}  // namespace bf
