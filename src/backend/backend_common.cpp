// Host implementations of the small layout ops that every backend has in the same form
// on the CPU; a device backend overrides them.
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>
#include <algorithm>

#include "backend/backend.h"

namespace bf {

void Backend::slice_columns(const Tensor& x, int64_t begin, Tensor& out) {
  BF_CHECK(x.device() == Device::kCPU && out.device() == Device::kCPU,
           "slice_columns: host tensors only in the default implementation");
  BF_CHECK(x.rank() == 2 && out.rank() == 2 && x.dim(0) == out.dim(0) && begin >= 0 &&
               begin + out.dim(1) <= x.dim(1),
           "slice_columns: cannot take ", shape_string(out.shape()), " at column ", begin,
           " of ", shape_string(x.shape()));
  int64_t rows = x.dim(0), cols = x.dim(1), width = out.dim(1);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out.f32() + r * width, x.f32() + r * cols + begin, width * sizeof(float));
}

void Backend::split_columns(const Tensor& x, std::vector<Tensor>& parts) {
  int64_t begin = 0;
  for (Tensor& part : parts) {
    slice_columns(x, begin, part);
    begin += part.dim(1);
  }
}

void Backend::copy_from_host(Tensor& dst, const void* src, DType src_dtype) {
  BF_CHECK(dst.device() == Device::kCPU,
           "copy_from_host: host tensors only in the default implementation");
  convert_elements(src, src_dtype, dst.raw(), dst.dtype(), dst.numel());
}

void Backend::prepare_attention_inputs(const Tensor& q_and_gate, const Tensor& k_raw,
                                       const Tensor& v, const Tensor& q_norm,
                                       const Tensor& k_norm, float eps, int32_t rotary_dim,
                                       float theta, const ForwardBatch& batch, KvCache& cache,
                                       Tensor& q_out) {
  BF_CHECK(q_out.rank() == 3 && q_and_gate.rank() == 2 && k_raw.rank() == 2 && v.rank() == 3,
           "prepare_attention_inputs: q_out must be [T, Hq, hd], v [T, Hkv, hd]");
  const int64_t T = q_out.dim(0), hq = q_out.dim(1), hd = q_out.dim(2), hkv = v.dim(1);
  BF_CHECK(q_and_gate.dim(0) == T * hq && q_and_gate.dim(1) == 2 * hd &&
               k_raw.dim(0) == T * hkv && k_raw.dim(1) == hd && v.dim(0) == T && v.dim(2) == hd,
           "prepare_attention_inputs: q_and_gate ", shape_string(q_and_gate.shape()), ", k_raw ",
           shape_string(k_raw.shape()), " and v ", shape_string(v.shape()), " do not match q_out ",
           shape_string(q_out.shape()));
  Tensor q_raw = empty({T * hq, hd}, q_out.dtype());
  slice_columns(q_and_gate, 0, q_raw);
  Tensor q_rows = q_out.reshape({T * hq, hd});
  rms_norm(q_raw, q_norm, eps, /*one_centered=*/true, q_rows);
  Tensor k = empty({T, hkv, hd}, k_raw.dtype());
  Tensor k_rows = k.reshape({T * hkv, hd});
  rms_norm(k_raw, k_norm, eps, /*one_centered=*/true, k_rows);
  rope(q_out, batch.positions, rotary_dim, theta);
  rope(k, batch.positions, rotary_dim, theta);
  kv_write(k, v, batch, cache);
}

void Backend::check_attention_gate(const Tensor& out, const Tensor& gate_rows,
                                   int64_t gate_begin) {
  BF_CHECK(out.rank() == 3, "paged_attention_gated: out must be [T, Hq, hd], got ",
           shape_string(out.shape()));
  const int64_t rows = out.dim(0) * out.dim(1), hd = out.dim(2);
  BF_CHECK(gate_rows.rank() == 2 && gate_rows.dim(0) == rows && gate_begin >= 0 &&
               gate_begin + hd <= gate_rows.dim(1),
           "paged_attention_gated: no [", rows, ", ", hd, "] gate at column ", gate_begin, " of ",
           shape_string(gate_rows.shape()));
}

void Backend::paged_attention_gated(const Tensor& q, const KvCache& cache,
                                    const ForwardBatch& batch, const AttentionParams& params,
                                    const Tensor& gate_rows, int64_t gate_begin, Tensor& out) {
  check_attention_gate(out, gate_rows, gate_begin);
  const int64_t rows = out.dim(0) * out.dim(1), hd = out.dim(2);
  Tensor gate = empty({rows, hd}, gate_rows.dtype());
  slice_columns(gate_rows, gate_begin, gate);
  paged_attention(q, cache, batch, params, out);
  Tensor out_rows = out.reshape({rows, hd});
  sigmoid_mul(out_rows, gate);
}

