// The Gated DeltaNet layer between its projections for a batch of single-token decodes, in one
// kernel (it was four: conv1d, gates, the recurrent delta rule, the gated RMSNorm, each with
// its launch and wait). A block of 128 threads per (sequence, value head), a thread per value
// column, the arithmetic of delta_recurrent_kernel and the gated norm's sum over the block.
//
// Launched with programmatic dependent launch while the input projection still streams, the
// block loads before its wait everything that does not come from that projection: the head's
// recurrent state (64 KB, by cp.async into shared memory, so the block needs few registers
// and fits next to the projection's gemv blocks, three of which leave an SM about 10K
// registers), its conv channels' taps and old conv state, the gate parameters. A slot's states
// were last written by this layer's kernel in an earlier forward pass, many launches back,
// and the batch metadata was uploaded before the pass began (kernels_delta.cu). Only the
// projected row is read after the wait.
//
// q and k conv channels are shared by the G value heads of a key head: each of their blocks
// computes them from the old conv state it read before the wait, and the last of the G to
// count itself in (a counter per (sequence, key head), which that block resets) writes the new
// state; every other block counted itself in after its reads were used. The previous form, a
// block per key head owning the channels (rewritten this session with its state in registers,
// 512 threads), measured the same at 35B-A3B batch 1 to 8 and slower at 32 and on the 27B.
// Same H200 call, graph ms, four kernels / per key head / per value head: 35B-A3B B=1 2.70 /
// 2.62 / 2.63, B=2 4.02 / 3.65 / 3.63, B=8 7.02 / 6.69 / 6.62, B=32 17.77 / 17.50 / 17.23;
// 27B B=2 15.49 / 15.75 / 15.16, B=8 17.02 / 16.38 / 16.22 (bench/NOTES.md).
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/flash_common.cuh"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {

constexpr int kDk = 128, kDv = 128;
constexpr int kMaxGroup = 8;       // value heads per key head
constexpr int kMaxKernel = 8;      // conv taps
constexpr int kHeadThreads = kDv;  // a block's threads: its value columns x lanes per column

// A block's share of the head's state in shared memory: dk rows of dv / split columns, each
// row padded by 32 / lanes floats when a column has several lanes, so that the lanes of a warp
// (32 / lanes columns, rows seg, seg + lanes, ...) read 32 different banks.
__host__ __device__ constexpr int state_stride(int split) { return kDv / split + (split > 1 ? 32 / split : 0); }
__host__ __device__ constexpr size_t head_smem_bytes(int split) {
  return static_cast<size_t>(kDk) * state_stride(split) * sizeof(float);
}

