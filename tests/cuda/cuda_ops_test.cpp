// Every CUDA op against the CPU reference (backend/cpu) on fresh random inputs, bf16-rounded
// on the host so both see the same values; device outputs are poisoned with NaN first.
// Tolerances (relative L2 error ‖gpu − cpu‖/‖cpu‖): bf16 outputs carry a rounding error of
// at most 2^-9 ≈ 0.2% per element (≈ 0.1% RMS), so 1e-2 for single ops and 2e-2 for ops
// that chain bf16 intermediates; f32 GDN states 5e-4 (TF32 products in the chunked kernel,
// different summation order; see delta_case). The worst element must also be within 8x the
// L2 bound relative to max |cpu|.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>

#include "backend/cuda/kernels.h"
#include "cuda_test_util.h"

namespace bf {
namespace {

using namespace bf::test;

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
    cpu_ = make_cpu_backend();
    gpu_ = make_cuda_backend();
  }
  Tensor host(const Tensor& d) { return gpu_->to_host(d); }
  void check_gdn_decode_fused();  // under the BLOCKFLASH_GDN_DECODE_SPLIT of the moment
  std::mt19937 rng_{std::random_device{}()};
  std::unique_ptr<Backend> cpu_, gpu_;
};

TEST_F(CudaOps, Embedding) {
  Tensor table = rand_bf16({300, 96}, rng_);
  std::vector<int32_t> ids = {5, 0, 299, 17, 17, 123};
  Tensor want = Tensor::empty({6, 96});
  cpu_->embedding(ids, table, want);
  Tensor got = poisoned(*gpu_, {6, 96});
  gpu_->embedding(ids, gpu_->upload(table), got);
  EXPECT_TRUE(close(host(got), want, 1e-6));
  EXPECT_THROW(gpu_->embedding({300}, gpu_->upload(table), got), Error);
}

TEST_F(CudaOps, Matmul) {
  // Under 8 outputs: the gemv (m <= 8, the MoE shared-expert gate) or the SIMT kernel.
  for (auto [m, n, k] : {std::tuple{1, 256, 128}, {7, 200, 96}, {64, 1024, 512}, {333, 77, 40},
                         {1, 1, 2048}, {3, 5, 256}, {12, 1, 64}}) {
    Tensor x = rand_bf16({m, k}, rng_), w = rand_bf16({n, k}, rng_, -0.1f, 0.1f);
    Tensor want = Tensor::empty({m, n});
    cpu_->matmul(x, w, want);
    Tensor got = poisoned(*gpu_, {m, n});
    gpu_->matmul(to_device(*gpu_, x), gpu_->upload(w), got);
    EXPECT_TRUE(close(host(got), want, 1e-2)) << m << "x" << n << "x" << k;
    Tensor got32 = poisoned(*gpu_, {m, n}, DType::kF32);
    gpu_->matmul(to_device(*gpu_, x), gpu_->upload(w), got32);
    EXPECT_TRUE(close(host(got32), want, 1e-3)) << "f32 out " << m << "x" << n << "x" << k;
  }
}

TEST_F(CudaOps, MatmulSkinnyGemv) {
  // Decode-sized GEMMs through the gemv kernel (pinned on), x in shared memory.
  setenv("BLOCKFLASH_GEMV", "always", 1);
  auto gpu = make_cuda_backend();
  unsetenv("BLOCKFLASH_GEMV");
  for (auto [m, n, k] : {std::tuple{1, 300, 512}, {3, 1024, 2048}, {8, 77, 64}, {5, 4096, 1024}}) {
    Tensor x = rand_bf16({m, k}, rng_), w = rand_bf16({n, k}, rng_, -0.1f, 0.1f);
    Tensor want = Tensor::empty({m, n});
    cpu_->matmul(x, w, want);
    Tensor got = poisoned(*gpu, {m, n});
    gpu->matmul(to_device(*gpu, x), gpu->upload(w), got);
    EXPECT_TRUE(close(gpu->to_host(got), want, 1e-2)) << m << "x" << n << "x" << k;
  }
}

TEST_F(CudaOps, MatmulSkinnyGemvEveryConfig) {
  // Each gemv configuration (rows per warp x column slices) pinned, on shapes that leave
  // partial row groups, partial slices and slices shorter than a warp's step.
  for (int config = 0; config < cuda::gemv_num_configs(); ++config) {
    setenv("BLOCKFLASH_GEMV", "always", 1);
    setenv("BLOCKFLASH_GEMV_CONFIG", std::to_string(config).c_str(), 1);
    setenv("BLOCKFLASH_GEMV_GATED", "1", 1);
    auto gpu = make_cuda_backend();
    unsetenv("BLOCKFLASH_GEMV");
    unsetenv("BLOCKFLASH_GEMV_CONFIG");
    unsetenv("BLOCKFLASH_GEMV_GATED");
    for (auto [m, n, k] : {std::tuple{1, 300, 520}, {2, 77, 2048}, {3, 1000, 64}, {5, 48, 5120},
                           {8, 129, 2056}, {1, 9, 4096}}) {
      Tensor x = rand_bf16({m, k}, rng_), w = rand_bf16({n, k}, rng_, -0.1f, 0.1f);
      Tensor want = Tensor::empty({m, n});
      cpu_->matmul(x, w, want);
      Tensor got = poisoned(*gpu, {m, n});
      gpu->matmul(to_device(*gpu, x), gpu->upload(w), got);
      EXPECT_TRUE(close(gpu->to_host(got), want, 1e-2))
          << "config " << config << ": " << m << "x" << n << "x" << k;
      Tensor got32 = poisoned(*gpu, {m, n}, DType::kF32);
      gpu->matmul(to_device(*gpu, x), gpu->upload(w), got32);
      EXPECT_TRUE(close(gpu->to_host(got32), want, 1e-3))
          << "f32 out, config " << config << ": " << m << "x" << n << "x" << k;
      // The gated form (SwiGLU activation folded into the gemv's x): its first call runs
      // silu_mul_packed + matmul, the shape's gemv choice exists after the matmul above.
      Tensor gu = rand_bf16({m, 2 * k}, rng_, -3, 3);
      Tensor want_gated = Tensor::empty({m, n});
      cpu_->swiglu_matmul(gu, w, want_gated);
      Tensor got_gated = poisoned(*gpu, {m, n});
      gpu->swiglu_matmul(to_device(*gpu, gu), gpu->upload(w), got_gated);
      EXPECT_TRUE(close(gpu->to_host(got_gated), want_gated, 1e-2))
          << "gated, config " << config << ": " << m << "x" << n << "x" << k;
    }
  }
}

TEST_F(CudaOps, MatmulSkinnyWgmmaEveryConfig) {
  // The tensor-core skinny GEMM (Hopper only) pinned on with each split configuration: row
  // counts on both token tiles (16, 32) and partial ones, n with a partial 64-row tile, k with
  // a partial 64-element chunk, splits that leave a short last one. Twice per shape: the
  // split counters must be re-armed by the launch before.
  if (!query_cuda_device(0).wgmma) GTEST_SKIP() << "no sm_90a device";
  for (int config = 0; config < cuda::skinny_wgmma_num_configs(); ++config) {
    setenv("BLOCKFLASH_SKINNY", "always", 1);
    setenv("BLOCKFLASH_SKINNY_CONFIG", std::to_string(config).c_str(), 1);
    auto gpu = make_cuda_backend();
    unsetenv("BLOCKFLASH_SKINNY");
    unsetenv("BLOCKFLASH_SKINNY_CONFIG");
    for (auto [m, n, k] : {std::tuple{16, 1024, 5120}, {9, 300, 520}, {1, 64, 64},
                           {32, 2048, 2056}, {17, 130, 4096}, {5, 1000, 1032}}) {
      Tensor x = rand_bf16({m, k}, rng_), w = rand_bf16({n, k}, rng_, -0.1f, 0.1f);
      Tensor want = Tensor::empty({m, n});
      cpu_->matmul(x, w, want);
      const Tensor dx = to_device(*gpu, x), dw = gpu->upload(w);
      for (int round = 0; round < 2; ++round) {
        Tensor got = poisoned(*gpu, {m, n});
        gpu->matmul(dx, dw, got);
        EXPECT_TRUE(close(gpu->to_host(got), want, 1e-2))
            << "config " << config << ", round " << round << ": " << m << "x" << n << "x" << k;
        Tensor got32 = poisoned(*gpu, {m, n}, DType::kF32);
        gpu->matmul(dx, dw, got32);
        EXPECT_TRUE(close(gpu->to_host(got32), want, 1e-3))
            << "f32 out, config " << config << ", round " << round << ": " << m << "x" << n
            << "x" << k;
      }
    }
  }
}

