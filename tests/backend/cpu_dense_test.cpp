// CPU reference dense ops vs direct formulas (double) on seeded random inputs.
// Tolerance: rtol 1e-5, atol 1e-5 unless stated (f32 results of O(1) values).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/backend.h"
#include "test_util.h"

namespace bf {
namespace {

using test::all_close;
using test::random_tensor;

double silu_d(double x) { return x / (1.0 + std::exp(-x)); }

std::vector<double> rms_norm_ref(const Tensor& x, const Tensor& w, double eps, bool one_centered) {
  const int64_t dim = w.numel(), rows = x.numel() / dim;
  std::vector<double> y(x.numel());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x.f32()[r * dim + i]) * x.f32()[r * dim + i];
    const double scale = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = x.f32()[r * dim + i] * scale * (one_centered ? 1.0 + w.f32()[i] : w.f32()[i]);
  }
  return y;
}

TEST(CpuDense, EmbeddingGathersRows) {
  std::mt19937 rng(1);
  auto be = make_cpu_backend();
  Tensor table = random_tensor({10, 6}, rng);
  std::vector<int32_t> ids = {3, 0, 9, 3};
  Tensor out = be->empty({4, 6});
  be->embedding(ids, table, out);
  for (int t = 0; t < 4; ++t)
    for (int d = 0; d < 6; ++d) EXPECT_EQ(out.f32()[t * 6 + d], table.f32()[ids[t] * 6 + d]);
  std::vector<int32_t> bad = {10};
  Tensor out1 = be->empty({1, 6});
  EXPECT_THROW(be->embedding(bad, table, out1), Error);
}

TEST(CpuDense, MatmulIsXTimesWTransposed) {
  std::mt19937 rng(2);
  auto be = make_cpu_backend();
  Tensor x = random_tensor({7, 33}, rng), w = random_tensor({19, 33}, rng);
  Tensor out = be->empty({7, 19});
  be->matmul(x, w, out);
  std::vector<double> want(7 * 19);
  for (int t = 0; t < 7; ++t)
    for (int o = 0; o < 19; ++o)
      for (int i = 0; i < 33; ++i) want[t * 19 + o] += double(x.f32()[t * 33 + i]) * w.f32()[o * 33 + i];
  EXPECT_TRUE(all_close(out, want, 1e-5, 1e-5));
  Tensor wrong = be->empty({7, 18});
  EXPECT_THROW(be->matmul(x, w, wrong), Error);
}

TEST(CpuDense, SplitColumnsTakesConsecutiveRanges) {
  std::mt19937 rng(3);
  auto be = make_cpu_backend();
  Tensor x = random_tensor({5, 23}, rng);
  std::vector<Tensor> parts = {be->empty({5, 4}), be->empty({5, 9}), be->empty({5, 6})};
  be->split_columns(x, parts);
  int64_t begin = 0;
  for (const Tensor& part : parts) {
    for (int r = 0; r < 5; ++r)
      for (int c = 0; c < part.dim(1); ++c)
        EXPECT_EQ(part.f32()[r * part.dim(1) + c], x.f32()[r * 23 + begin + c]);
    begin += part.dim(1);
  }
  std::vector<Tensor> too_wide = {be->empty({5, 20}), be->empty({5, 4})};
  EXPECT_THROW(be->split_columns(x, too_wide), Error);
}

TEST(CpuDense, RmsNormBothForms) {
  std::mt19937 rng(3);
  auto be = make_cpu_backend();
  Tensor x = random_tensor({5, 3, 16}, rng, -2, 2), w = random_tensor({16}, rng);
  for (bool one_centered : {false, true}) {
    Tensor out = be->empty({5, 3, 16});
    be->rms_norm(x, w, 1e-6f, one_centered, out);
    EXPECT_TRUE(all_close(out, rms_norm_ref(x, w, 1e-6, one_centered), 1e-5, 1e-5));
  }
}

TEST(CpuDense, AddRmsNormWithAliasedOutput) {
  std::mt19937 rng(4);
  auto be = make_cpu_backend();
  Tensor residual = random_tensor({6, 24}, rng), x = random_tensor({6, 24}, rng);
  Tensor w = random_tensor({24}, rng);
  Tensor sum = be->empty({6, 24});
  for (int i = 0; i < sum.numel(); ++i) sum.f32()[i] = residual.f32()[i] + x.f32()[i];
  const std::vector<double> want = rms_norm_ref(sum, w, 1e-6, true);
  be->add_rms_norm(residual, x, w, 1e-6f, true, x);  // x aliases out
  EXPECT_TRUE(all_close(residual, sum, 0, 0));
  EXPECT_TRUE(all_close(x, want, 1e-5, 1e-5));
}

