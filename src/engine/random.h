// Counter-based randomness for sampling: a draw is a pure function of (seed, position,
// stream), so a request's tokens never depend on what else is in the batch, how prefill was
// chunked, or whether a step was a decode or a speculative verify.
// position: the index of the output token being drawn (0 for the first generated token).
// stream: which draw at that position (sample_stream for the token itself, others for spec
// decoding), so two uses at one position never share a number.
#pragma once

#include <cstdint>
#include <optional>

namespace bf {

inline constexpr uint64_t sample_stream = 0;  // the token draw in sample_token
inline constexpr uint64_t accept_stream = 1;  // rejection sampling's accept/reject draw
inline constexpr uint64_t residual_stream = 2;  // rejection sampling's draw after a reject

// splitmix64's finalizer: a bijection on 64 bits with full avalanche.
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// 64 random bits for (seed, position, stream). Each input passes through the mixer before it
// meets the next, so nearby seeds, positions or streams give unrelated outputs.
uint64_t random_bits(uint64_t seed, uint64_t position, uint64_t stream);

// Uniform double in [0, 1) with 53 random bits; never 1.0.
double uniform(uint64_t seed, uint64_t position, uint64_t stream);

// A fresh seed for a request that did not give one: std::random_device once per process,
// then a mixed counter, so concurrent callers (HTTP threads) never get the same seed.
uint64_t make_request_seed();

// The seed the engine stores for a request: its own or a fresh one.
inline uint64_t resolve_seed(const std::optional<uint64_t>& seed) {
  return seed ? *seed : make_request_seed();
}

// Seed of the index-th of n parallel sequences of one request, as vLLM derives it
// (seed + index), so n > 1 with a seed reproduces vLLM's per-child seeds.
inline uint64_t child_seed(uint64_t seed, int32_t index) {
  return seed + static_cast<uint64_t>(index);
}

}  // namespace bf
