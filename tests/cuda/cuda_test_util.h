// Helpers of the CUDA tests: random host inputs rounded to bf16 (so the CPU reference and the
// GPU see identical values), NaN-poisoned device outputs, and a comparison that reports the
// relative L2 error ‖got − want‖ / ‖want‖ and the worst element relative to max |want|.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/cuda_backend.h"

namespace bf::test {

inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

inline Tensor rand_bf16(Shape shape, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = round_bf16(dist(rng));
  return t;
}

inline Tensor host_copy(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape());
  std::copy_n(t.f32(), t.numel(), c.f32());
  return c;
}

// A device tensor holding `host` in `dtype`.
inline Tensor to_device(Backend& gpu, const Tensor& host, DType dtype = DType::kBF16) {
  Tensor d = gpu.empty(host.shape(), dtype);
  cuda_copy_from_host(d, host);
  return d;
}

// A device tensor of `shape` filled with NaN: every element must be written by the op.
inline Tensor poisoned(Backend& gpu, Shape shape, DType dtype = DType::kBF16) {
  Tensor host = Tensor::empty(shape);
  for (int64_t i = 0; i < host.numel(); ++i) host.f32()[i] = NAN;
  return to_device(gpu, host, dtype);
}

struct Diff {
  double rel_l2 = 0, max_rel = 0;
  int64_t nan = 0, worst = -1;
};

inline Diff diff(const float* got, const float* want, int64_t n) {
  Diff d;
  double num = 0, den = 0, max_want = 0, max_err = 0;
  for (int64_t i = 0; i < n; ++i) max_want = std::max(max_want, std::abs(double(want[i])));
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(got[i]) || std::isinf(got[i])) {
      ++d.nan;
      continue;
    }
    const double e = double(got[i]) - want[i];
    num += e * e;
    den += double(want[i]) * want[i];
    if (std::abs(e) > max_err) {
      max_err = std::abs(e);
      d.worst = i;
    }
  }
  d.rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  d.max_rel = max_want > 0 ? max_err / max_want : max_err;
  return d;
}

// rel_l2 <= tol and every element within max_tol * max|want|; no NaN.
inline ::testing::AssertionResult close(const Tensor& got_host, const Tensor& want, double tol,
                                        double max_tol = -1) {
  if (got_host.numel() != want.numel())
    return ::testing::AssertionFailure() << "size " << got_host.numel() << " vs " << want.numel();
  if (max_tol < 0) max_tol = 8 * tol;
  Diff d = diff(got_host.f32(), want.f32(), want.numel());
  if (d.nan > 0 || d.rel_l2 > tol || d.max_rel > max_tol)
    return ::testing::AssertionFailure()
           << d.nan << " NaN/inf of " << want.numel() << "; rel L2 " << d.rel_l2 << " (tol " << tol
           << "), worst element " << d.worst << " off by " << d.max_rel << " of max|want| (tol "
           << max_tol << ")"
           << (d.worst >= 0 ? " got " + std::to_string(got_host.f32()[d.worst]) + " want " +
                                  std::to_string(want.f32()[d.worst])
                            : "");
  return ::testing::AssertionSuccess() << "rel L2 " << d.rel_l2 << ", max " << d.max_rel;
}

inline bool have_gpu() { return query_cuda_device(0).present; }

}  // namespace bf::test