// kSplit blocks (a cluster) per (sequence, value head), each owning dv / kSplit value columns
// with kSplit lanes per column: the serial passes over the state rows get kSplit times shorter
// and the head's state is read and written by kSplit SMs. Each block computes the head's q and
// k itself (128 channels, a thread each); the gated RMSNorm's sum over the head's columns adds
// the blocks' shares through distributed shared memory.
template <int kMaxTaps, int kSplit>  // kMaxTaps: at least the conv's taps, 4 (Qwen3.5) or 8
__global__ void __launch_bounds__(kHeadThreads, 8)
    gdn_decode_head_kernel(GdnDecodeArgs a, DeviceBatch b) {
  constexpr int kLanes = kSplit;           // lanes per value column
  constexpr int kCols = kDv / kSplit;      // this block's value columns
  constexpr int kStride = state_stride(kSplit);
  constexpr int kRowsPerLane = kDk / kLanes;
  extern __shared__ float4 s_state4[];  // [dk][kStride]: this block's columns of the state, f32
  float* s_state = reinterpret_cast<float*>(s_state4);
  __shared__ float s_q[kDk], s_k[kDk], s_v[kCols], s_sq[kHeadThreads / 32];
  __shared__ float s_block_sq;  // the block's share of the norm's sum (read by its cluster)
  __shared__ bool s_last;
  const SeqInfo seq = b.seqs[blockIdx.x];
  if (seq.query_len != 1) {  // the host sends only single-token batches
    pdl_wait();
    return;
  }
  const int vh = blockIdx.y, part = blockIdx.z, G = a.hv / a.hk, kh = vh / G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int local = tid / kLanes, seg = tid % kLanes;  // column in the block, first row
  const int c = part * kCols + local;                   // value column of the head
  const int64_t t = seq.query_start, row = t * a.proj_cols;
  const bool has_state = seq.num_computed > 0;
  const int taps = a.kernel, history = a.kernel - 1;
  const int64_t state_size = static_cast<int64_t>(kDk) * kDv;
  float* state =
      a.recurrent_state + (static_cast<int64_t>(seq.state_slot) * a.hv + vh) * state_size;

  // Before the wait: the block's columns of the state into shared memory (16-byte copies, L2
  // only), then this thread's three conv channels (q and k channel tid of the key head, v of
  // column c), their taps and old state into registers; the head's gate parameters and norm
  // weight.
  if (has_state) {
    constexpr int kChunks = kCols / 4;  // 16-byte copies per row
    for (int i = tid; i < kDk * kChunks; i += kHeadThreads) {
      const int r = i / kChunks, chunk = i % kChunks;
      cp_async16(s_state4 + r * (kStride / 4) + chunk,
                 reinterpret_cast<const float4*>(state + r * kDv + part * kCols) + chunk, true);
    }
  }
  cp_async_commit();
  const int64_t channel[3] = {static_cast<int64_t>(kh) * kDk + tid,
                              a.key_dim + static_cast<int64_t>(kh) * kDk + tid,
                              2 * a.key_dim + static_cast<int64_t>(vh) * kDv + c};
  float* conv_state = a.conv_state + static_cast<int64_t>(seq.state_slot) * a.conv_dim * history;
  float w[3][kMaxTaps], old[3][kMaxTaps - 1];
#pragma unroll
  for (int ch = 0; ch < 3; ++ch) {
#pragma unroll
    for (int j = 0; j < kMaxTaps; ++j)
      w[ch][j] = j < taps ? ld(a.conv_weight, a.conv_w_dt, channel[ch] * taps + j) : 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxTaps - 1; ++j)
      old[ch][j] = j < history && has_state ? __ldcg(conv_state + channel[ch] * history + j) : 0.0f;
  }
  const float A = ld(a.A_log, a.A_log_dt, vh), dt_bias = ld(a.dt_bias, a.dt_bias_dt, vh);
  const float norm_w = ld(a.norm_weight, a.norm_dt, c);
  pdl_wait();

  // The projection's outputs: the three channels' inputs, z of column c, b and a of the head.
  const int64_t gates = row + a.conv_dim + a.value_dim;  // b, then a, per value head
  float input[3];
#pragma unroll
  for (int ch = 0; ch < 3; ++ch) input[ch] = ld(a.projected, a.proj_dt, row + channel[ch]);
  const float z = ld(a.projected, a.proj_dt, row + a.conv_dim + static_cast<int64_t>(vh) * kDv + c);
  const float b_in = ld(a.projected, a.proj_dt, gates + vh);
  const float a_in = ld(a.projected, a.proj_dt, gates + a.hv + vh);
  float conv_out[3];
#pragma unroll
  for (int ch = 0; ch < 3; ++ch) {
    float last_tap = 0.0f;  // w[ch][history], by constant indices (registers, not the stack)
#pragma unroll
    for (int j = 0; j < kMaxTaps; ++j)
      if (j == history) last_tap = w[ch][j];
    float acc = last_tap * input[ch];  // the newest input takes the last tap
#pragma unroll
    for (int j = 0; j < kMaxTaps - 1; ++j)
      if (j < history) acc += w[ch][j] * old[ch][j];
    conv_out[ch] = siluf_(acc);
  }
  s_q[tid] = conv_out[0];
  s_k[tid] = conv_out[1];
  if (seg == 0) {
    s_v[local] = conv_out[2];
    // The v channel's new conv state is this block's alone (its first lane of the column).
#pragma unroll
    for (int j = 0; j < kMaxTaps - 1; ++j)
      if (j < history)
        conv_state[channel[2] * history + j] = j + 1 < history ? old[2][j + 1] : input[2];
  }
  // Count this block in for its key head (its old-state reads are used above); the answer
  // is needed only at the end.
  const int key_head_blocks = G * kSplit;
  unsigned* counter = a.counters + static_cast<int64_t>(blockIdx.x) * a.hk + kh;
  unsigned arrived = 0;
  __syncthreads();  // every thread's conv done (its reads of the old state used)
  if (tid == 0 && key_head_blocks > 1) arrived = atomicAdd(counter, 1u);
  cp_async_wait_all();
  __syncthreads();  // s_q, s_k, s_v and the state visible to all

  // q/k norms (every warp computes them: 4 values per lane).
  float qq = 0.0f, kk = 0.0f, kq = 0.0f;
