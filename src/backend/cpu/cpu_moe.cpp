// CPU reference of the routed experts of a Qwen3.5-MoE block (research/qwen35.md §2.5):
// p = softmax(x routerᵀ) in f32; the top_k largest p (ties: lower expert index first, which
// is what torch.topk does on the CPU in practice but does not promise); weights renormalised
// to sum 1; out = Σ_k w_k · down_e(silu(gate_e x) ⊙ up_e x). Tokens are grouped per expert so
// each expert runs as two sgemms; contributions are added in expert order (HF's index_add_
// order). out may alias x.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_util.h"

namespace bf::cpu {

void moe_experts(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
                 int32_t top_k, Tensor& out) {
  const char* op = "moe_experts";
  check_f32(x, op, "x");
  BF_CHECK(x.rank() == 2, op, ": x must be [T, H], got ", shape_string(x.shape()));
  const int64_t num_tokens = x.dim(0), hidden = x.dim(1);
  check_f32(router, op, "router");
  BF_CHECK(router.rank() == 2 && router.dim(1) == hidden, op, ": router must be [E, H=", hidden,
           "], got ", shape_string(router.shape()));
  const int64_t num_experts = router.dim(0);
  check_f32(gate_up, op, "gate_up");
  BF_CHECK(gate_up.rank() == 3 && gate_up.dim(0) == num_experts && gate_up.dim(2) == hidden &&
               gate_up.dim(1) % 2 == 0,
           op, ": gate_up must be [E=", num_experts, ", 2I, H=", hidden, "], got ",
           shape_string(gate_up.shape()));
  const int64_t inter = gate_up.dim(1) / 2;
  check_shape(down, {num_experts, hidden, inter}, op, "down");
  check_shape(out, x.shape(), op, "out");
  BF_CHECK(top_k >= 1 && top_k <= num_experts, op, ": top_k ", top_k, " must be in [1, E=",
           num_experts, "]");

  // Routing: [T, E] logits -> softmax -> top-k -> renormalised weights.
  std::vector<float> probs(num_tokens * num_experts);
  gemm(false, true, num_tokens, num_experts, hidden, 1.0f, x.f32(), router.f32(), 0.0f,
       probs.data());
  std::vector<std::vector<int64_t>> tokens_of(num_experts);   // tokens routed to each expert
  std::vector<std::vector<float>> weights_of(num_experts);    // and their routing weights
  std::vector<int64_t> order(num_experts);
  for (int64_t t = 0; t < num_tokens; ++t) {
    float* p = probs.data() + t * num_experts;
    const float max_logit = *std::max_element(p, p + num_experts);
    float sum = 0.0f;
    for (int64_t e = 0; e < num_experts; ++e) sum += p[e] = std::exp(p[e] - max_logit);
    for (int64_t e = 0; e < num_experts; ++e) p[e] /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t l, int64_t r) { return p[l] > p[r]; });
    float top_sum = 0.0f;
    for (int32_t k = 0; k < top_k; ++k) top_sum += p[order[k]];
    for (int32_t k = 0; k < top_k; ++k) {
      tokens_of[order[k]].push_back(t);
      weights_of[order[k]].push_back(p[order[k]] / top_sum);
    }
  }

  // Experts: gather their tokens, [n, 2I] = X gate_upᵀ, act = silu(gate) ⊙ up, [n, H] = act downᵀ.
  std::vector<float> result(num_tokens * hidden, 0.0f), xs, gu, act, ys;
  for (int64_t e = 0; e < num_experts; ++e) {
    const int64_t n = static_cast<int64_t>(tokens_of[e].size());
    if (n == 0) continue;
    xs.resize(n * hidden);
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(x.f32() + tokens_of[e][i] * hidden, hidden, xs.data() + i * hidden);
    gu.resize(n * 2 * inter);
    gemm(false, true, n, 2 * inter, hidden, 1.0f, xs.data(), gate_up.f32() + e * 2 * inter * hidden,
         0.0f, gu.data());
    act.resize(n * inter);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < inter; ++j)
        act[i * inter + j] = silu(gu[i * 2 * inter + j]) * gu[i * 2 * inter + inter + j];
    ys.resize(n * hidden);
    gemm(false, true, n, hidden, inter, 1.0f, act.data(), down.f32() + e * hidden * inter, 0.0f,
         ys.data());
    for (int64_t i = 0; i < n; ++i) {
      float* dst = result.data() + tokens_of[e][i] * hidden;
      for (int64_t d = 0; d < hidden; ++d) dst[d] += weights_of[e][i] * ys[i * hidden + d];
    }
  }
  std::copy(result.begin(), result.end(), out.f32());
}

}  // namespace bf::cpu
