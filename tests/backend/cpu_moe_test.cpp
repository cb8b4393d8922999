// CPU MoE experts vs a naive per-token formula in double (softmax router, top-k, renormalised
// weights, SwiGLU experts). Tolerance rtol 1e-4, atol 1e-5. Ties go to the lower index.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "test_util.h"

namespace bf {
namespace {

using test::all_close;
using test::random_tensor;

constexpr int kE = 8, kH = 16, kI = 12;

// Expert e of token row x, in double: down_e(silu(gate_e x) ⊙ up_e x).
std::vector<double> expert_ref(const float* x, const Tensor& gate_up, const Tensor& down, int e) {
  std::vector<double> act(kI), y(kH, 0.0);
  for (int j = 0; j < kI; ++j) {
    double gate = 0, up = 0;
    for (int d = 0; d < kH; ++d) {
      gate += double(gate_up.f32()[(e * 2 * kI + j) * kH + d]) * x[d];
      up += double(gate_up.f32()[(e * 2 * kI + kI + j) * kH + d]) * x[d];
    }
    act[j] = gate / (1.0 + std::exp(-gate)) * up;
  }
  for (int d = 0; d < kH; ++d)
    for (int j = 0; j < kI; ++j) y[d] += double(down.f32()[(e * kH + d) * kI + j]) * act[j];
  return y;
}

TEST(CpuMoe, MatchesNaive) {
  std::mt19937 rng(30);
  auto be = make_cpu_backend();
  const int T = 10, top_k = 3;
  Tensor x = random_tensor({T, kH}, rng), router = random_tensor({kE, kH}, rng, -2, 2);
  Tensor gate_up = random_tensor({kE, 2 * kI, kH}, rng), down = random_tensor({kE, kH, kI}, rng);
  std::vector<double> want(T * kH, 0.0);
  for (int t = 0; t < T; ++t) {
    std::vector<double> p(kE);
    for (int e = 0; e < kE; ++e)
      for (int d = 0; d < kH; ++d) p[e] += double(router.f32()[e * kH + d]) * x.f32()[t * kH + d];
    const double max_logit = *std::max_element(p.begin(), p.end());
    double sum = 0;
    for (double& v : p) sum += v = std::exp(v - max_logit);
    for (double& v : p) v /= sum;
    std::vector<int> order(kE);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double top_sum = 0;
    for (int k = 0; k < top_k; ++k) top_sum += p[order[k]];
    for (int k = 0; k < top_k; ++k) {
      const std::vector<double> y = expert_ref(x.f32() + t * kH, gate_up, down, order[k]);
      for (int d = 0; d < kH; ++d) want[t * kH + d] += p[order[k]] / top_sum * y[d];
    }
  }
  Tensor out = be->empty({T, kH});
  be->moe_experts(x, router, gate_up, down, top_k, out);
  EXPECT_TRUE(all_close(out, want, 1e-4, 1e-5));
  be->moe_experts(x, router, gate_up, down, top_k, x);  // out may alias x
  EXPECT_TRUE(all_close(x, want, 1e-4, 1e-5));
}

// A zero router makes every expert equally likely: top-k takes experts 0..k-1, weight 1/k.
TEST(CpuMoe, TiesGoToLowerExpertIndex) {
  std::mt19937 rng(31);
  auto be = make_cpu_backend();
  const int T = 3, top_k = 2;
  Tensor x = random_tensor({T, kH}, rng), router = be->zeros({kE, kH});
  Tensor gate_up = random_tensor({kE, 2 * kI, kH}, rng), down = random_tensor({kE, kH, kI}, rng);
  std::vector<double> want(T * kH, 0.0);
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < top_k; ++e) {
      const std::vector<double> y = expert_ref(x.f32() + t * kH, gate_up, down, e);
      for (int d = 0; d < kH; ++d) want[t * kH + d] += y[d] / top_k;
    }
  Tensor out = be->empty({T, kH});
  be->moe_experts(x, router, gate_up, down, top_k, out);
  EXPECT_TRUE(all_close(out, want, 1e-4, 1e-5));
}

}  // namespace
}  // namespace bf
