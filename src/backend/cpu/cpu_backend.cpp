// The CPU reference backend: every Backend op in f32 on the host, forwarding to the free
// functions of cpu_ops.h (one file per family: dense, gdn, delta rule, attention, moe).
// Storage is host memory, so upload/empty/zeros/to_host are plain host tensors.
#include <cstring>
#include <memory>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/cpu_util.h"

namespace bf {
namespace {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::kCPU; }

  Tensor upload(const Tensor& host_f32) override {
    cpu::check_f32(host_f32, "upload", "tensor");
    return host_f32;  // shares the buffer: the CPU computes on host f32 directly
  }
  Tensor empty(Shape shape, DType dtype) override { return Tensor::empty(std::move(shape), dtype); }
  Tensor zeros(Shape shape, DType dtype) override { return Tensor::zeros(std::move(shape), dtype); }
  Tensor to_host(const Tensor& tensor) override {
    cpu::check_f32(tensor, "to_host", "tensor");
    Tensor copy = Tensor::empty(tensor.shape());
    std::memcpy(copy.raw(), tensor.raw(), tensor.size_bytes());
    return copy;
  }

  void embedding(const std::vector<int32_t>& ids, const Tensor& table, Tensor& out) override {
    cpu::embedding(ids, table, out);
  }
  void matmul(const Tensor& x, const Tensor& w, Tensor& out) override { cpu::matmul(x, w, out); }
  void rms_norm(const Tensor& x, const Tensor& w, float eps, bool one_centered,
                Tensor& out) override {
    cpu::rms_norm(x, w, eps, one_centered, out);
  }
  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                    bool one_centered, Tensor& out) override {
    cpu::add_rms_norm(residual, x, w, eps, one_centered, out);
  }
  void add(Tensor& a, const Tensor& b) override { cpu::add(a, b); }
  void gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, float eps,
                      Tensor& out) override {
    cpu::gated_rms_norm(o, z, w, eps, out);
  }
  void rope(Tensor& x, const std::vector<int32_t>& positions, int32_t rotary_dim,
            float theta) override {
    cpu::rope(x, positions, rotary_dim, theta);
  }
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cpu::silu_mul(gate, up, out);
  }
  void sigmoid_mul(Tensor& x, const Tensor& gate) override { cpu::sigmoid_mul(x, gate); }

  void causal_conv1d(const Tensor& x, const Tensor& weight, const ForwardBatch& batch,
                     Tensor& conv_state, Tensor& out) override {
    cpu::causal_conv1d(x, weight, batch, conv_state, out);
  }
  void gdn_gates(const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias,
                 Tensor& g, Tensor& beta) override {
    cpu::gdn_gates(a, b, A_log, dt_bias, g, beta);
  }
  void gated_delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                        const Tensor& beta, const GdnDims& dims, const ForwardBatch& batch,
                        Tensor& recurrent_state, Tensor& out) override {
    cpu::gated_delta_rule(q, k, v, g, beta, dims, batch, recurrent_state, out);
  }

  void kv_write(const Tensor& k, const Tensor& v, const ForwardBatch& batch,
                KvCache& cache) override {
    cpu::kv_write(k, v, batch, cache);
  }
  void paged_attention(const Tensor& q, const KvCache& cache, const ForwardBatch& batch,
                       const AttentionParams& params, Tensor& out) override {
    cpu::paged_attention(q, cache, batch, params, out);
  }

  void moe_experts(const Tensor& x, const Tensor& router, const Tensor& gate_up,
                   const Tensor& down, int32_t top_k, Tensor& out) override {
    cpu::moe_experts(x, router, gate_up, down, top_k, out);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace bf