#pragma unroll
  for (int e = 0; e < kDk / 32; ++e) {
    const float qv = s_q[lane + 32 * e], kv = s_k[lane + 32 * e];
    qq += qv * qv;
    kk += kv * kv;
    kq += kv * qv;
  }
  qq = warp_sum<32>(qq);
  kk = warp_sum<32>(kk);
  kq = warp_sum<32>(kq);
  const float q_norm = rsqrtf(qq + 1e-6f) * rsqrtf(static_cast<float>(kDk));
  const float k_norm = rsqrtf(kk + 1e-6f);
  // beta = sigmoid(b), g = -exp(A_log) softplus(a + dt_bias).
  const float a_biased = a_in + dt_bias;
  const float softplus = a_biased > 20.0f ? a_biased : log1pf(expf(a_biased));
  const float decay = expf(-expf(A) * softplus);
  const float beta = 1.0f / (1.0f + expf(-b_in));
  // This lane's rows of column c: seg, seg + kLanes, ...; the column's lanes are adjacent.
  float kv_mem = 0.0f, sq = 0.0f;
  if (has_state) {
#pragma unroll 16
    for (int r = 0; r < kRowsPerLane; ++r) {
      const int i = r * kLanes + seg;
      const float S = s_state[i * kStride + local] * decay;
      kv_mem += S * s_k[i];
      sq += S * s_q[i];
    }
  }
  kv_mem = warp_sum<kLanes>(kv_mem);
  sq = warp_sum<kLanes>(sq);
  const float delta = (s_v[local] - kv_mem * k_norm) * beta * k_norm;  // on the raw k
#pragma unroll 16
  for (int r = 0; r < kRowsPerLane; ++r) {
    const int i = r * kLanes + seg;
    const float S = has_state ? s_state[i * kStride + local] * decay : 0.0f;
    state[i * kDv + c] = S + s_k[i] * delta;
  }
  const float o = (sq + delta * kq) * q_norm;
  // Gated RMSNorm over the head's 128 columns: this block's (its 4 warps, a lane per column),
  // then with kSplit > 1 the cluster's other blocks' shares.
  const float part_sq = warp_sum<32>(seg == 0 ? o * o : 0.0f);
  if (lane == 0) s_sq[warp] = part_sq;
  __syncthreads();
  float total = s_sq[0] + s_sq[1] + s_sq[2] + s_sq[3];
  if constexpr (kSplit > 1) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    if (tid == 0) s_block_sq = total;
    cluster.sync();  // every block's share written
    total = 0.0f;
#pragma unroll
    for (int rank = 0; rank < kSplit; ++rank) total += *cluster.map_shared_rank(&s_block_sq, rank);
    cluster.sync();  // every share read before any block exits
  }
  if (seg == 0)
    st(a.out, a.out_dt, t * a.hv * kDv + static_cast<int64_t>(vh) * kDv + c,
       norm_w * o * rsqrtf(total / kDv + a.eps) * siluf_(z));
  // The q/k conv state: by the last block of the key head's group (or the only one).
  if (tid == 0) s_last = key_head_blocks == 1 || arrived == static_cast<unsigned>(key_head_blocks - 1);
  __syncthreads();
  if (!s_last) return;
#pragma unroll
  for (int ch = 0; ch < 2; ++ch)
#pragma unroll
    for (int j = 0; j < kMaxTaps - 1; ++j)
      if (j < history)
        conv_state[channel[ch] * history + j] = j + 1 < history ? old[ch][j + 1] : input[ch];
  if (tid == 0 && key_head_blocks > 1) *counter = 0;  // ready for the next layer (and replay)
}

