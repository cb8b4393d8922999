// Token sampling on the device (Backend::sample_rows): the logits rows stay on the GPU, only
// one small result per row comes back. Same semantics and random numbers as the host sampler
// (engine/sampler.cpp, engine/random.cpp); kernels_sample.cu says how.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace bf::cuda {

constexpr int kSampleMaxTop = 20;  // top logprobs per row

// One row's knobs, already in the host sampler's terms.
struct SampleRowParams {
  float inv_temperature;  // 1.0f / T as the host computes it; unused when greedy
  float min_p, top_p;
  int32_t top_k;          // <= 0: off
  int32_t greedy;         // argmax, lowest id on ties
  int32_t num_top;        // top logprobs wanted, 0..kSampleMaxTop
  uint64_t seed, position;
};

struct SampleRowResult {
  double log_sum_exp;     // of the raw row (logprobs.h log_sum_exp)
  int32_t token;          // -1: the row has no logit above -inf
  int32_t rank;           // tokens with logit >= the token's
  float token_logit;
  int32_t num_top;
  int32_t top_ids[kSampleMaxTop];  // the num_top largest logits (ties: lower ids), unordered
  float top_logits[kSampleMaxTop];
};

// logits: rows x vocab of dtype dt (kDtF32 / kDtBF16); params, out: device arrays of rows.
void launch_sample_rows(const void* logits, int dt, int64_t rows, int64_t vocab,
                        const SampleRowParams* params, SampleRowResult* out, cudaStream_t s);

// The device port of engine/random.h (for its bit-for-bit test): per i, random_bits and
// uniform of (seed[i], position[i], stream[i]).
void launch_random_bits(const uint64_t* seed, const uint64_t* position, const uint64_t* stream,
                        int64_t n, uint64_t* bits, double* uniforms, cudaStream_t s);

}  // namespace bf::cuda