TEST_F(CudaOps, MatmulSkinnyWgmmaChainAndTimedChoice) {
  // Back-to-back skinny products (programmatic dependent launches: each one's weight loads
  // start early, its x must still be the previous product's finished output), and the timed
  // choice (gemv, skinny or cuBLASLt per shape) giving the same results.
  if (!query_cuda_device(0).wgmma) GTEST_SKIP() << "no sm_90a device";
  setenv("BLOCKFLASH_SKINNY", "always", 1);
  setenv("BLOCKFLASH_SKINNY_CONFIG", "3", 1);
  auto pinned = make_cuda_backend();
  unsetenv("BLOCKFLASH_SKINNY");
  unsetenv("BLOCKFLASH_SKINNY_CONFIG");
  auto timed = make_cuda_backend();
  const int m = 16, k = 2048;
  Tensor x = rand_bf16({m, k}, rng_);
  std::vector<Tensor> ws;
  for (int i = 0; i < 3; ++i) ws.push_back(rand_bf16({k, k}, rng_, -0.05f, 0.05f));
  Tensor want = host_copy(x);
  for (const Tensor& w : ws) {
    Tensor next = Tensor::empty({m, k});
    cpu_->matmul(want, w, next);
    for (int64_t i = 0; i < next.numel(); ++i) next.f32()[i] = round_bf16(next.f32()[i]);
    want = next;
  }
  for (Backend* gpu : {pinned.get(), timed.get()}) {
    std::vector<Tensor> dws;
    for (const Tensor& w : ws) dws.push_back(gpu->upload(w));
    for (int rep = 0; rep < 3; ++rep) {
      Tensor cur = to_device(*gpu, x);
      for (const Tensor& dw : dws) {
        Tensor next = poisoned(*gpu, {m, k});
        gpu->matmul(cur, dw, next);
        cur = next;
      }
      EXPECT_TRUE(close(gpu->to_host(cur), want, 2e-2)) << "rep " << rep;
    }
  }
}

TEST_F(CudaOps, MatmulGemvChain) {
  // Back-to-back gemvs (each launched as a programmatic dependent of the one before: its w
  // loads start early, x must still be the previous kernel's finished output): y = x W1ᵀ,
  // z = y W2ᵀ, u = z W3ᵀ, with nothing between the launches.
  setenv("BLOCKFLASH_GEMV", "always", 1);
  auto gpu = make_cuda_backend();
  unsetenv("BLOCKFLASH_GEMV");
  const int k = 4096;
  Tensor x = rand_bf16({1, k}, rng_), w1 = rand_bf16({k, k}, rng_, -0.05f, 0.05f);
  Tensor w2 = rand_bf16({k, k}, rng_, -0.05f, 0.05f), w3 = rand_bf16({k, k}, rng_, -0.05f, 0.05f);
  Tensor dw1 = gpu->upload(w1), dw2 = gpu->upload(w2), dw3 = gpu->upload(w3);
  for (int rep = 0; rep < 3; ++rep) {
    Tensor y = poisoned(*gpu, {1, k}), z = poisoned(*gpu, {1, k}), u = poisoned(*gpu, {1, k});
    Tensor dx = to_device(*gpu, x);
    gpu->matmul(dx, dw1, y);
    gpu->matmul(y, dw2, z);
    gpu->matmul(z, dw3, u);
    Tensor y_cpu = Tensor::empty({1, k}), z_cpu = Tensor::empty({1, k}), u_cpu = Tensor::empty({1, k});
    cpu_->matmul(x, w1, y_cpu);
    cpu_->matmul(y_cpu, w2, z_cpu);
    cpu_->matmul(z_cpu, w3, u_cpu);
    EXPECT_TRUE(close(gpu->to_host(u), u_cpu, 3e-2)) << "rep " << rep;
  }
}

TEST_F(CudaOps, Norms) {
  // 320 / 5120 / 16392: the bf16 vector kernel with 1, 1 and 3 chunks per thread (16392 / 8 =
  // 2049 chunks); 324 (not a multiple of 8): the generic kernel; one row: the decode shape.
  for (auto [rows, dim] : {std::pair{37, 320}, {1, 5120}, {3, 5120}, {2, 16392}, {5, 324}}) {
  SCOPED_TRACE(testing::Message() << rows << " rows x " << dim);
  Tensor x = rand_bf16({rows, dim}, rng_, -3, 3), w = rand_bf16({dim}, rng_);
  for (bool one : {false, true}) {
    Tensor want = Tensor::empty({rows, dim});
    cpu_->rms_norm(x, w, 1e-6f, one, want);
    Tensor got = poisoned(*gpu_, {rows, dim});
    gpu_->rms_norm(to_device(*gpu_, x), gpu_->upload(w), 1e-6f, one, got);
    EXPECT_TRUE(close(host(got), want, 1e-2)) << "one_centered " << one;

    Tensor res = rand_bf16({rows, dim}, rng_, -3, 3);
    Tensor res_cpu = host_copy(res), want2 = Tensor::empty({rows, dim});
    cpu_->add_rms_norm(res_cpu, x, w, 1e-6f, one, want2);
    Tensor res_gpu = to_device(*gpu_, res), got2 = poisoned(*gpu_, {rows, dim});
    gpu_->add_rms_norm(res_gpu, to_device(*gpu_, x), gpu_->upload(w), 1e-6f, one, got2);
    EXPECT_TRUE(close(host(res_gpu), res_cpu, 1e-2));
    EXPECT_TRUE(close(host(got2), want2, 1e-2));
    // x aliasing out (the model's block_out).
    Tensor res_gpu3 = to_device(*gpu_, res), x3 = to_device(*gpu_, x);
    gpu_->add_rms_norm(res_gpu3, x3, gpu_->upload(w), 1e-6f, one, x3);
    EXPECT_TRUE(close(host(x3), want2, 1e-2));
  }
  }
  const int rows = 37;
  Tensor z = rand_bf16({rows * 4, 80}, rng_, -3, 3), o = rand_bf16({rows * 4, 80}, rng_);
  Tensor gw = rand_bf16({80}, rng_);
  Tensor want = Tensor::empty({rows * 4, 80});
  cpu_->gated_rms_norm(o, z, gw, 1e-6f, want);
  Tensor got = poisoned(*gpu_, {rows * 4, 80});
  gpu_->gated_rms_norm(to_device(*gpu_, o), to_device(*gpu_, z), gpu_->upload(gw), 1e-6f, got);
  EXPECT_TRUE(close(host(got), want, 1e-2));
}

TEST_F(CudaOps, RopeAndElementwise) {
  const int T = 9, heads = 5, hd = 128;
  Tensor x = rand_bf16({T, heads, hd}, rng_);
  std::vector<int32_t> pos = {0, 1, 2, 100, 4095, 7, 65000, 12, 3};
  for (int rot : {32, 64, 128}) {
    Tensor want = host_copy(x);
    cpu_->rope(want, pos, rot, 1e7f);
    Tensor got = to_device(*gpu_, x);
    gpu_->rope(got, pos, rot, 1e7f);
    EXPECT_TRUE(close(host(got), want, 1e-2)) << "rotary_dim " << rot;
  }
  Tensor a = rand_bf16({31, 65}, rng_, -4, 4), b = rand_bf16({31, 65}, rng_, -4, 4);
  Tensor want = Tensor::empty({31, 65});
  cpu_->silu_mul(a, b, want);
  Tensor got = poisoned(*gpu_, {31, 65});
  gpu_->silu_mul(to_device(*gpu_, a), to_device(*gpu_, b), got);
  EXPECT_TRUE(close(host(got), want, 1e-2));
  // The fused gate|up layout: [31, 2 * 65] -> [31, 65].
  Tensor gu = rand_bf16({31, 130}, rng_, -4, 4);
  Tensor want_packed = Tensor::empty({31, 65});
  cpu_->silu_mul_packed(gu, want_packed);
  Tensor got_packed = poisoned(*gpu_, {31, 65});
  gpu_->silu_mul_packed(to_device(*gpu_, gu), got_packed);
  EXPECT_TRUE(close(host(got_packed), want_packed, 1e-2));
  Tensor sm = host_copy(a);
  cpu_->sigmoid_mul(sm, b);
  Tensor gsm = to_device(*gpu_, a);
  gpu_->sigmoid_mul(gsm, to_device(*gpu_, b));
  EXPECT_TRUE(close(host(gsm), sm, 1e-2));
  Tensor ad = host_copy(a);
  cpu_->add(ad, b);
  Tensor gad = to_device(*gpu_, a);
  gpu_->add(gad, to_device(*gpu_, b));
  EXPECT_TRUE(close(host(gad), ad, 1e-2));
  Tensor sl = Tensor::empty({31, 20});
  cpu_->slice_columns(a, 13, sl);
  Tensor gsl = poisoned(*gpu_, {31, 20});
  gpu_->slice_columns(to_device(*gpu_, a), 13, gsl);
  EXPECT_TRUE(close(host(gsl), sl, 1e-6));
  // Three consecutive column ranges in one launch (widths 7, 30, 11 of 65), each against the
  // CPU's slice at its offset.
  std::vector<Tensor> want_parts, got_parts;
  for (int64_t w : {7, 30, 11}) {
    want_parts.push_back(Tensor::empty({31, w}));
    got_parts.push_back(poisoned(*gpu_, {31, w}));
  }
  cpu_->split_columns(a, want_parts);
  gpu_->split_columns(to_device(*gpu_, a), got_parts);
  int64_t part_begin = 0;
  for (size_t i = 0; i < got_parts.size(); ++i) {
    Tensor ref = Tensor::empty({31, want_parts[i].dim(1)});
    cpu_->slice_columns(a, part_begin, ref);
    part_begin += ref.dim(1);
    EXPECT_TRUE(close(want_parts[i], ref, 0.0)) << "part " << i;
    EXPECT_TRUE(close(host(got_parts[i]), ref, 1e-6)) << "part " << i;
  }
  Tensor gate = rand_bf16({31, 1}, rng_, -3, 3), sc = host_copy(a);
  cpu_->sigmoid_scale_rows(sc, gate);
  Tensor gsc = to_device(*gpu_, a);
  gpu_->sigmoid_scale_rows(gsc, to_device(*gpu_, gate));
  EXPECT_TRUE(close(host(gsc), sc, 1e-2));
}

