// Counter-based generator (see random.h). Keyed mixing in the style of splitmix64: each
// step adds an odd constant before the mixer so that zero inputs do not map to zero.
#include "engine/random.h"

#include <atomic>
#include <random>

namespace bf {

uint64_t random_bits(uint64_t seed, uint64_t position, uint64_t stream) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
  h = mix64(h ^ (position + 0x632be59bd9b4e019ull));
  h = mix64(h ^ (stream + 0x85157af5e9b6a4d1ull));
  return h;
}

double uniform(uint64_t seed, uint64_t position, uint64_t stream) {
  // Top 53 bits scaled by 2^-53: exactly representable, so the result is < 1.
  return static_cast<double>(random_bits(seed, position, stream) >> 11) * 0x1.0p-53;
}

uint64_t make_request_seed() {
  static const uint64_t base = [] {
    std::random_device device;
    return (static_cast<uint64_t>(device()) << 32) ^ device();
  }();
  static std::atomic<uint64_t> counter{0};
  return mix64(base + counter.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ull);
}

}  // namespace bf