TEST(CpuDense, AddSiluMulSigmoidMul) {
  std::mt19937 rng(5);
  auto be = make_cpu_backend();
  Tensor a = random_tensor({4, 9}, rng, -4, 4), b = random_tensor({4, 9}, rng, -4, 4);
  std::vector<double> sum(36), silu_mul(36), sig_mul(36);
  for (int i = 0; i < 36; ++i) {
    sum[i] = double(a.f32()[i]) + b.f32()[i];
    silu_mul[i] = silu_d(a.f32()[i]) * b.f32()[i];
    sig_mul[i] = a.f32()[i] / (1.0 + std::exp(-double(b.f32()[i])));
  }
  Tensor out = be->empty({4, 9});
  be->silu_mul(a, b, out);
  EXPECT_TRUE(all_close(out, silu_mul, 1e-5, 1e-6));
  Tensor c = test::clone(a);
  be->sigmoid_mul(c, b);
  EXPECT_TRUE(all_close(c, sig_mul, 1e-5, 1e-6));
  // silu_mul_packed: gate in the first half of each row, up in the second.
  Tensor packed = be->empty({4, 18});
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 9; ++j) {
      packed.f32()[r * 18 + j] = a.f32()[r * 9 + j];
      packed.f32()[r * 18 + 9 + j] = b.f32()[r * 9 + j];
    }
  Tensor packed_out = be->empty({4, 9});
  be->silu_mul_packed(packed, packed_out);
  EXPECT_TRUE(all_close(packed_out, silu_mul, 1e-5, 1e-6));
  Tensor odd = be->empty({4, 17});
  EXPECT_THROW(be->silu_mul_packed(odd, packed_out), Error);
  be->add(a, b);
  EXPECT_TRUE(all_close(a, sum, 1e-6, 1e-6));
}

TEST(CpuDense, GatedRmsNorm) {
  std::mt19937 rng(6);
  auto be = make_cpu_backend();
  Tensor o = random_tensor({3, 4, 8}, rng, -2, 2), z = random_tensor({3, 4, 8}, rng, -3, 3);
  Tensor w = random_tensor({8}, rng, 0.5, 1.5);
  std::vector<double> want = rms_norm_ref(o, w, 1e-6, false);
  for (int i = 0; i < o.numel(); ++i) want[i] *= silu_d(z.f32()[i]);
  Tensor out = be->empty({3, 4, 8});
  be->gated_rms_norm(o, z, w, 1e-6f, out);
  EXPECT_TRUE(all_close(out, want, 1e-5, 1e-5));
}

// Partial NeoX RoPE. The angle follows HF's float32 recipe (inv_freq and position·inv_freq in
// float), the rotation is done in double. A second check with double angles bounds the
// float-angle error (positions < 3000: angle error ~ulp(3000) ≈ 2.4e-4).
TEST(CpuDense, RopePartialNeox) {
  std::mt19937 rng(7);
  auto be = make_cpu_backend();
  const int T = 6, H = 3, hd = 16, rot = 8;
  const float theta = 1e7f;
  const std::vector<int32_t> positions = {0, 1, 17, 255, 1000, 2999};
  Tensor x = random_tensor({T, H, hd}, rng);
  std::vector<double> want_f32_angle(x.numel()), want_f64_angle(x.numel());
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < hd; ++i) {
        const int idx = (t * H + h) * hd + i;
        want_f32_angle[idx] = want_f64_angle[idx] = x.f32()[idx];
      }
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < rot / 2; ++i) {
      const float inv_freq_f = 1.0f / std::pow(theta, float(2 * i) / float(rot));
      const double angle_f = double(float(positions[t]) * inv_freq_f);
      const double angle_d = positions[t] * std::pow(1e7, -2.0 * i / rot);
      for (int h = 0; h < H; ++h) {
        const int base = (t * H + h) * hd;
        const double x1 = x.f32()[base + i], x2 = x.f32()[base + i + rot / 2];
        want_f32_angle[base + i] = x1 * std::cos(angle_f) - x2 * std::sin(angle_f);
        want_f32_angle[base + i + rot / 2] = x2 * std::cos(angle_f) + x1 * std::sin(angle_f);
        want_f64_angle[base + i] = x1 * std::cos(angle_d) - x2 * std::sin(angle_d);
        want_f64_angle[base + i + rot / 2] = x2 * std::cos(angle_d) + x1 * std::sin(angle_d);
      }
    }
  be->rope(x, positions, rot, theta);
  EXPECT_TRUE(all_close(x, want_f32_angle, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(x, want_f64_angle, 0, 1e-3));
}

TEST(CpuDense, ShapeErrorsNameTheOp) {
  auto be = make_cpu_backend();
  Tensor x = be->zeros({2, 8}), w = be->zeros({6}), out = be->empty({2, 8});
  try {
    be->rms_norm(x, w, 1e-6f, true, out);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rms_norm"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bf

namespace bf {
namespace {

// Greedy drafting's argmax: lowest index on ties, NaN never chosen, all-NaN rows rejected.
TEST(BackendArgmaxRows, TiesNaNAndRows) {
  auto be = make_cpu_backend();
  const float nan = std::nanf("");
  Tensor x = Tensor::from_floats({3, 4}, {1, 5, 5, 2, nan, -1, -3, -1, -7, nan, 0.5f, 0.25f});
  EXPECT_EQ(be->argmax_rows(x), (std::vector<int32_t>{1, 1, 2}));
  Tensor bad = Tensor::from_floats({1, 2}, {nan, nan});
  EXPECT_THROW(be->argmax_rows(bad), Error);
}

}  // namespace
}  // namespace bf