// A batch of sequences with their own state slots / shuffled blocks.
struct Spec {
  int32_t query_len, num_computed, slot;
};
ForwardBatch make_batch(const std::vector<Spec>& specs, int32_t block_size, int32_t num_blocks,
                        std::mt19937& rng) {
  ForwardBatch b;
  std::vector<int32_t> blocks(num_blocks);
  std::iota(blocks.begin(), blocks.end(), 0);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  size_t next = 0;
  for (const Spec& s : specs) {
    BatchSequence seq;
    seq.query_start = b.num_tokens();
    seq.query_len = s.query_len;
    seq.num_computed = s.num_computed;
    seq.state_slot = s.slot;
    const int32_t need = (s.num_computed + s.query_len + block_size - 1) / block_size;
    for (int32_t i = 0; i < need; ++i) seq.block_table.push_back(blocks.at(next++));
    for (int32_t i = 0; i < s.query_len; ++i) {
      const int32_t p = s.num_computed + i;
      b.token_ids.push_back(1);
      b.positions.push_back(p);
      b.slot_mapping.push_back(seq.block_table[p / block_size] * block_size + p % block_size);
    }
    b.seqs.push_back(seq);
  }
  return b;
}

TEST_F(CudaOps, CausalConv1dAndGates) {
  const int conv_dim = 300, kernel = 4, slots = 6;
  for (bool verify : {false, true}) {
    std::vector<Spec> specs = verify ? std::vector<Spec>{{4, 10, 1}, {1, 3, 4}, {3, 9, 2}}
                                     : std::vector<Spec>{{70, 0, 0}, {1, 5, 3}, {9, 20, 5}, {2, 0, 1}};
    ForwardBatch batch = make_batch(specs, 16, 64, rng_);
    if (verify) {  // snapshot slots, including the sequence's own slot
      batch.seqs[0].snapshot_slots = {0, 1, 3, 5};
      batch.seqs[1].snapshot_slots = {4};
    }
    const int T = batch.num_tokens();
    Tensor x = rand_bf16({T, conv_dim}, rng_, -2, 2), w = rand_bf16({conv_dim, kernel}, rng_);
    Tensor state = rand_bf16({slots, conv_dim, kernel - 1}, rng_, -2, 2);
    Tensor cpu_state = host_copy(state), want = Tensor::empty({T, conv_dim});
    cpu_->causal_conv1d(x, w, batch, cpu_state, want);
    Tensor gpu_state = to_device(*gpu_, state, DType::kF32), got = poisoned(*gpu_, {T, conv_dim});
    gpu_->causal_conv1d(to_device(*gpu_, x), gpu_->upload(w), batch, gpu_state, got);
    EXPECT_TRUE(close(host(got), want, 1e-2)) << "verify " << verify;
    EXPECT_TRUE(close(host(gpu_state), cpu_state, 1e-6)) << "verify " << verify;
  }
  Tensor a = rand_bf16({13, 8}, rng_, -5, 5), b = rand_bf16({13, 8}, rng_, -5, 5);
  Tensor A = rand_bf16({8}, rng_, -2, 2), dtb = rand_bf16({8}, rng_);
  Tensor g = Tensor::empty({13, 8}), beta = Tensor::empty({13, 8});
  cpu_->gdn_gates(a, b, A, dtb, g, beta);
  for (DType gdt : {DType::kBF16, DType::kF32}) {
    Tensor gg = poisoned(*gpu_, {13, 8}, gdt), gb = poisoned(*gpu_, {13, 8}, gdt);
    gpu_->gdn_gates(to_device(*gpu_, a), to_device(*gpu_, b), gpu_->upload(A), gpu_->upload(dtb),
                    gg, gb);
    EXPECT_TRUE(close(host(gg), g, 1e-2));
    EXPECT_TRUE(close(host(gb), beta, 1e-2));
  }
}

// One gated_delta_rule call on `specs` against the CPU reference, inputs and outputs in `dt`
// on the device. Tolerances: bf16 outputs 1e-2 (bf16 output rounding alone is ~1.7e-3);
// f32 states 5e-4 (the chunked kernel's state products take TF32 operands, 2^-11 rounding,
// and the two forms sum in different orders; measured <= 9e-5 on the H200); in f32 mode
// (3xTF32, f32 arithmetic throughout) 1e-5 for both (measured <= 1.1e-6).
void delta_case(Backend& cpu, Backend& gpu, std::mt19937& rng, GdnDims dims,
                std::vector<Spec> specs, bool verify, DType dt = DType::kBF16) {
  const int slots = 12;
  ForwardBatch batch = make_batch(specs, 16, 256, rng);
  if (verify) {
    batch.seqs[0].snapshot_slots.clear();
    for (int i = 0; i < batch.seqs[0].query_len; ++i)
      batch.seqs[0].snapshot_slots.push_back(i == 0 ? batch.seqs[0].state_slot : 4 + i);
  }
  const int T = batch.num_tokens(), hk = dims.num_k_heads, hv = dims.num_v_heads;
  const int dk = dims.k_head_dim, dv = dims.v_head_dim;
  Tensor q = rand_bf16({T, hk, dk}, rng), k = rand_bf16({T, hk, dk}, rng);
  Tensor v = rand_bf16({T, hv, dv}, rng);
  // Realistic gates: g = -exp(A) softplus(.) in about [-2, 0), beta in (0, 1).
  Tensor g = rand_bf16({T, hv}, rng, -2.0f, -0.01f), beta = rand_bf16({T, hv}, rng, 0.05f, 0.95f);
  Tensor state = rand_bf16({slots, hv, dk, dv}, rng, -0.5f, 0.5f);
  Tensor cpu_state = host_copy(state), want = Tensor::empty({T, hv, dv});
  cpu.gated_delta_rule(q, k, v, g, beta, dims, batch, cpu_state, want);
  Tensor gpu_state = to_device(gpu, state, DType::kF32), got = poisoned(gpu, {T, hv, dv}, dt);
  gpu.gated_delta_rule(to_device(gpu, q, dt), to_device(gpu, k, dt), to_device(gpu, v, dt),
                       to_device(gpu, g, dt), to_device(gpu, beta, dt), dims, batch, gpu_state,
                       got);
  const bool f32 = dt == DType::kF32;
  std::string what = "dk " + std::to_string(dk) + " dv " + std::to_string(dv) + " Hk " +
                     std::to_string(hk) + " Hv " + std::to_string(hv) + " verify " +
                     std::to_string(verify) + (f32 ? " f32" : " bf16");
  const ::testing::AssertionResult out_ok = close(gpu.to_host(got), want, f32 ? 1e-5 : 1e-2);
  const ::testing::AssertionResult state_ok =
      close(gpu.to_host(gpu_state), cpu_state, f32 ? 1e-5 : 5e-4);
  EXPECT_TRUE(out_ok) << "out " << what;
  EXPECT_TRUE(state_ok) << "state " << what;
  std::printf("gdn %s: out %s; state %s\n", what.c_str(), out_ok.message(), state_ok.message());
}

TEST_F(CudaOps, GatedDeltaRule) {
  for (GdnDims dims : {GdnDims{2, 4, 16, 32}, GdnDims{4, 8, 128, 128}, GdnDims{2, 6, 64, 64}}) {
    // Prefill (chunked on the CPU, several chunks, a short last one), continuing prefill from
    // a state, decode tokens.
    delta_case(*cpu_, *gpu_, rng_, dims, {{150, 0, 0}, {1, 7, 1}, {65, 30, 2}, {1, 0, 3}}, false);
    // Verify: snapshots after each of 1+K tokens, the first into the sequence's own slot.
    delta_case(*cpu_, *gpu_, rng_, dims, {{5, 40, 1}, {1, 9, 2}}, true);
  }
}