void Backend::silu_mul_packed(const Tensor& gate_up, Tensor& out) {
  BF_CHECK(gate_up.rank() == 2 && out.rank() == 2 && gate_up.dim(0) == out.dim(0) &&
               gate_up.dim(1) == 2 * out.dim(1),
           "silu_mul_packed: gate_up ", shape_string(gate_up.shape()), " is not [T, 2n] for out ",
           shape_string(out.shape()));
  Tensor up = empty(out.shape(), out.dtype());
  slice_columns(gate_up, 0, out);
  slice_columns(gate_up, out.dim(1), up);
  silu_mul(out, up, out);
}

void Backend::swiglu_matmul(const Tensor& gate_up, const Tensor& w, Tensor& out) {
  BF_CHECK(gate_up.rank() == 2 && w.rank() == 2 && gate_up.dim(1) == 2 * w.dim(1),
           "swiglu_matmul: gate_up ", shape_string(gate_up.shape()), " does not match w ",
           shape_string(w.shape()));
  Tensor act = empty({gate_up.dim(0), w.dim(1)}, gate_up.dtype());
  silu_mul_packed(gate_up, act);
  matmul(act, w, out);
}

Tensor Backend::random_weight(const Shape& shape, float scale, uint64_t seed) {
  return upload(random_host_tensor(shape, scale, seed));
}

Tensor random_host_tensor(const Shape& shape, float scale, uint64_t seed) {
  Tensor host = Tensor::empty(shape);
  float* data = host.f32();
  const int64_t n = host.numel();
  // Element i is a hash of (seed, i), so the threads' split does not change the values.
  auto fill = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint64_t x = seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i);
      x ^= x >> 30;  // splitmix64 finalizer
      x *= 0xbf58476d1ce4e5b9ull;
      x ^= x >> 27;
      x *= 0x94d049bb133111ebull;
      x ^= x >> 31;
      const double u = static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);  // [0, 1)
      data[i] = static_cast<float>((2.0 * u - 1.0) * scale);
    }
  };
  const int64_t threads =
      n < (1 << 20) ? 1 : std::max<int64_t>(1, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t)
    pool.emplace_back(fill, n * t / threads, n * (t + 1) / threads);
  fill(0, n / threads);
  for (std::thread& thread : pool) thread.join();
  return host;
}

std::vector<int32_t> Backend::argmax_rows(const Tensor& x) {
  BF_CHECK(x.rank() == 2, "argmax_rows: x must be [rows, n], got ", shape_string(x.shape()));
  Tensor host = x.device() == Device::kCPU && x.dtype() == DType::kF32 ? x : to_host(x);
  const int64_t rows = host.dim(0), n = host.dim(1);
  std::vector<int32_t> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = host.f32() + r * n;
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i)
      if (!std::isnan(row[i]) && (best < 0 || row[i] > row[best])) best = i;
    BF_CHECK(best >= 0, "argmax_rows: row ", r, " has no number");
    out[r] = static_cast<int32_t>(best);
  }
  return out;
}

void Backend::sigmoid_scale_rows(Tensor& x, const Tensor& gate) {
  BF_CHECK(x.device() == Device::kCPU && gate.device() == Device::kCPU,
           "sigmoid_scale_rows: host tensors only in the default implementation");
  BF_CHECK(x.rank() == 2 && gate.numel() == x.dim(0), "sigmoid_scale_rows: gate ",
           shape_string(gate.shape()), " does not match rows of ", shape_string(x.shape()));
  int64_t rows = x.dim(0), cols = x.dim(1);
  for (int64_t r = 0; r < rows; ++r) {
    float scale = 1.0f / (1.0f + std::exp(-gate.f32()[r]));
    for (int64_t c = 0; c < cols; ++c) x.f32()[r * cols + c] *= scale;
  }
}

std::unique_ptr<Backend::Graph> Backend::capture_graph(const ForwardBatch&, int32_t,
                                                      const std::function<void()>&) {
  fail(name(), " backend: no graphs (supports_graphs() is false)");
}

void Backend::replay_graph(Graph&, const ForwardBatch&) {
  fail(name(), " backend: no graphs (supports_graphs() is false)");
}

}  // namespace bf
