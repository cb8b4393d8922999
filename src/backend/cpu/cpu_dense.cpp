// CPU reference of the dense ops: embedding gather, GEMM (OpenBLAS), the RMSNorms, RoPE and
// the elementwise gates. Norm reductions accumulate in double (a reference should be at least
// as accurate as what it checks); everything stored is f32. Elementwise ops allow their
// output to alias an input.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_util.h"

namespace bf::cpu {
namespace {

// 1 / sqrt(mean(x²) + eps) of one row.
float rms_scale(const float* x, int64_t dim, float eps) {
  double sum_sq = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  return static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps));
}

void check_norm_args(const Tensor& x, const Tensor& w, const Tensor& out, const char* op) {
  check_f32(x, op, "x");
  check_f32(w, op, "w");
  BF_CHECK(w.rank() == 1 && w.numel() > 0, op, ": w must be [dim], got ", shape_string(w.shape()));
  BF_CHECK(x.numel() % w.numel() == 0, op, ": x of shape ", shape_string(x.shape()),
           " is not rows of dim ", w.numel());
  check_shape(out, x.shape(), op, "out");
}

}  // namespace

void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out) {
  check_f32(table, "embedding", "table");
  BF_CHECK(table.rank() == 2, "embedding: table must be [vocab, hidden], got ",
           shape_string(table.shape()));
  const int64_t vocab = table.dim(0), hidden = table.dim(1);
  check_shape(out, {static_cast<int64_t>(ids.size()), hidden}, "embedding", "out");
  for (size_t t = 0; t < ids.size(); ++t) {
    BF_CHECK(ids[t] >= 0 && ids[t] < vocab, "embedding: token id ", ids[t], " at row ", t,
             " is outside the vocabulary of ", vocab);
    std::memcpy(out.f32() + t * hidden, table.f32() + ids[t] * hidden, hidden * sizeof(float));
  }
}

void matmul(const Tensor& x, const Tensor& w, Tensor& out) {
  check_f32(x, "matmul", "x");
  check_f32(w, "matmul", "w");
  BF_CHECK(x.rank() == 2 && w.rank() == 2 && x.dim(1) == w.dim(1), "matmul: x ",
           shape_string(x.shape()), " and w ", shape_string(w.shape()),
           " must be [T, in] and [out_features, in]");
  check_shape(out, {x.dim(0), w.dim(0)}, "matmul", "out");
  BF_CHECK(out.raw() != x.raw(), "matmul: out must not alias x");
  // [T, out_features] = [T, in] · [out_features, in]ᵀ
  gemm(false, true, x.dim(0), w.dim(0), x.dim(1), 1.0f, x.f32(), w.f32(), 0.0f, out.f32());
}

void rms_norm(const Tensor& x, const Tensor& w, float eps, bool one_centered, Tensor& out) {
  check_norm_args(x, w, out, "rms_norm");
  const int64_t dim = w.numel(), rows = x.numel() / dim;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.f32() + r * dim;
    float* yr = out.f32() + r * dim;
    const float scale = rms_scale(xr, dim, eps);
    for (int64_t i = 0; i < dim; ++i) {
      const float weight = one_centered ? 1.0f + w.f32()[i] : w.f32()[i];
      yr[i] = xr[i] * scale * weight;
    }
  }
}

void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                  bool one_centered, Tensor& out) {
  check_norm_args(residual, w, out, "add_rms_norm");
  check_shape(x, residual.shape(), "add_rms_norm", "x");
  const int64_t dim = w.numel(), rows = x.numel() / dim;
  for (int64_t r = 0; r < rows; ++r) {
    // Row by row: x's row is fully read before out's row (which x may alias) is written.
    float* res = residual.f32() + r * dim;
    const float* xr = x.f32() + r * dim;
    for (int64_t i = 0; i < dim; ++i) res[i] += xr[i];
    float* yr = out.f32() + r * dim;
    const float scale = rms_scale(res, dim, eps);
    for (int64_t i = 0; i < dim; ++i) {
      const float weight = one_centered ? 1.0f + w.f32()[i] : w.f32()[i];
      yr[i] = res[i] * scale * weight;
    }
  }
}

void add(Tensor& a, const Tensor& b) {
  check_f32(a, "add", "a");
  check_shape(b, a.shape(), "add", "b");
  for (int64_t i = 0; i < a.numel(); ++i) a.f32()[i] += b.f32()[i];
}

void gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, float eps, Tensor& out) {
  check_norm_args(o, w, out, "gated_rms_norm");
  check_shape(z, o.shape(), "gated_rms_norm", "z");
  const int64_t dim = w.numel(), rows = o.numel() / dim;
  for (int64_t r = 0; r < rows; ++r) {
    const float* orow = o.f32() + r * dim;
    const float* zrow = z.f32() + r * dim;
    float* yr = out.f32() + r * dim;
    const float scale = rms_scale(orow, dim, eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = w.f32()[i] * (orow[i] * scale) * silu(zrow[i]);
  }
}

void rope(Tensor& x, const std::vector<int32_t>& positions, int32_t rotary_dim, float theta) {
  check_f32(x, "rope", "x");
  BF_CHECK(x.rank() == 3, "rope: x must be [T, heads, head_dim], got ", shape_string(x.shape()));
  const int64_t num_tokens = x.dim(0), heads = x.dim(1), head_dim = x.dim(2);
  BF_CHECK(static_cast<int64_t>(positions.size()) == num_tokens, "rope: ", positions.size(),
           " positions for ", num_tokens, " tokens");
  BF_CHECK(rotary_dim > 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim, "rope: rotary_dim ",
           rotary_dim, " must be even and in (0, head_dim=", head_dim, "]");
  const int32_t half = rotary_dim / 2;
  // HF in float32: inv_freq = 1 / theta^(arange(0, dim, 2) / dim); angle = position * inv_freq.
  std::vector<float> inv_freq(half);
  for (int32_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int32_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* xh = x.f32() + (t * heads + h) * head_dim;
      for (int32_t i = 0; i < half; ++i) {  // NeoX pairs (i, i + half)
        const float x1 = xh[i], x2 = xh[i + half];
        xh[i] = x1 * cos_t[i] - x2 * sin_t[i];
        xh[i + half] = x2 * cos_t[i] + x1 * sin_t[i];
      }
    }
  }
}

void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_f32(gate, "silu_mul", "gate");
  check_shape(up, gate.shape(), "silu_mul", "up");
  check_shape(out, gate.shape(), "silu_mul", "out");
  for (int64_t i = 0; i < gate.numel(); ++i) out.f32()[i] = silu(gate.f32()[i]) * up.f32()[i];
}

void sigmoid_mul(Tensor& x, const Tensor& gate) {
  check_f32(x, "sigmoid_mul", "x");
  check_shape(gate, x.shape(), "sigmoid_mul", "gate");
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] *= sigmoid(gate.f32()[i]);
}

}  // namespace bf::cpu
