// Device sampler (sample.h): a cluster of 8 CTAs of 1024 threads per logits row (each over
// a contiguous segment; BLOCKFLASH_SAMPLE_CLUSTER=1: one CTA per row), every pass a read of
// the row (L2-resident after the first), no full sort and no scratch in global memory. The
// CTAs combine each pass's counts and sums through distributed shared memory, in rank order.
//
// It reproduces engine/sampler.cpp step by step, in the same arithmetic where it decides:
//  - p(x) = expf((x - max) * (1/T)) in f32 (the host's formula; CUDA's expf is within 2 ulp of
//    glibc's, the one source of disagreement besides summation order);
//  - min_p: p < min_p removed; top-k: keep x >= the k-th largest surviving logit (ties kept);
//    top-p: keep the tokens whose preceding mass (descending logit, ties by lower id) is below
//    top_p * total. Both thresholds are found by bisection on the logit's order-preserving key
//    (16 bits for bf16 rows, 32 for f32): each step one pass that counts and sums (in double,
//    fixed reduction order) the tokens at or above the candidate; the tie cut of top-p is
//    an ordered count in id order;
//  - the draw: q = float(p / total) as the host's probs, then the inverse CDF in id order.
//    The CDF is summed in 2^-60 fixed point so the block-wide scan is exact, monotone and
//    independent of the thread layout; the host sums the same q in double. The two agree
//    unless u lands within rounding (~1e-16 relative) of a CDF boundary.
// Logprobs (raw): log_sum_exp, the rank, and the top-N by a third bisection (count only).
#include <cooperative_groups.h>

#include <climits>
#include <cstdlib>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/sample.h"

namespace bf::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kItems = 8;  // contiguous elements per thread in the passes that go in id order
constexpr int kTile = kThreads * kItems;

// --- engine/random.h and random.cpp, ported: must stay bit-identical (cuda_ops_test checks) ---
__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
__device__ __forceinline__ uint64_t random_bits(uint64_t seed, uint64_t position,
                                                uint64_t stream) {
  uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
  h = mix64(h ^ (position + 0x632be59bd9b4e019ull));
  h = mix64(h ^ (stream + 0x85157af5e9b6a4d1ull));
  return h;
}
__device__ __forceinline__ double uniform(uint64_t seed, uint64_t position, uint64_t stream) {
  return static_cast<double>(random_bits(seed, position, stream) >> 11) * 0x1.0p-53;
}
constexpr uint64_t kSampleStream = 0;  // random.h sample_stream

// Order-preserving map of a non-NaN float to uint32 (larger float, larger key), and back.
__device__ __forceinline__ uint32_t order_key(float x) {
  // -0.0 and +0.0 compare equal on the host (top-k's x < kth): give them one key.
  const uint32_t b = x == 0.0f ? 0u : __float_as_uint(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

struct CountMass {
  int count;
  double mass;
};
struct MaxArg {
  float value;
  int index;  // INT_MAX: none
};

__device__ __forceinline__ int shfl_xor(int v, int o) { return __shfl_xor_sync(~0u, v, o); }
__device__ __forceinline__ double shfl_xor(double v, int o) { return __shfl_xor_sync(~0u, v, o); }
__device__ __forceinline__ unsigned long long shfl_xor(unsigned long long v, int o) {
  return __shfl_xor_sync(~0u, v, o);
}
__device__ __forceinline__ CountMass shfl_xor(CountMass v, int o) {
  return {shfl_xor(v.count, o), shfl_xor(v.mass, o)};
}
__device__ __forceinline__ MaxArg shfl_xor(MaxArg v, int o) {
  return {__shfl_xor_sync(~0u, v.value, o), shfl_xor(v.index, o)};
}

// Every thread gets op over the block, combined in a fixed order (reproducible sums).
// scratch: kWarps * 16 bytes of shared memory.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, void* scratch) {
  T* s = static_cast<T*>(scratch);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  __syncthreads();  // earlier readers of scratch are done
  if (threadIdx.x % 32 == 0) s[threadIdx.x / 32] = v;
  __syncthreads();
  T r = s[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, s[w]);
  return r;
}
struct Add {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
  __device__ CountMass operator()(CountMass a, CountMass b) const {
    return {a.count + b.count, a.mass + b.mass};
  }
};
struct Better {  // larger value, then lower index
  __device__ MaxArg operator()(MaxArg a, MaxArg b) const {
    return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
  }
};

// Inclusive scan over the block of an integer type; total: the block's sum.
template <class T>
__device__ __forceinline__ T block_inclusive_scan(T v, void* scratch, T& total) {
  T* s = static_cast<T*>(scratch);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(~0u, v, o);
    if (lane >= o) v += y;
  }
  __syncthreads();
  if (lane == 31) s[warp] = v;
  __syncthreads();
  T before = 0, all = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += s[w];
    all += s[w];
  }
  total = all;
  return before + v;
}