// The fused Gated DeltaNet decode (conv1d + gates + delta rule + gated RMSNorm from the fused
// in_proj row) against the CPU's four ops: 3, 2, 1, 4 and 8 value heads per key head, conv
// kernels 4, 3 and 8, sequences with and without a state; states compared too.
// Batches with a multi-token sequence or verify snapshots are not its (undefined result,
// nothing written).
// Each case runs with 1, 2 and 4 blocks per value head (BLOCKFLASH_GDN_DECODE_SPLIT), the
// automatic choice (4 for these small grids, where the clusters fit) and the default (1).
TEST_F(CudaOps, GatedDeltaNetDecodeFused) {
  for (const char* split : {"1", "2", "4", "auto", ""}) {
    SCOPED_TRACE(testing::Message() << "split '" << split << "'");
    if (*split != 0)
      setenv("BLOCKFLASH_GDN_DECODE_SPLIT", split, 1);
    else
      unsetenv("BLOCKFLASH_GDN_DECODE_SPLIT");
    check_gdn_decode_fused();
  }
  unsetenv("BLOCKFLASH_GDN_DECODE_SPLIT");
}

void CudaOps::check_gdn_decode_fused() {
  // A block (or a cluster of split blocks) per (sequence, value head); the q/k conv state is
  // written by the last block of each key head's group to count itself in, so every case after
  // the first also checks that the counters were left at zero (the 2-4-4 case runs twice).
  auto fused = make_cuda_backend();
  for (auto [hk, hv, K] :
       {std::tuple{2, 6, 4}, {2, 4, 4}, {4, 4, 4}, {1, 4, 3}, {1, 8, 8}, {2, 4, 4}}) {
    SCOPED_TRACE(testing::Message() << "hk " << hk << " hv " << hv << " kernel " << K);
    const int dk = 128, dv = 128, slots = 6;
    const int64_t key_dim = hk * dk, value_dim = hv * dv, conv_dim = 2 * key_dim + value_dim;
    GdnDims dims{.num_k_heads = hk, .num_v_heads = hv, .k_head_dim = dk, .v_head_dim = dv};
    ForwardBatch batch = make_batch({{1, 7, 0}, {1, 0, 1}, {1, 30, 4}, {1, 5, 3}}, 16, 64, rng_);
    const int64_t T = batch.num_tokens();
    Tensor projected = rand_bf16({T, conv_dim + value_dim + 2 * hv}, rng_, -2, 2);
    Tensor conv_w = rand_bf16({conv_dim, K}, rng_), norm_w = rand_bf16({dv}, rng_);
    Tensor A_log = rand_bf16({hv}, rng_, -1, 1), dt_bias = rand_bf16({hv}, rng_);
    Tensor conv_state = rand_bf16({slots, conv_dim, K - 1}, rng_, -2, 2);
    Tensor rec_state = rand_bf16({slots, hv, dk, dv}, rng_, -0.5f, 0.5f);

    // The CPU reference: the model's four ops on the column parts.
    auto part = [&](int64_t begin, int64_t width) {
      Tensor t = Tensor::empty({T, width});
      cpu_->slice_columns(projected, begin, t);
      return t;
    };
    Tensor mixed = part(0, conv_dim), z = part(conv_dim, value_dim);
    Tensor b = part(conv_dim + value_dim, hv), a = part(conv_dim + value_dim + hv, hv);
    Tensor cpu_conv = host_copy(conv_state), cpu_rec = host_copy(rec_state);
    Tensor conv_out = Tensor::empty({T, conv_dim});
    cpu_->causal_conv1d(mixed, conv_w, batch, cpu_conv, conv_out);
    Tensor g = Tensor::empty({T, hv}), beta = Tensor::empty({T, hv});
    cpu_->gdn_gates(a, b, A_log, dt_bias, g, beta);
    Tensor q = Tensor::empty({T, key_dim}), k = Tensor::empty({T, key_dim});
    Tensor v = Tensor::empty({T, value_dim});
    cpu_->slice_columns(conv_out, 0, q);
    cpu_->slice_columns(conv_out, key_dim, k);
    cpu_->slice_columns(conv_out, 2 * key_dim, v);
    Tensor core = Tensor::empty({T, hv, dv});
    cpu_->gated_delta_rule(q.reshape({T, hk, dk}), k.reshape({T, hk, dk}),
                           v.reshape({T, hv, dv}), g, beta, dims, batch, cpu_rec, core);
    Tensor want = Tensor::empty({T * hv, dv});
    cpu_->gated_rms_norm(core.reshape({T * hv, dv}), z.reshape({T * hv, dv}), norm_w, 1e-6f,
                         want);

    Tensor gpu_conv = to_device(*gpu_, conv_state, DType::kF32);
    Tensor gpu_rec = to_device(*gpu_, rec_state, DType::kF32);
    Tensor got = fused->gated_deltanet_decode(
        to_device(*gpu_, projected), gpu_->upload(conv_w), gpu_->upload(A_log),
        gpu_->upload(dt_bias), gpu_->upload(norm_w), 1e-6f, dims, batch, gpu_conv, gpu_rec);
    ASSERT_TRUE(got.defined());
    EXPECT_TRUE(close(host(got), want.reshape({T, value_dim}), 2e-2));
    EXPECT_TRUE(close(host(gpu_conv), cpu_conv, 1e-6));
    EXPECT_TRUE(close(host(gpu_rec), cpu_rec, 5e-4));

    // Not its batches: a two-token sequence; verify snapshots.
    ForwardBatch prefill = make_batch({{2, 3, 0}, {1, 5, 1}}, 16, 64, rng_);
    Tensor proj2 = to_device(*gpu_, rand_bf16({3, conv_dim + value_dim + 2 * hv}, rng_));
    EXPECT_FALSE(fused
                     ->gated_deltanet_decode(proj2, gpu_->upload(conv_w), gpu_->upload(A_log),
                                             gpu_->upload(dt_bias), gpu_->upload(norm_w), 1e-6f,
                                             dims, prefill, gpu_conv, gpu_rec)
                     .defined());
    batch.seqs[0].snapshot_slots = {5};
    EXPECT_FALSE(fused
                     ->gated_deltanet_decode(to_device(*gpu_, projected), gpu_->upload(conv_w),
                                             gpu_->upload(A_log), gpu_->upload(dt_bias),
                                             gpu_->upload(norm_w), 1e-6f, dims, batch, gpu_conv,
                                             gpu_rec)
                     .defined());
  }
}

// The chunked kernel (gdn-chunked) for every sequence of >= 2 tokens (forced), and the
// automatic choice that mixes it with the recurrent kernel in one batch (>= 32 tokens
// chunked, the 7- and 1-token sequences recurrent): lengths around the
// 32-token chunk and the 64-token CPU chunk, varlen batches with and without initial states,
// GQA (Hv = 2 and 3 Hk), bf16 and f32 inputs, and verify blocks next to prefill.
TEST_F(CudaOps, GatedDeltaRuleChunked) {
  auto chunked = make_cuda_backend(CudaBackendOptions{.attention_backend = "gdn-chunked"});
  const std::vector<Spec> fresh = {{63, 0, 0}, {1, 0, 1}, {65, 0, 2}, {150, 0, 3}, {300, 0, 4}, {2, 0, 5}};
  const std::vector<Spec> with_state = {{300, 17, 6}, {65, 64, 7}, {1, 5, 8}, {33, 1, 9}, {150, 9, 10}};
  const std::vector<Spec> mixed = {{40, 10, 3}, {7, 3, 2}, {129, 0, 0}, {1, 20, 1}};
  for (GdnDims dims : {GdnDims{4, 8, 128, 128}, GdnDims{2, 6, 64, 64}, GdnDims{2, 6, 32, 32},
                       GdnDims{2, 4, 16, 32}, GdnDims{1, 3, 128, 96}}) {
    for (DType dt : {DType::kBF16, DType::kF32}) {
      delta_case(*cpu_, *chunked, rng_, dims, fresh, false, dt);
      delta_case(*cpu_, *chunked, rng_, dims, with_state, false, dt);
      delta_case(*cpu_, *gpu_, rng_, dims, mixed, false, dt);
    }
    // A verify block (recurrent, snapshots) in the same batch as chunked prefill.
    delta_case(*cpu_, *chunked, rng_, dims, {{4, 40, 1}, {70, 0, 0}, {1, 9, 2}}, true);
  }
  delta_case(*cpu_, *chunked, rng_, GdnDims{16, 48, 128, 128}, {{200, 0, 0}, {97, 31, 1}}, false);
}

struct AttnCase {
  int hq, hkv, hd;
  std::vector<Spec> specs;
  bool causal = true;
  int window = 0;
  // Also check paged_attention_gated where rows go to the flash kernels (the gate then applied
  // by separate ops); batches of decode-sized rows (where it is folded) are always checked.
  bool gated_with_flash_rows = false;
};