template <int kMaxTaps, int kSplit>
void launch_head_kernel(const GdnDecodeArgs& a, const DeviceBatch& b, cudaStream_t s) {
  auto kernel = gdn_decode_head_kernel<kMaxTaps, kSplit>;
  static const bool raised = [&] {  // the state share (or a spread grid's): opt in, once
    allow_spread_smem(kernel, head_smem_bytes(kSplit));
    return true;
  }();
  (void)raised;
  // A block per SM while the grid fits (up to 4 sequences at 32 value heads, unsplit): packed
  // three to an SM next to the in-projection's blocks, the state passes ran 2-3x slower. Same
  // call: 35B-A3B batch 1 2.57 / 2.59 -> 2.46 / 2.48 ms, 27B 13.89 / 13.62 -> 13.34 / 13.38.
  const int64_t blocks = int64_t{b.num_seqs} * a.hv * kSplit;
  const size_t smem = spread_smem_bytes(blocks, head_smem_bytes(kSplit), "gdn");
  launch_pdl_cluster(kernel, dim3(b.num_seqs, a.hv, kSplit), kHeadThreads, smem, s,
                     dim3(1, 1, kSplit), a, b);
}

// How many clusters of kSplit blocks, each with a spread grid's shared memory (a block per
// SM), can be resident at once: clusters must fit inside a GPC, so on a GPU whose GPCs hold
// SM counts that are not multiples of kSplit this is less than SMs / kSplit (0 when unknown).
template <int kMaxTaps, int kSplit>
int max_spread_clusters() {
  static const int most = [] {
    auto kernel = gdn_decode_head_kernel<kMaxTaps, kSplit>;
    allow_spread_smem(kernel, head_smem_bytes(kSplit));
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(1, 1, kSplit);
    cfg.blockDim = dim3(kHeadThreads);
    cfg.dynamicSmemBytes = std::max(spread_smem_limit(), head_smem_bytes(kSplit));
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = kSplit;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return clusters;
  }();
  return most;
}

template <int kMaxTaps>
void launch_split(const GdnDecodeArgs& a, const DeviceBatch& b, cudaStream_t s) {
  int split = gdn_decode_split(b.num_seqs, a.hv, a.num_sms, a.split);
  // The automatic choice takes a split only while its clusters fit on the GPU in one wave.
  const int64_t clusters = int64_t{b.num_seqs} * a.hv;
  if (a.split == 0 && split == 4 && clusters > max_spread_clusters<kMaxTaps, 4>()) split = 2;
  if (a.split == 0 && split == 2 && clusters > max_spread_clusters<kMaxTaps, 2>()) split = 1;
  switch (split) {
    case 1: return launch_head_kernel<kMaxTaps, 1>(a, b, s);
    case 2: return launch_head_kernel<kMaxTaps, 2>(a, b, s);
    default: return launch_head_kernel<kMaxTaps, 4>(a, b, s);
  }
}

}  // namespace

bool gdn_decode_fused_supported(int dk, int dv, int hk, int hv, int kernel) {
  return dk == kDk && dv == kDv && hk > 0 && hv % hk == 0 && hv / hk <= kMaxGroup && kernel >= 1 &&
         kernel <= kMaxKernel;
}

int gdn_decode_split(int64_t seqs, int hv, int sms, int forced) {
  if (forced > 0) return forced;
  for (int split : {4, 2})
    if (seqs * hv * split <= sms) return split;
  return 1;
}

void launch_gdn_decode_fused(const GdnDecodeArgs& a, const DeviceBatch& b, cudaStream_t s) {
  BF_CHECK(gdn_decode_fused_supported(kDk, kDv, a.hk, a.hv, a.kernel),
           "gdn decode (fused): unsupported shape");
  BF_CHECK(a.split >= 0 && a.split <= 4 && a.split != 3, "gdn decode (fused): split ", a.split,
           " is not 1, 2 or 4");
  if (b.num_seqs == 0) return;
  BF_CHECK(a.hv == a.hk || (a.counters != nullptr && int64_t{b.num_seqs} * a.hk <= a.num_counters),
           "gdn decode (fused): ", b.num_seqs, " sequences need more counters");
  if (a.kernel <= 4)
    launch_split<4>(a, b, s);
  else
    launch_split<kMaxKernel>(a, b, s);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