// One logits row and the sampler's per-element quantities.
struct Row {
  const void* x;
  int dt, n, shift;  // shift: 16 for bf16 rows (their keys' low half is constant)
  int begin, end;    // this CTA's part of the row (all of it unless a cluster shares it)
  bool vec8;         // bf16, n % 8 == 0, 16-byte aligned: 8 elements per load
  float max_logit, inv_t, min_p;

  // sampler.cpp: exp((x - max) * (1/T)) in f32; -inf and NaN give 0.
  __device__ __forceinline__ float prob(float x) const {
    return x > -INFINITY ? expf(__fmul_rn(__fsub_rn(x, max_logit), inv_t)) : 0.0f;
  }
  // Survives min_p (p_max is 1: the max logit's p).
  __device__ __forceinline__ bool alive(float p) const { return p > 0.0f && !(p < min_p); }
  __device__ __forceinline__ uint32_t skey(float x) const { return order_key(x) >> shift; }
  __device__ __forceinline__ float skey_value(uint32_t t) const {
    uint32_t key = t << shift;
    if (!(key & 0x80000000u)) key |= (1u << shift) - 1;  // negatives: ~bits, low half all ones
    return key_value(key);
  }
};

__device__ __forceinline__ void unpack_bf16x8(uint4 v, float (&x)[kItems]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    x[2 * j] = __uint_as_float(w[j] << 16);
    x[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
  }
}

// f(i, x) for every element; each thread sees its elements in increasing id order.
// bf16 rows: four 16-byte loads in flight per thread (a pass is latency-bound otherwise).
template <class F>
__device__ __forceinline__ void for_each(const Row& r, F&& f) {
  if (r.vec8) {
    const uint4* p = static_cast<const uint4*>(r.x);
    const int chunks = r.end / kItems;  // begin and end are multiples of kItems here
    int c = r.begin / kItems + threadIdx.x;
    for (; c + 3 * kThreads < chunks; c += 4 * kThreads) {
      uint4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) v[u] = p[c + u * kThreads];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float x[kItems];
        unpack_bf16x8(v[u], x);
#pragma unroll
        for (int j = 0; j < kItems; ++j) f((c + u * kThreads) * kItems + j, x[j]);
      }
    }
    for (; c < chunks; c += kThreads) {
      float x[kItems];
      unpack_bf16x8(p[c], x);
#pragma unroll
      for (int j = 0; j < kItems; ++j) f(c * kItems + j, x[j]);
    }
  } else {
    for (int i = r.begin + threadIdx.x; i < r.end; i += kThreads) f(i, ld(r.x, r.dt, i));
  }
}

// The kItems elements from `base` (NaN past the segment's end: never counted).
__device__ __forceinline__ void load_items(const Row& r, int base, float (&x)[kItems]) {
  if (r.vec8 && base + kItems <= r.end) {
    unpack_bf16x8(static_cast<const uint4*>(r.x)[base / kItems], x);
  } else {
#pragma unroll
    for (int j = 0; j < kItems; ++j) x[j] = base + j < r.end ? ld(r.x, r.dt, base + j) : NAN;
  }
}

// Count and mass of the elements with key >= t that weigh(x) admits (weight >= 0).
template <class Weigh>
__device__ CountMass count_mass(const Row& r, uint32_t t, Weigh weigh, void* scratch) {
  CountMass acc{0, 0.0};
  for_each(r, [&](int, float x) {
    if (x != x || r.skey(x) < t) return;
    const float w = weigh(x);
    if (w >= 0.0f) {
      ++acc.count;
      acc.mass += w;
    }
  });
  return block_reduce(acc, Add{}, scratch);
}

// Bisection on the key (bisect_all below): the largest lo with f(lo) >= target, given
// f(lo) >= target > f(hi) (f: count, or mass with kByMass, of admitted elements at or above
// the key; non-increasing).
struct Search {
  uint32_t lo, hi;
  CountMass at_lo, at_hi;
};