void attention_case(Backend& cpu, Backend& gpu, std::mt19937& rng, const AttnCase& c) {
  const int block_size = 16, num_blocks = 0;
  int blocks_needed = 0;
  for (const Spec& s : c.specs) blocks_needed += (s.num_computed + s.query_len + 15) / 16;
  const int nb = std::max(num_blocks, blocks_needed + 5);
  ForwardBatch batch = make_batch(c.specs, block_size, nb, rng);
  const int T = batch.num_tokens();
  Tensor kc = rand_bf16({nb, block_size, c.hkv, c.hd}, rng, -2, 2);
  Tensor vc = rand_bf16({nb, block_size, c.hkv, c.hd}, rng);
  Tensor q = rand_bf16({T, c.hq, c.hd}, rng, -2, 2);
  Tensor k = rand_bf16({T, c.hkv, c.hd}, rng, -2, 2), v = rand_bf16({T, c.hkv, c.hd}, rng);
  KvCache cpu_cache{host_copy(kc), host_copy(vc)};
  KvCache gpu_cache{to_device(gpu, kc), to_device(gpu, vc)};
  cpu.kv_write(k, v, batch, cpu_cache);
  gpu.kv_write(to_device(gpu, k), to_device(gpu, v), batch, gpu_cache);
  EXPECT_TRUE(close(gpu.to_host(gpu_cache.k), cpu_cache.k, 1e-6));
  EXPECT_TRUE(close(gpu.to_host(gpu_cache.v), cpu_cache.v, 1e-6));
  AttentionParams p{.scale = 1.0f / std::sqrt(float(c.hd)), .causal = c.causal,
                    .sliding_window = c.window};
  Tensor want = Tensor::empty({T, c.hq, c.hd});
  cpu.paged_attention(q, cpu_cache, batch, p, want);
  Tensor got = poisoned(gpu, {T, c.hq, c.hd});
  gpu.paged_attention(to_device(gpu, q), gpu_cache, batch, p, got);
  EXPECT_TRUE(close(gpu.to_host(got), want, 1e-2))
      << "hq " << c.hq << " hkv " << c.hkv << " hd " << c.hd << " causal " << c.causal
      << " window " << c.window << " T " << T;

  // The output-gated form (the gate in columns [hd, 2 hd) of per-head [q | gate] rows): against
  // the CPU, and bit for bit against the GPU's own attention followed by slice + sigmoid_mul
  // (the fold into the attention's store must not change the rounding). Not on every prefill
  // case: the flash rows' path is the separate ops, and racecheck time adds up.
  bool flash_rows = false;
  for (const Spec& s : c.specs) flash_rows = flash_rows || s.query_len >= 16;
  if (flash_rows && !c.gated_with_flash_rows) return;
  Tensor gate_rows = rand_bf16({T * c.hq, 2 * c.hd}, rng, -4, 4);
  Tensor want_gated = Tensor::empty({T, c.hq, c.hd});
  cpu.paged_attention_gated(q, cpu_cache, batch, p, gate_rows, c.hd, want_gated);
  Tensor d_gate_rows = to_device(gpu, gate_rows);
  Tensor got_gated = poisoned(gpu, {T, c.hq, c.hd});
  gpu.paged_attention_gated(to_device(gpu, q), gpu_cache, batch, p, d_gate_rows, c.hd, got_gated);
  Tensor d_gate = poisoned(gpu, {T * c.hq, c.hd});
  gpu.slice_columns(d_gate_rows, c.hd, d_gate);
  Tensor unfused = poisoned(gpu, {T, c.hq, c.hd});
  gpu.paged_attention(to_device(gpu, q), gpu_cache, batch, p, unfused);
  Tensor unfused_rows = unfused.reshape({T * c.hq, c.hd});
  gpu.sigmoid_mul(unfused_rows, d_gate);
  EXPECT_TRUE(close(gpu.to_host(got_gated), want_gated, 1e-2)) << "gated, T " << T;
  EXPECT_TRUE(close(gpu.to_host(got_gated), gpu.to_host(unfused), 0.0)) << "gated vs unfused";
}

// prepare_attention_inputs' operands for T tokens: a random cache of nb blocks, [q | gate]
// rows, k and v rows, the two norms' weights.
struct PrepInputs {
  Tensor kc, vc, qg, k, v, qw, kw;
};
PrepInputs random_prep_inputs(int T, int nb, int block_size, int hq, int hkv, int hd,
                              std::mt19937& rng) {
  return PrepInputs{rand_bf16({nb, block_size, hkv, hd}, rng, -2, 2),
                    rand_bf16({nb, block_size, hkv, hd}, rng),
                    rand_bf16({T * hq, 2 * hd}, rng, -3, 3),
                    rand_bf16({T * hkv, hd}, rng, -3, 3),
                    rand_bf16({T, hkv, hd}, rng),
                    rand_bf16({hd}, rng, -0.5, 0.5),
                    rand_bf16({hd}, rng, -0.5, 0.5)};
}

// The fused q/k norm + partial RoPE + cache write against the CPU's composition of the
// unfused ops; one token maps to slot -1 (a padding row) and must leave the cache alone.
TEST_F(CudaOps, PrepareAttentionInputs) {
  struct Case { int hq, hkv, hd, rotary; };
  for (const Case c : {Case{24, 4, 256, 64}, Case{32, 8, 128, 32}, Case{4, 2, 64, 64},
                       Case{2, 1, 32, 16}}) {
    SCOPED_TRACE(testing::Message() << "hq " << c.hq << " hkv " << c.hkv << " hd " << c.hd);
    const int block_size = 16, nb = 12;
    ForwardBatch batch = make_batch({{5, 30, 0}, {1, 70, 1}, {3, 0, 2}}, block_size, nb, rng_);
    batch.slot_mapping[6] = -1;
    batch.positions[2] = 65000;  // a large angle
    const int T = batch.num_tokens();
    const auto [kc, vc, qg, k, v, qw, kw] = random_prep_inputs(T, nb, block_size, c.hq, c.hkv, c.hd, rng_);
    KvCache cpu_cache{host_copy(kc), host_copy(vc)};
    KvCache gpu_cache{to_device(*gpu_, kc), to_device(*gpu_, vc)};
    Tensor want = Tensor::empty({T, c.hq, c.hd});
    cpu_->prepare_attention_inputs(qg, k, v, qw, kw, 1e-6f, c.rotary, 1e7f, batch, cpu_cache,
                                   want);
    Tensor got = poisoned(*gpu_, {T, c.hq, c.hd});
    gpu_->prepare_attention_inputs(to_device(*gpu_, qg), to_device(*gpu_, k),
                                   to_device(*gpu_, v), gpu_->upload(qw), gpu_->upload(kw), 1e-6f,
                                   c.rotary, 1e7f, batch, gpu_cache, got);
    EXPECT_TRUE(close(host(got), want, 1e-2));
    EXPECT_TRUE(close(gpu_->to_host(gpu_cache.k), cpu_cache.k, 1e-2));
    EXPECT_TRUE(close(gpu_->to_host(gpu_cache.v), cpu_cache.v, 1e-6));
  }
}

