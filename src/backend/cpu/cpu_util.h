// Helpers shared by the CPU reference ops: argument checks with messages that name the op
// and the argument, a row-major sgemm wrapper, and the scalar activations (computed the way
// torch computes them in fp32). Internal to backend/cpu.
#pragma once

#include <cblas.h>

#include <cmath>
#include <cstdint>

#include "backend/backend.h"
#include "core/error.h"

namespace bf::cpu {

inline void check_f32(const Tensor& t, const char* op, const char* name) {
  BF_CHECK(t.defined(), op, ": ", name, " is not allocated");
  BF_CHECK(t.dtype() == DType::kF32 && t.device() == Device::kCPU, op, ": ", name,
           " must be a host F32 tensor, got ", dtype_name(t.dtype()),
           t.device() == Device::kCPU ? " on the CPU" : " on CUDA");
}

// Exact shape.
inline void check_shape(const Tensor& t, const Shape& want, const char* op, const char* name) {
  check_f32(t, op, name);
  BF_CHECK(t.shape() == want, op, ": ", name, " has shape ", shape_string(t.shape()),
           ", expected ", shape_string(want));
}

// Token-major tensor of `rows` rows of `row_numel` elements each: [rows, a, b] and
// [rows, a*b] are both accepted (the ops only need the row-major layout).
inline void check_rows(const Tensor& t, int64_t rows, int64_t row_numel, const char* op,
                       const char* name) {
  check_f32(t, op, name);
  BF_CHECK(t.rank() >= 1 && t.dim(0) == rows && t.numel() == rows * row_numel, op, ": ", name,
           " has shape ", shape_string(t.shape()), ", expected ", rows, " rows of ", row_numel,
           " elements");
}

// Row-major C[m, n] = alpha * op(A) · op(B) + beta * C, all contiguous.
// op(A) is [m, k] (A stored [k, m] when trans_a); op(B) is [k, n] (B stored [n, k] when trans_b).
inline void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a, static_cast<int>(trans_a ? m : k), b,
              static_cast<int>(trans_b ? k : n), beta, c, static_cast<int>(n));
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }
// torch.nn.functional.softplus(x, beta=1, threshold=20): linear above the threshold.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace bf::cpu

namespace bf::cpu {

inline void check_state_slot(int32_t slot, int64_t num_slots, size_t seq_index, const char* op) {
  BF_CHECK(slot >= 0 && slot < num_slots, op, ": sequence ", seq_index, " has state slot ", slot,
           ", the pool has ", num_slots, " slots");
}

// snapshot_slots_per_seq: one list per sequence, one slot per new token, all in the pool.
inline void check_snapshot_slots(const ForwardBatch& batch,
                                 const std::vector<std::vector<int32_t>>& snapshot_slots_per_seq,
                                 int64_t num_slots, const char* op) {
  BF_CHECK(snapshot_slots_per_seq.size() == batch.seqs.size(), op, ": ",
           snapshot_slots_per_seq.size(), " snapshot slot lists for ", batch.seqs.size(),
           " sequences");
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    BF_CHECK(static_cast<int64_t>(snapshot_slots_per_seq[s].size()) == batch.seqs[s].query_len,
             op, ": sequence ", s, " has ", batch.seqs[s].query_len, " new tokens but ",
             snapshot_slots_per_seq[s].size(), " snapshot slots");
    for (int32_t slot : snapshot_slots_per_seq[s]) check_state_slot(slot, num_slots, s, op);
  }
}

// The snapshot slots sequence s writes: the explicit per-sequence lists when given (the
// *_snapshots entry points), else the batch's own BatchSequence::snapshot_slots; nullptr when
// the sequence runs normally (final state written back to its state slot).
inline const std::vector<int32_t>* snapshots_of(
    const ForwardBatch& batch, const std::vector<std::vector<int32_t>>* snapshot_slots_per_seq,
    size_t s, int64_t num_slots, const char* op) {
  if (snapshot_slots_per_seq != nullptr) return &(*snapshot_slots_per_seq)[s];
  const BatchSequence& seq = batch.seqs[s];
  if (seq.snapshot_slots.empty()) return nullptr;  // lengths: check_batch_sequences
  for (int32_t slot : seq.snapshot_slots) check_state_slot(slot, num_slots, s, op);
  return &seq.snapshot_slots;
}

}  // namespace bf::cpu