// Id of the k-th (1-based) element of the segment, in id order, for which match(x) holds;
// -1 if none.
template <class Match>
__device__ int kth_in_segment(const Row& r, int k, Match match, void* scratch, int* found) {
  if (threadIdx.x == 0) *found = -1;
  int carry = 0;
  for (int tile = r.begin; tile < r.end; tile += kTile) {
    const int base = tile + threadIdx.x * kItems;
    float x[kItems];
    load_items(r, base, x);
    int c = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j) c += match(x[j]) ? 1 : 0;
    int total;
    const int incl = block_inclusive_scan(c, scratch, total);
    if (carry + total >= k) {  // the same for every thread
      int before = carry + incl - c;
      if (before < k && carry + incl >= k)
        for (int j = 0; j < kItems; ++j)
          if (match(x[j]) && ++before == k) {
            *found = base + j;
            break;
          }
      break;
    }
    carry += total;
  }
  __syncthreads();
  const int id = *found;
  __syncthreads();
  return id;
}

// Id of the first element of the segment whose inclusive cumulative fixed-point mass, from
// `carry` (the mass before the segment), exceeds target; -1 if none.
template <class Fixed>
__device__ int first_crossing_in_segment(const Row& r, unsigned long long carry,
                                         unsigned long long target, Fixed fixed, void* scratch,
                                         int* found) {
  if (threadIdx.x == 0) *found = -1;
  for (int tile = r.begin; tile < r.end; tile += kTile) {
    const int base = tile + threadIdx.x * kItems;
    float x[kItems];
    load_items(r, base, x);
    unsigned long long q[kItems], s = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j) {
      q[j] = fixed(base + j, x[j]);
      s += q[j];
    }
    unsigned long long total;
    const unsigned long long incl = block_inclusive_scan(s, scratch, total);
    if (carry + total > target) {
      unsigned long long cum = carry + incl - s;
      if (cum <= target && carry + incl > target)
        for (int j = 0; j < kItems; ++j) {
          cum += q[j];
          if (cum > target) {
            *found = base + j;
            break;
          }
        }
      break;
    }
    carry += total;
  }
  __syncthreads();
  const int id = *found;
  __syncthreads();
  return id;
}

// --- A row shared by a cluster of kCluster CTAs (kCluster 1: one CTA, no cluster calls) ---
// Reductions combine the CTAs' block results in rank order, so every CTA gets the same value.
// xbuf: 16 bytes of shared memory at the same place in every CTA of the cluster.
template <int kCluster, class T>
__device__ __forceinline__ void exchange(T mine, T (&all)[kCluster], void* xbuf) {
  cg::cluster_group cluster = cg::this_cluster();
  T* slot = static_cast<T*>(xbuf);
  if (threadIdx.x == 0) *slot = mine;
  cluster.sync();
#pragma unroll
  for (int q = 0; q < kCluster; ++q) all[q] = *cluster.map_shared_rank(slot, q);
  cluster.sync();  // every CTA has read before a slot is written again
}
template <int kCluster, class T, class Op>
__device__ __forceinline__ T reduce(T v, Op op, void* scratch, void* xbuf) {
  T total = block_reduce(v, op, scratch);
  if constexpr (kCluster > 1) {
    T all[kCluster];
    exchange<kCluster>(total, all, xbuf);
    total = all[0];
    for (int q = 1; q < kCluster; ++q) total = op(total, all[q]);
  }
  return total;
}
template <int kCluster>
__device__ __forceinline__ int cluster_rank() {
  if constexpr (kCluster > 1) return static_cast<int>(cg::this_cluster().block_rank());
  return 0;
}