// The preparation folded into decode attention (fused_gated_attention) against the CPU's
// prepare_attention_inputs + paged_attention_gated and against the GPU's own two ops: GQA 8
// (35B-A3B), 6 (27B), 4 and 1, head dims 256 / 128 / 64 / 32, contexts from none (the own key
// alone) to past the split-KV threshold, one position far out (a large angle). The cache must
// hold the same new K/V afterwards. Batches it cannot take are declined untouched.
TEST_F(CudaOps, FusedGatedAttentionDecode) {
  setenv("BLOCKFLASH_ATTENTION_PREP_FOLD", "1", 1);  // off by default (cuda_backend.cpp)
  gpu_ = make_cuda_backend();
  unsetenv("BLOCKFLASH_ATTENTION_PREP_FOLD");
  struct Case { int hq, hkv, hd, rotary; };
  for (const Case c : {Case{16, 2, 256, 64}, Case{24, 4, 256, 64}, Case{8, 2, 128, 32},
                       Case{8, 8, 64, 32}, Case{4, 1, 32, 16}}) {
    for (const std::vector<Spec>& specs :
         {std::vector<Spec>{{1, 1023, 0}}, {{1, 0, 0}, {1, 15, 1}, {1, 16, 2}, {1, 17, 3}},
          {{1, 5000, 0}, {1, 1, 1}, {1, 300, 2}}}) {
      SCOPED_TRACE(testing::Message() << "hq " << c.hq << " hkv " << c.hkv << " hd " << c.hd
                                      << " seqs " << specs.size() << " first ctx "
                                      << specs[0].num_computed);
      const int block_size = 16;
      int nb = 4;
      for (const Spec& sp : specs) nb += (sp.num_computed + 1 + block_size - 1) / block_size;
      ForwardBatch batch = make_batch(specs, block_size, nb, rng_);
      if (specs.size() > 1) batch.positions[1] = 65000;  // a large angle
      const int T = batch.num_tokens();
      const auto [kc, vc, qg, k, v, qw, kw] =
          random_prep_inputs(T, nb, block_size, c.hq, c.hkv, c.hd, rng_);
      AttentionParams p{.scale = 1.0f / std::sqrt(float(c.hd)), .causal = true};

      KvCache cpu_cache{host_copy(kc), host_copy(vc)};
      Tensor cpu_q = Tensor::empty({T, c.hq, c.hd}), want = Tensor::empty({T, c.hq, c.hd});
      cpu_->prepare_attention_inputs(qg, k, v, qw, kw, 1e-6f, c.rotary, 1e7f, batch, cpu_cache,
                                     cpu_q);
      cpu_->paged_attention_gated(cpu_q, cpu_cache, batch, p, qg, c.hd, want);

      const Tensor d_qg = to_device(*gpu_, qg), d_k = to_device(*gpu_, k), d_v = to_device(*gpu_, v);
      const Tensor d_qw = gpu_->upload(qw), d_kw = gpu_->upload(kw);
      KvCache gpu_cache{to_device(*gpu_, kc), to_device(*gpu_, vc)};
      Tensor got = poisoned(*gpu_, {T, c.hq, c.hd});
      ASSERT_TRUE(gpu_->fused_gated_attention(d_qg, d_k, d_v, d_qw, d_kw, 1e-6f, c.rotary, 1e7f,
                                              batch, gpu_cache, p, got));
      EXPECT_TRUE(close(host(got), want, 1e-2));
      EXPECT_TRUE(close(gpu_->to_host(gpu_cache.k), cpu_cache.k, 1e-2));
      EXPECT_TRUE(close(gpu_->to_host(gpu_cache.v), cpu_cache.v, 1e-6));

      // The GPU's two ops on a fresh cache.
      KvCache two_cache{to_device(*gpu_, kc), to_device(*gpu_, vc)};
      Tensor q2 = poisoned(*gpu_, {T, c.hq, c.hd}), two = poisoned(*gpu_, {T, c.hq, c.hd});
      gpu_->prepare_attention_inputs(d_qg, d_k, d_v, d_qw, d_kw, 1e-6f, c.rotary, 1e7f, batch,
                                     two_cache, q2);
      gpu_->paged_attention_gated(q2, two_cache, batch, p, d_qg, c.hd, two);
      EXPECT_TRUE(close(host(got), host(two), 1e-2));
      EXPECT_TRUE(close(gpu_->to_host(gpu_cache.k), gpu_->to_host(two_cache.k), 1e-2));

      // Declined, nothing written: a sliding window; a two-token sequence.
      Tensor untouched = poisoned(*gpu_, {T, c.hq, c.hd});
      AttentionParams windowed = p;
      windowed.sliding_window = 8;
      EXPECT_FALSE(gpu_->fused_gated_attention(d_qg, d_k, d_v, d_qw, d_kw, 1e-6f, c.rotary, 1e7f,
                                               batch, gpu_cache, windowed, untouched));
      ForwardBatch longer = make_batch({{2, 5, 0}}, block_size, nb, rng_);
      Tensor two_rows = poisoned(*gpu_, {2, c.hq, c.hd});
      EXPECT_FALSE(gpu_->fused_gated_attention(
          to_device(*gpu_, rand_bf16({2 * c.hq, 2 * c.hd}, rng_)),
          to_device(*gpu_, rand_bf16({2 * c.hkv, c.hd}, rng_)),
          to_device(*gpu_, rand_bf16({2, c.hkv, c.hd}, rng_)), d_qw, d_kw, 1e-6f, c.rotary, 1e7f,
          longer, gpu_cache, p, two_rows));
      const Tensor after = host(untouched);
      EXPECT_TRUE(std::all_of(after.f32(), after.f32() + after.numel(),
                              [](float x) { return std::isnan(x); }));
    }
  }
  // More than 8 query heads per KV head: declined.
  ForwardBatch batch = make_batch({{1, 20, 0}}, 16, 4, rng_);
  KvCache cache{to_device(*gpu_, rand_bf16({4, 16, 1, 64}, rng_)),
                to_device(*gpu_, rand_bf16({4, 16, 1, 64}, rng_))};
  Tensor out = poisoned(*gpu_, {1, 16, 64});
  EXPECT_FALSE(gpu_->fused_gated_attention(
      to_device(*gpu_, rand_bf16({16, 128}, rng_)), to_device(*gpu_, rand_bf16({1, 64}, rng_)),
      to_device(*gpu_, rand_bf16({1, 1, 64}, rng_)), gpu_->upload(rand_bf16({64}, rng_)),
      gpu_->upload(rand_bf16({64}, rng_)), 1e-6f, 32, 1e7f, batch, cache,
      AttentionParams{.scale = 0.125f, .causal = true}, out));
}

// Prefill over cached context: tiles past the first (the flash kernel's 64- or 128-query
// tiles, diagonals shifted by the context), partial tiles, decode rows beside them.
// with_hd32 = false: only the head dims flash-mma has (for a backend forced to it).
void prefill_cases(Backend& cpu, Backend& gpu, std::mt19937& rng, bool with_hd32 = true) {
  for (int hd : {32, 64, 128, 256}) {
    if (hd == 32 && !with_hd32) continue;
    attention_case(cpu, gpu, rng, {8, 2, hd, {{100, 0, 0}, {37, 250, 1}, {1, 70, 2}}});
  }
  for (int hd : {64, 128, 256})
    attention_case(cpu, gpu, rng, {8, 2, hd, {{300, 70, 0}, {129, 0, 1}, {1, 40, 2}}});
  // A window that cuts inside the tiles.
  attention_case(cpu, gpu, rng, {8, 2, 128, {{300, 70, 0}}, true, 100});
  // head_dim 256: GQA 6 without context, a window inside the tiles, partial query tiles and kv
  // lengths off the 64-key tiles.
  attention_case(cpu, gpu, rng, {12, 2, 256, {{200, 0, 0}, {17, 3, 1}}});
  attention_case(cpu, gpu, rng, {8, 2, 256, {{300, 70, 0}, {45, 0, 1}}, true, 100});
}

// Verify blocks (1+K queries, causal inside the block) mixed with decodes.
void verify_window_cases(Backend& cpu, Backend& gpu, std::mt19937& rng) {
  attention_case(cpu, gpu, rng, {16, 2, 128, {{16, 700, 0}, {1, 900, 1}, {8, 33, 2}}, true, 0, true});
  // Non-causal (DFlash drafts), with GQA 4.
  attention_case(cpu, gpu, rng, {8, 2, 128, {{16, 300, 0}, {16, 5, 1}}, false});
  // Sliding window, causal and not, long enough that the window cuts.
  attention_case(cpu, gpu, rng, {8, 2, 128, {{40, 600, 0}, {1, 2000, 1}}, true, 128});
  attention_case(cpu, gpu, rng, {8, 8, 64, {{16, 600, 0}}, false, 64});
  attention_case(cpu, gpu, rng, {4, 1, 256, {{1, 5000, 0}}, true, 1000});
  // The same at head_dim 256 with flash-mma rows (>= 16 queries): verify blocks, non-causal,
  // windows causal and not.
  attention_case(cpu, gpu, rng, {8, 2, 256, {{16, 700, 0}, {1, 900, 1}, {24, 33, 2}}});
  attention_case(cpu, gpu, rng, {8, 2, 256, {{16, 300, 0}, {40, 5, 1}}, false});
  attention_case(cpu, gpu, rng, {8, 2, 256, {{40, 600, 0}, {1, 2000, 1}}, true, 128});
  attention_case(cpu, gpu, rng, {4, 2, 256, {{70, 600, 0}}, false, 64});
}

TEST_F(CudaOps, PagedAttentionPrefillWithContext) { prefill_cases(*cpu_, *gpu_, rng_); }

TEST_F(CudaOps, PagedAttentionDecodeLongContextSplitKv) {
  // Few rows x heads and long contexts: the split-KV path (partials + combine).
  for (int hd : {128, 256})
    attention_case(*cpu_, *gpu_, rng_, {8, 1, hd, {{1, 8000, 0}, {1, 3000, 1}, {1, 17, 2}}});
  attention_case(*cpu_, *gpu_, rng_, {4, 4, 64, {{1, 20000, 0}}});
  // GQA groups past one block's eight heads (24/2: a chunk of 8 and one of 4) and odd ones.
  attention_case(*cpu_, *gpu_, rng_, {24, 2, 128, {{1, 3000, 0}, {1, 40, 1}, {3, 70, 2}}});
  attention_case(*cpu_, *gpu_, rng_, {6, 2, 64, {{1, 5000, 0}, {2, 9, 1}}});
  // Contexts short enough for one split: the SIMT kernel stores (and gates) the output itself.
  attention_case(*cpu_, *gpu_, rng_, {16, 2, 256, {{1, 9, 0}, {2, 4, 1}}});
}