template <int kCluster, class Weigh>
__device__ CountMass count_mass_all(const Row& r, uint32_t t, Weigh weigh, void* scratch,
                                    void* xbuf) {
  CountMass part = count_mass(r, t, weigh, scratch);
  if constexpr (kCluster > 1) {
    CountMass all[kCluster];
    exchange<kCluster>(part, all, xbuf);
    part = all[0];
    for (int q = 1; q < kCluster; ++q) part = Add{}(part, all[q]);
  }
  return part;
}
template <int kCluster, bool kByMass, class Weigh>
__device__ Search bisect_all(const Row& r, Search s, double target, Weigh weigh, void* scratch,
                             void* xbuf) {
  while (s.hi - s.lo > 1) {
    const uint32_t mid = s.lo + (s.hi - s.lo) / 2;
    const CountMass f = count_mass_all<kCluster>(r, mid, weigh, scratch, xbuf);
    if ((kByMass ? f.mass : static_cast<double>(f.count)) >= target) {
      s.lo = mid;
      s.at_lo = f;
    } else {
      s.hi = mid;
      s.at_hi = f;
    }
  }
  return s;
}
// kth_in_segment over the whole row; n if none.
template <int kCluster, class Match>
__device__ int kth_in_row(const Row& r, int k, Match match, void* scratch, void* xbuf,
                          int* found) {
  int before = 0;
  bool mine = true;
  if constexpr (kCluster > 1) {  // which CTA's segment holds the k-th match
    int c = 0;
    for_each(r, [&](int, float x) { c += match(x) ? 1 : 0; });
    c = block_reduce(c, Add{}, scratch);
    int all[kCluster];
    exchange<kCluster>(c, all, xbuf);
    const int rank = cluster_rank<kCluster>();
    for (int q = 0; q < rank; ++q) before += all[q];
    mine = before < k && k <= before + all[rank];
  }
  int id = mine ? kth_in_segment(r, k - before, match, scratch, found) : -1;
  id = reduce<kCluster>(id, [](int a, int b) { return max(a, b); }, scratch, xbuf);
  return id < 0 ? r.n : id;
}
// first_crossing_in_segment over the whole row.
template <int kCluster, class Fixed>
__device__ int first_crossing_in_row(const Row& r, unsigned long long target, Fixed fixed,
                                     unsigned long long segment_total, void* scratch, void* xbuf,
                                     int* found) {
  unsigned long long carry = 0;
  bool mine = true;
  if constexpr (kCluster > 1) {
    unsigned long long all[kCluster];
    exchange<kCluster>(segment_total, all, xbuf);
    const int rank = cluster_rank<kCluster>();
    for (int q = 0; q < rank; ++q) carry += all[q];
    mine = carry <= target && target < carry + all[rank];
  }
  int id = mine ? first_crossing_in_segment(r, carry, target, fixed, scratch, found) : -1;
  return reduce<kCluster>(id, [](int a, int b) { return max(a, b); }, scratch, xbuf);
}

// Tied tokens (same logit, probability p) kept by top-p after `above` mass: the j-th (from 0,
// in id order) stays iff above + j * p < limit. The first always stays (above < limit).
__device__ int ties_kept(double above, float p, double limit, int ties) {
  const double room = (limit - above) / p;
  int keep = room >= ties ? ties : max(1, static_cast<int>(ceil(room)));
  while (keep < ties && above + keep * static_cast<double>(p) < limit) ++keep;
  while (keep > 1 && above + (keep - 1) * static_cast<double>(p) >= limit) --keep;
  return keep;
}

// kCluster CTAs per row (a thread-block cluster when > 1), each over a kTile-aligned segment.
template <int kCluster>
__global__ void __launch_bounds__(kThreads)
    sample_rows_kernel(const void* logits, int dt, int n, const SampleRowParams* params,
                       SampleRowResult* results) {
  __shared__ alignas(16) unsigned char scratch[kWarps * 16];
  __shared__ alignas(16) unsigned char xbuf[16];
  __shared__ int found, top_count;
  const int row = blockIdx.x / kCluster, cta = cluster_rank<kCluster>();
  const SampleRowParams P = params[row];
  SampleRowResult* out = results + row;
  const int64_t offset = static_cast<int64_t>(row) * n;
  Row r;
  r.x = dt == kDtBF16 ? static_cast<const void*>(static_cast<const __nv_bfloat16*>(logits) + offset)
                      : static_cast<const void*>(static_cast<const float*>(logits) + offset);
  r.dt = dt;
  r.n = n;
  const int segment = (n + kCluster * kTile - 1) / (kCluster * kTile) * kTile;
  r.begin = min(n, cta * segment);
  r.end = min(n, r.begin + segment);
  r.shift = dt == kDtBF16 ? 16 : 0;
  r.vec8 = dt == kDtBF16 && n % kItems == 0 && reinterpret_cast<uintptr_t>(r.x) % 16 == 0;
  r.inv_t = P.inv_temperature;
  r.min_p = P.min_p;

  // 1. The max logit and its lowest id (the greedy token); NaN and -inf never win.
  MaxArg best{-INFINITY, INT_MAX};
  for_each(r, [&](int i, float x) {
    if (x > best.value) best = {x, i};
  });
  best = reduce<kCluster>(best, Better{}, scratch, xbuf);
  if (best.index == INT_MAX) {  // the same in every CTA of the cluster
    if (threadIdx.x == 0 && cta == 0) out->token = -1;
    return;
  }
  const float m = best.value;
  r.max_logit = m;

  // 2. log_sum_exp's terms (logprobs.cpp), the non-NaN count, what survives min_p.
  double raw = 0.0;
  int numbers = 0;
  CountMass alive{0, 0.0};
  for_each(r, [&](int, float x) {
    if (x != x) return;
    raw += static_cast<double>(expf(__fsub_rn(x, m)));
    ++numbers;
    if (!P.greedy) {
      const float p = r.prob(x);
      if (r.alive(p)) {
        ++alive.count;
        alive.mass += p;
      }
    }
  });
  raw = reduce<kCluster>(raw, Add{}, scratch, xbuf);
  numbers = reduce<kCluster>(numbers, Add{}, scratch, xbuf);
  alive = reduce<kCluster>(alive, Add{}, scratch, xbuf);
  const uint32_t top_key = r.skey(m) + 1;  // above every key of the row

  int token = best.index;
  if (!P.greedy) {
    if (alive.count == 0) {  // only with a +inf logit (inf - inf is NaN)
      if (threadIdx.x == 0 && cta == 0) out->token = -1;
      return;
    }
    // 3. top-k: survivors are alive with key >= kth.
    uint32_t kth = 0;
    CountMass survivors = alive;
    auto alive_weight = [&](float x) {
      const float p = r.prob(x);
      return r.alive(p) ? p : -1.0f;
    };
    if (P.top_k > 0 && P.top_k < alive.count) {
      Search s = bisect_all<kCluster, false>(r, Search{0, top_key, alive, {0, 0.0}}, P.top_k,
                                             alive_weight, scratch, xbuf);
      kth = s.lo;
      survivors = s.at_lo;
    }
    // 4. top-p: keys above vstar, and the first `keep` (by id) at vstar.
    const bool use_top_p = P.top_p < 1.0f;
    uint32_t vstar = 0;
    int cut = n;  // the last kept id among the ties at vstar
    double kept_mass = survivors.mass;
    if (use_top_p) {
      const double limit = static_cast<double>(P.top_p) * survivors.mass;
      Search s = bisect_all<kCluster, true>(r, Search{kth, top_key, survivors, {0, 0.0}}, limit,
                                            alive_weight, scratch, xbuf);
      vstar = s.lo;
      const double above = s.at_hi.mass;
      const int ties = s.at_lo.count - s.at_hi.count;
      const float pv = r.prob(r.skey_value(vstar));
      const int keep = ties_kept(above, pv, limit, ties);
      kept_mass = above + keep * static_cast<double>(pv);
      if (keep < ties)
        cut = kth_in_row<kCluster>(
            r, keep,
            [&](float x) { return x == x && r.skey(x) == vstar && r.alive(r.prob(x)); },
            scratch, xbuf, &found);
    }
    // 5. The inverse-CDF draw over q = float(p / kept_mass), in 2^-60 fixed point.
    const double inv_total = 1.0 / kept_mass;
    auto fixed = [&](int i, float x) -> unsigned long long {
      if (x != x) return 0;
      const float p = r.prob(x);
      const uint32_t key = r.skey(x);
      if (!r.alive(p) || key < kth) return 0;
      if (use_top_p && (key < vstar || (key == vstar && i > cut))) return 0;
      const float q = static_cast<float>(static_cast<double>(p) * inv_total);
      return static_cast<unsigned long long>(static_cast<double>(q) * 0x1.0p60);
    };
    unsigned long long part = 0;
    for_each(r, [&](int i, float x) { part += fixed(i, x); });
    part = block_reduce(part, Add{}, scratch);
    unsigned long long total = part;
    if constexpr (kCluster > 1) {
      unsigned long long all[kCluster];
      exchange<kCluster>(part, all, xbuf);
      total = 0;
      for (int q = 0; q < kCluster; ++q) total += all[q];
    }
    const double u = uniform(P.seed, P.position, kSampleStream);
    unsigned long long target = static_cast<unsigned long long>(u * static_cast<double>(total));
    if (target >= total) target = total - 1;  // rounding: the host then takes the last token
    token = first_crossing_in_row<kCluster>(r, target, fixed, part, scratch, xbuf, &found);
  }

  // 6. Raw logprob, rank and the top-N raw logits of the row.
  const float token_logit = ld(r.x, dt, token);
  int rank = 0;
  for_each(r, [&](int, float x) { rank += x >= token_logit ? 1 : 0; });
  rank = reduce<kCluster>(rank, Add{}, scratch, xbuf);
  const int num_top = min(P.num_top, numbers);
  if (num_top > 0) {
    auto any_number = [](float) { return 0.0f; };
    Search s = bisect_all<kCluster, false>(r, Search{0, top_key, {numbers, 0.0}, {0, 0.0}},
                                           num_top, any_number, scratch, xbuf);
    const int need = num_top - s.at_hi.count, ties = s.at_lo.count - s.at_hi.count;
    const uint32_t edge = s.lo;
    const int last =
        need < ties ? kth_in_row<kCluster>(
                          r, need, [&](float x) { return x == x && r.skey(x) == edge; }, scratch,
                          xbuf, &found)
                    : n;
    // One counter for the cluster: rank 0's.
    int* counter = &top_count;
    if constexpr (kCluster > 1) counter = cg::this_cluster().map_shared_rank(&top_count, 0);
    if (threadIdx.x == 0 && cta == 0) top_count = 0;
    if constexpr (kCluster > 1)
      cg::this_cluster().sync();
    else
      __syncthreads();
    for_each(r, [&](int i, float x) {
      if (x != x) return;
      const uint32_t key = r.skey(x);
      if (key > edge || (key == edge && i <= last)) {
        const int slot = atomicAdd(counter, 1);
        if (slot < kSampleMaxTop) {
          out->top_ids[slot] = i;
          out->top_logits[slot] = x;
        }
      }
    });
  }
  // rank 0's shared counter must outlive the other CTAs' atomics.
  if constexpr (kCluster > 1) cg::this_cluster().sync();
  if (threadIdx.x == 0 && cta == 0) {
    out->token = token;
    out->rank = rank;
    out->token_logit = token_logit;
    out->log_sum_exp = static_cast<double>(m) + log(raw);
    out->num_top = num_top;
  }
}