// The fused GDN decode's blocks per value head (host only): forced wins; else the grid keeps a
// block per SM.
TEST(GdnDecodeSplit, LargestSplitThatKeepsABlockPerSm) {
  EXPECT_EQ(cuda::gdn_decode_split(1, 32, 132), 4);   // 35B-A3B batch 1: 128 blocks
  EXPECT_EQ(cuda::gdn_decode_split(2, 32, 132), 2);   // batch 2: 128
  EXPECT_EQ(cuda::gdn_decode_split(3, 32, 132), 1);
  EXPECT_EQ(cuda::gdn_decode_split(1, 48, 132), 2);   // 27B batch 1: 96
  EXPECT_EQ(cuda::gdn_decode_split(1, 48, 188), 2);
  EXPECT_EQ(cuda::gdn_decode_split(1, 48, 192), 4);
  EXPECT_EQ(cuda::gdn_decode_split(64, 32, 132), 1);
  EXPECT_EQ(cuda::gdn_decode_split(64, 32, 132, 4), 4);
  EXPECT_EQ(cuda::gdn_decode_split(1, 32, 132, 1), 1);
}

// flash-wgmma's key splits (host only): whole tiles, every split reached, none for full grids.
TEST(FlashSplitLayout, WholeTilesCoverTheKeysWithNoEmptySplit) {
  for (int sms : {48, 132, 170}) {
    for (int64_t blocks : {1, 8, 24, 47, 100, 131, 132, 1000}) {
      for (int forced : {0, 1, 3, 7, 128}) {
        for (int len : {1, 63, 64, 65, 127, 128, 129, 1040, 4096, 100000}) {
          SCOPED_TRACE("sms " + std::to_string(sms) + " blocks " + std::to_string(blocks) +
                       " len " + std::to_string(len) + " forced " + std::to_string(forced));
          const cuda::SplitLayout l = cuda::flash_split_layout(blocks, sms, len, forced);
          ASSERT_GE(l.num_splits, 1);
          ASSERT_LE(l.num_splits, cuda::kDecodeMaxSplits);
          if (l.num_splits == 1) {
            EXPECT_EQ(l.split_len, 0);
            continue;
          }
          EXPECT_EQ(l.split_len % cuda::kFlashSplitTile, 0);
          EXPECT_GE(int64_t{l.num_splits} * l.split_len, len);        // every key in a split
          EXPECT_LT(int64_t{l.num_splits - 1} * l.split_len, len);    // the last one reached
          if (forced == 0) {
            EXPECT_LT(blocks, sms);                                   // only small grids split
            EXPECT_GE(l.split_len, 2 * cuda::kFlashSplitTile);        // two tiles or more each
          } else {
            EXPECT_LE(l.num_splits, forced);
          }
        }
      }
    }
  }
  // The 27B verify block on an H100: 24 blocks, 1040 keys -> 6 splits of 192 keys.
  const cuda::SplitLayout verify = cuda::flash_split_layout(24, 132, 1040);
  EXPECT_EQ(verify.num_splits, 6);
  EXPECT_EQ(verify.split_len, 192);
}

// The split-KV layout is host and device code (eager launches and graph replays); these are
// its invariants, checked on the host (no GPU needed).
TEST(DecodeSplitLayout, CoversTheContextAndFitsTheRecordedGrid) {
  for (int sms : {48, 132, 170}) {
    for (int64_t work : {1, 2, 3, 4, 5, 8, 9, 16, 64, 263, 264, 400}) {
      const int min_len = cuda::decode_min_split_len(work, sms, 0);
      EXPECT_EQ(min_len, work * 32 <= sms ? 16 : cuda::kDecodeMinSplitLen) << work << " " << sms;
      for (int forced : {0, 16, 32, 64}) {
        const int len_unit = forced > 0 ? forced : min_len;
        for (int len : {1, 15, 16, 17, 63, 64, 65, 100, 1000, 1024, 4096, 65536}) {
          SCOPED_TRACE("sms " + std::to_string(sms) + " work " + std::to_string(work) + " len " +
                       std::to_string(len) + " forced " + std::to_string(forced));
          const cuda::SplitLayout l = cuda::decode_split_layout(work, sms, len, forced);
          ASSERT_GE(l.num_splits, 1);
          ASSERT_LE(l.num_splits, cuda::kDecodeMaxSplits);
          if (l.num_splits > 1) {
            EXPECT_EQ(l.split_len % len_unit, 0);
            EXPECT_LT(static_cast<int64_t>(l.num_splits - 1) * l.split_len, len);  // none empty
            EXPECT_GE(static_cast<int64_t>(l.num_splits) * l.split_len, len);      // all covered
          }
          if (work >= 2 * sms) EXPECT_EQ(l.num_splits, 1);
          // A graph's grid is recorded for its longest possible context: every live length up
          // to that bound must fit in it.
          for (int bound : {len, 2 * len, 1 << 20})
            EXPECT_LE(l.num_splits, cuda::decode_max_splits(work, sms, bound, forced));
        }
      }
    }
  }
}

TEST_F(CudaOps, PagedAttentionVerifyNonCausalWindow) { verify_window_cases(*cpu_, *gpu_, rng_); }

TEST_F(CudaOps, PagedAttentionFlashTiles) {
  // flash-mma forced (on sm_90 the cases above run head_dim 256 on flash-wgmma), with each of
  // its pinned tile shapes: 64 queries (the shape sm_12x's 99 KB allows; head_dim 256 there
  // runs this) and 128 (where the device's shared memory allows).
  for (const char* tile : {"64", "128"}) {
    SCOPED_TRACE(std::string("flash-mma, BLOCKFLASH_FLASH_TILE=") + tile);
    setenv("BLOCKFLASH_FLASH_TILE", tile, 1);
    std::unique_ptr<Backend> gpu =
        make_cuda_backend(CudaBackendOptions{.attention_backend = "flash-mma"});
    unsetenv("BLOCKFLASH_FLASH_TILE");
    prefill_cases(*cpu_, *gpu, rng_, /*with_hd32=*/false);
    verify_window_cases(*cpu_, *gpu, rng_);
  }
}

TEST_F(CudaOps, PagedAttentionFlashKeySplits) {
  // flash-wgmma's key splits pinned: 1 (each item walks all its keys; the default splits the
  // small grids of the cases above), 3 and 7 (ranges that end inside a causal block, ranges
  // no row of a short sequence reaches), with simt split-KV rows in the same batches.
  for (const char* splits : {"1", "3", "7"}) {
    SCOPED_TRACE(std::string("BLOCKFLASH_FLASH_SPLITS=") + splits);
    setenv("BLOCKFLASH_FLASH_SPLITS", splits, 1);
    std::unique_ptr<Backend> gpu = make_cuda_backend();
    unsetenv("BLOCKFLASH_FLASH_SPLITS");
    verify_window_cases(*cpu_, *gpu, rng_);
    attention_case(*cpu_, *gpu, rng_, {12, 2, 256, {{200, 0, 0}, {17, 3, 1}}});
    attention_case(*cpu_, *gpu, rng_, {24, 4, 256, {{16, 1040, 0}, {16, 90, 1}, {1, 3000, 2}}});
  }
}

TEST_F(CudaOps, MoeExperts) {
  // Few tokens: the GEMV path; 64 or more: the grouped (sorted rows, per-expert GEMM) path.
  for (auto [T, E, k, H, I] : {std::tuple{5, 8, 2, 64, 32}, {40, 16, 4, 128, 96},
                               {1, 64, 8, 256, 64}, {300, 16, 4, 128, 96}, {64, 8, 2, 64, 32},
                               {3, 300, 8, 64, 32}}) {
    Tensor x = rand_bf16({T, H}, rng_), router = rand_bf16({E, H}, rng_);
    // Tied router logits (equal rows): both backends take the lower expert index first.
    for (int64_t e : {E - 1, E / 2})
      std::copy(router.f32() + 3 * H, router.f32() + 4 * H, router.f32() + e * H);
    Tensor gu = rand_bf16({E, 2 * I, H}, rng_, -0.2f, 0.2f), dn = rand_bf16({E, H, I}, rng_, -0.2f, 0.2f);
    Tensor want = Tensor::empty({T, H});
    cpu_->moe_experts(x, router, gu, dn, k, want);
    Tensor got = poisoned(*gpu_, {T, H});
    gpu_->moe_experts(to_device(*gpu_, x), gpu_->upload(router), gpu_->upload(gu), gpu_->upload(dn),
                      k, got);
    EXPECT_TRUE(close(host(got), want, 2e-2)) << T << " tokens, " << E << " experts, top " << k;
  }
}

// A CUDA backend that takes the fused MoE decode block for every batch up to its token limit.
std::unique_ptr<Backend> moe_fused_forced_backend() {
  setenv("BLOCKFLASH_MOE_FUSED", "1", 1);
  auto backend = make_cuda_backend();
  unsetenv("BLOCKFLASH_MOE_FUSED");
  return backend;
}