__global__ void random_bits_kernel(const uint64_t* seed, const uint64_t* position,
                                   const uint64_t* stream, int64_t n, uint64_t* bits,
                                   double* uniforms) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  bits[i] = random_bits(seed[i], position[i], stream[i]);
  uniforms[i] = uniform(seed[i], position[i], stream[i]);
}

}  // namespace

void launch_sample_rows(const void* logits, int dt, int64_t rows, int64_t vocab,
                        const SampleRowParams* params, SampleRowResult* out, cudaStream_t s) {
  if (rows == 0) return;
  BF_CHECK(vocab > 0 && vocab < INT_MAX / 2, "sample_rows: vocabulary of ", vocab,
           " entries is outside what the kernel indexes");
  // CTAs per row: 8 (a cluster; rows of a large vocabulary take 8 SMs) unless
  // BLOCKFLASH_SAMPLE_CLUSTER=1 asks for one CTA per row.
  static const int cluster = [] {
    const char* e = std::getenv("BLOCKFLASH_SAMPLE_CLUSTER");
    return e != nullptr && std::atoi(e) == 1 ? 1 : 8;
  }();
  if (cluster == 1) {
    sample_rows_kernel<1><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
        logits, dt, static_cast<int>(vocab), params, out);
  } else {
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(static_cast<unsigned>(rows * 8));
    config.blockDim = dim3(kThreads);
    config.stream = s;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeClusterDimension;
    attribute[0].val.clusterDim.x = 8;
    attribute[0].val.clusterDim.y = 1;
    attribute[0].val.clusterDim.z = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    BF_CUDA_CHECK(cudaLaunchKernelEx(&config, sample_rows_kernel<8>, logits, dt,
                                     static_cast<int>(vocab), params, out));
  }
  BF_CUDA_LAUNCH_CHECK();
}

void launch_random_bits(const uint64_t* seed, const uint64_t* position, const uint64_t* stream,
                        int64_t n, uint64_t* bits, double* uniforms, cudaStream_t s) {
  if (n == 0) return;
  random_bits_kernel<<<ceil_div(n, 256), 256, 0, s>>>(seed, position, stream, n, bits, uniforms);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