TEST_F(CudaOps, MoeBlockDecodeFused) {
  // The whole sparse block in the fused decode kernels against the CPU's separate ops: routed
  // experts, then the shared expert scaled by sigmoid(gate · x) and added. Is = 0: no shared
  // expert. Each case runs twice (the routing kernel's counter must be back at zero).
  // Forced on up to the kernels' token limit (by default only the smallest batches take it).
  auto fused = moe_fused_forced_backend();
  for (auto [T, E, k, H, I, Is] : {std::tuple{1, 64, 8, 256, 64, 64},
                                   {5, 16, 4, 128, 96, 32},
                                   {3, 300, 8, 64, 32, 48},
                                   {8, 8, 2, 64, 32, 0},
                                   {64, 16, 4, 128, 96, 96},
                                   {2, 256, 8, 512, 64, 128}}) {
    SCOPED_TRACE(testing::Message() << T << " tokens, " << E << " experts, top " << k << ", H " << H
                                    << ", I " << I << ", shared " << Is);
    Tensor x = rand_bf16({T, H}, rng_), router = rand_bf16({E, H}, rng_);
    for (int64_t e : {E - 1, E / 2})  // tied router logits: the lower expert index first
      std::copy(router.f32() + 3 * H, router.f32() + 4 * H, router.f32() + e * H);
    Tensor gu = rand_bf16({E, 2 * I, H}, rng_, -0.2f, 0.2f),
           dn = rand_bf16({E, H, I}, rng_, -0.2f, 0.2f);
    Tensor want = Tensor::empty({T, H});
    cpu_->moe_experts(x, router, gu, dn, k, want);
    Tensor sgu, sdn, sg;
    if (Is > 0) {
      sgu = rand_bf16({2 * Is, H}, rng_, -0.2f, 0.2f);
      sdn = rand_bf16({H, Is}, rng_, -0.2f, 0.2f);
      sg = rand_bf16({1, H}, rng_);
      Tensor gate_up = Tensor::empty({T, 2 * Is}), act = Tensor::empty({T, Is});
      Tensor shared = Tensor::empty({T, H}), gate = Tensor::empty({T, 1});
      cpu_->matmul(x, sgu, gate_up);
      cpu_->silu_mul_packed(gate_up, act);
      cpu_->matmul(act, sdn, shared);
      cpu_->matmul(x, sg, gate);
      cpu_->sigmoid_scale_rows(shared, gate);
      cpu_->add(want, shared);
    }
    const Tensor dx = to_device(*gpu_, x), drouter = gpu_->upload(router);
    const Tensor dgu = gpu_->upload(gu), ddn = gpu_->upload(dn);
    const Tensor dsgu = Is > 0 ? gpu_->upload(sgu) : Tensor();
    const Tensor dsdn = Is > 0 ? gpu_->upload(sdn) : Tensor();
    const Tensor dsg = Is > 0 ? gpu_->upload(sg) : Tensor();
    for (int round = 0; round < 2; ++round) {
      Tensor got = poisoned(*gpu_, {T, H});
      ASSERT_TRUE(fused->moe_block_decode(dx, drouter, dgu, ddn, k, dsgu, dsdn, dsg, got, nullptr));
      EXPECT_TRUE(close(host(got), want, 2e-2)) << "round " << round;
    }
  }
  // Above the fused path's token limit: not fused, nothing written.
  Tensor x = to_device(*gpu_, rand_bf16({65, 64}, rng_));
  Tensor router = gpu_->upload(rand_bf16({8, 64}, rng_));
  Tensor gu = gpu_->upload(rand_bf16({8, 64, 64}, rng_)),
         dn = gpu_->upload(rand_bf16({8, 64, 32}, rng_));
  Tensor out = gpu_->empty({65, 64});
  EXPECT_FALSE(fused->moe_block_decode(x, router, gu, dn, 2, Tensor(), Tensor(), Tensor(), out, nullptr));
}

TEST_F(CudaOps, MoeBlockDecodeFoldsTheNormInFront) {
  // moe_block_decode with the residual add and RMSNorm folded in against the same block after
  // add_rms_norm: the residual sum, the normalised rows and the block's output all equal, bit
  // for bit at hidden <= 2048 (one 8-value chunk per thread in both kernels); out aliasing the
  // addend, as in the model's layers (block_out). Twice per case: the counter must be reset.
  auto fused = moe_fused_forced_backend();
  for (auto [T, E, k, H, I, Is] : {std::tuple{1, 64, 8, 256, 64, 64},
                                   {2, 16, 4, 2048, 64, 64},
                                   {2, 16, 4, 136, 96, 0},
                                   {5, 16, 4, 128, 96, 32}}) {
    SCOPED_TRACE(testing::Message() << T << " tokens, H " << H << ", shared " << Is);
    Tensor router = rand_bf16({E, H}, rng_);
    Tensor gu = rand_bf16({E, 2 * I, H}, rng_, -0.2f, 0.2f), dn = rand_bf16({E, H, I}, rng_, -0.2f, 0.2f);
    const Tensor drouter = fused->upload(router), dgu = fused->upload(gu), ddn = fused->upload(dn);
    Tensor dsgu, dsdn, dsg;
    if (Is > 0) {
      dsgu = fused->upload(rand_bf16({2 * Is, H}, rng_, -0.2f, 0.2f));
      dsdn = fused->upload(rand_bf16({H, Is}, rng_, -0.2f, 0.2f));
      dsg = fused->upload(rand_bf16({1, H}, rng_));
    }
    const Tensor norm_w = fused->upload(rand_bf16({H}, rng_, -0.5f, 0.5f));
    const Tensor residual0 = rand_bf16({T, H}, rng_, -3, 3), addend0 = rand_bf16({T, H}, rng_);
    for (int round = 0; round < 2; ++round) {
      // The separate ops.
      Tensor res_a = to_device(*fused, residual0), block_a = to_device(*fused, addend0);
      Tensor x_a = poisoned(*fused, {T, H});
      fused->add_rms_norm(res_a, block_a, norm_w, 1e-6f, true, x_a);
      ASSERT_TRUE(fused->moe_block_decode(x_a, drouter, dgu, ddn, k, dsgu, dsdn, dsg, block_a,
                                          nullptr));
      // Folded, the output over the addend.
      Tensor res_b = to_device(*fused, residual0), block_b = to_device(*fused, addend0);
      Tensor x_b = poisoned(*fused, {T, H});
      const Backend::FoldedNorm norm{&res_b, &block_b, &norm_w, 1e-6f, true};
      ASSERT_TRUE(fused->moe_block_decode(x_b, drouter, dgu, ddn, k, dsgu, dsdn, dsg, block_b,
                                          &norm));
      EXPECT_TRUE(close(host(res_b), host(res_a), 0.0)) << "residual, round " << round;
      EXPECT_TRUE(close(host(x_b), host(x_a), 0.0)) << "normalised rows, round " << round;
      EXPECT_TRUE(close(host(block_b), host(block_a), 0.0)) << "block output, round " << round;
    }
  }
  // A norm the router cannot hold in shared memory (2 x 5 rows x 4096 x 2 bytes > 48 KB): not
  // fused, nothing written.
  const int64_t H = 4096;
  Tensor residual = to_device(*fused, rand_bf16({5, H}, rng_)), addend = to_device(*fused, rand_bf16({5, H}, rng_));
  const Tensor before = host(residual);
  const Tensor w = fused->upload(rand_bf16({H}, rng_));
  Tensor x = poisoned(*fused, {5, H}), out = fused->empty({5, H});
  const Backend::FoldedNorm norm{&residual, &addend, &w, 1e-6f, true};
  EXPECT_FALSE(fused->moe_block_decode(x, fused->upload(rand_bf16({8, H}, rng_)),
                                       fused->upload(rand_bf16({8, 64, H}, rng_)),
                                       fused->upload(rand_bf16({8, H, 32}, rng_)), 2, Tensor(),
                                       Tensor(), Tensor(), out, &norm));
  EXPECT_TRUE(close(host(residual), before, 0.0));
}

TEST_F(CudaOps, RandomWeightMatchesHost) {
  // --load-format dummy: the device generator gives the host default's values.
  for (Shape shape : {Shape{1000}, Shape{37, 129}}) {
    Tensor want = cpu_->random_weight(shape, 0.25f, 12345);
    Tensor got = host(gpu_->random_weight(shape, 0.25f, 12345));
    if (shape.size() > 1)
      for (int64_t i = 0; i < want.numel(); ++i) want.f32()[i] = round_bf16(want.f32()[i]);
    EXPECT_TRUE(close(got, want, 1e-7, 1e-7));
  }
}

TEST_F(CudaOps, ErrorsNameTheProblem) {
  Tensor x = gpu_->empty({4, 8});
  Tensor w = gpu_->upload(rand_bf16({5, 9}, rng_));
  Tensor out = gpu_->empty({4, 5});
  EXPECT_THROW(gpu_->matmul(x, w, out), Error);
  Tensor host_x = Tensor::empty({4, 8});
  EXPECT_THROW(gpu_->add(host_x, x), Error);
}

}  // namespace
}  // namespace bf
