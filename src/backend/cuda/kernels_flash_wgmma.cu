// "flash-wgmma": prefill / verify attention over the paged KV cache with Hopper's warpgroup MMA
// (wgmma.mma_async, sm_90a), head_dim 256. Same contract, masks and online softmax as
// flash-mma (kernels_flash.cu); what changes is how the tensor cores are fed. At head_dim 256
// flash-mma stays near 300 TFLOP/s whatever its tiling (64/128 rows, warp pairs, 32-key tiles
// all measured no faster): mma.sync needs every K and V fragment moved from shared memory into
// registers by ldmatrix, with a 253-register budget that leaves no room to run ahead. wgmma reads
// K and V straight from shared memory through descriptors and runs asynchronously.
//
// A block is two warpgroups (256 threads) over 128 query rows of one (sequence, head); each
// warpgroup owns 64 rows. Per 64-key tile: S[64 x 64] = Q Kᵀ as 16 m64n64k16 wgmmas with both
// operands in shared memory; mask and online softmax in registers (the m64nN accumulator layout
// is mma.sync's m16n8 layout per warp, so the softmax code is flash-mma's); P converted to bf16
// in registers is the A operand of O[64 x 256] += P V (4 m64n256k16 wgmmas, V N-major). K and V
// tiles are double-buffered with cp.async (the next tile streams in during this one), one block
// barrier per tile. Shared memory: Q 64 KB + 2 x (K + V) 128 KB + 1 KB alignment, one block per
// SM. Tiles use the 128-byte swizzle (rows of 128 bytes, 16-byte chunks XORed with row % 8) in
// 1024-byte-aligned atoms of [rows][64 elements]: conflict-free for cp.async and for wgmma.
#include <cfloat>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/flash_common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/wgmma.h"

namespace bf::cuda {
namespace {

constexpr int kD = 256;                     // head_dim
constexpr int kBN = 64;                     // keys per tile
constexpr int kGroups = 2;                  // warpgroups per block
constexpr int kRows = 64 * kGroups;         // query rows per block
constexpr int kThreads = 128 * kGroups;
[[maybe_unused]] constexpr int kChunks = kD / 8;  // 16-byte chunks per row
constexpr int kQBytes = kRows * kD * 2;     // 64 KB
constexpr int kTileBytes = kBN * kD * 2;    // 32 KB: one K or V tile
constexpr size_t kSmemBytes = kQBytes + 4 * kTileBytes + 1024;
static_assert(kFlashWgmmaRows == kRows, "the host builds items of this many query rows");
static_assert(kFlashSplitTile % kBN == 0, "key splits start on this kernel's tiles");

// Byte offset of 16-byte chunk c of row r in a [rows x kD] tile stored as kD / 64 atoms of
// [rows][128 bytes], 128-byte swizzle.
[[maybe_unused]] __device__ __forceinline__ uint32_t swizzled(int r, int c, int rows) {
  return static_cast<uint32_t>((c / 8) * rows * 128 + r * 128 + (((c % 8) ^ (r % 8)) * 16));
}

__global__ void __launch_bounds__(kThreads, 1)
    flash_wgmma_kernel(AttnArgs a, DeviceBatch b, const int2* items) {
#if BF_WGMMA
  extern __shared__ uint8_t smem_raw[];
  // The swizzle is applied to absolute address bits: atoms start on 1024-byte boundaries.
  uint8_t* base = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* sQ = base;
  uint8_t* sK = base + kQBytes;          // [2][kTileBytes]
  uint8_t* sV = sK + 2 * kTileBytes;     // [2][kTileBytes]
  const uint32_t q_addr = smem_addr(sQ), k_addr = smem_addr(sK), v_addr = smem_addr(sV);

  const int item_idx = blockIdx.x / a.hq;
  const int h = blockIdx.x - item_idx * a.hq;
  const int2 item = items[item_idx];
  const SeqInfo seq = b.seqs[item.x];
  const int q0 = item.y;
  const int rows = min(kRows, seq.query_len - q0);
  const int kv_len = seq.num_computed + seq.query_len;
  const int kvh = h / (a.hq / a.hkv);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wg = warp / 4;
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q);
  const __nv_bfloat16* kc = static_cast<const __nv_bfloat16*>(a.k_cache);
  const __nv_bfloat16* vc = static_cast<const __nv_bfloat16*>(a.v_cache);
  const int32_t* table = b.block_tables + seq.table_offset;
  const int bs_shift = __ffs(a.block_size) - 1;
  const int bs_mask = a.block_size - 1;

  // A warp copies one row per pass (lane = chunk): 512 contiguous bytes.
  const int chunk = tid % kChunks;
  constexpr int kRowStep = kThreads / kChunks;
#pragma unroll 4
  for (int r = tid / kChunks; r < kRows; r += kRowStep) {
    const bool valid = r < rows;
    const int64_t t = seq.query_start + q0 + (valid ? r : 0);
    cp_async16(sQ + swizzled(r, chunk, kRows), q + (t * a.hq + h) * kD + chunk * 8, valid);
  }
  const int p_first = seq.num_computed + q0;
  const int p_last = seq.num_computed + q0 + rows - 1;
  int kv_end = a.causal ? min(kv_len, p_last + 1) : kv_len;
  int kv_begin = a.sliding_window > 0 ? max(0, p_first - a.sliding_window + 1) : 0;
  kv_begin = kv_begin / kBN * kBN;
  const int split = blockIdx.y;
  if (a.flash_splits > 1) {  // this block's key range (split_len: a multiple of kBN)
    kv_begin = max(kv_begin, split * a.flash_split_len);
    kv_end = min(kv_end, (split + 1) * a.flash_split_len);
  }

  auto load_tile = [&](int kv0, int buf) {
#pragma unroll 4
    for (int r = tid / kChunks; r < kBN; r += kRowStep) {
      const int j = kv0 + r;
      const bool valid = j < kv_len;
      const int jj = valid ? j : 0;
      const int64_t slot =
          (static_cast<int64_t>(table[jj >> bs_shift]) << bs_shift) + (jj & bs_mask);
      const int64_t off = (slot * a.hkv + kvh) * kD + chunk * 8;
      const uint32_t dst = buf * kTileBytes + swizzled(r, chunk, kBN);
      cp_async16(sK + dst, kc + off, valid);
      cp_async16(sV + dst, vc + off, valid);
    }
    cp_async_commit();
  };

  const float sl2 = a.scale * 1.4426950408889634f;
  const int g = lane / 4, tq = lane % 4;
  const int row_lo = warp * 16 + g;  // this thread's rows in the block: row_lo and row_lo + 8
  float o[kD / 8][4];                // m64n256 accumulator: [32 column groups of 8][4]
#pragma unroll
  for (int i = 0; i < kD / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  if (kv_begin < kv_end) {
    load_tile(kv_begin, 0);  // same group as Q
  } else {  // no key for any row (a split past this item's causal end): drain Q's copies
    cp_async_commit();
    cp_async_wait_all();
  }
  int buf = 0;
  for (int kv0 = kv_begin; kv0 < kv_end; kv0 += kBN, buf ^= 1) {
    cp_async_wait_all();
    wgmma::fence_proxy_async();  // this thread's cp.async data, visible to wgmma
    __syncthreads();             // everyone's tile i landed; every warp is done with tile i-1
    if (kv0 + kBN < kv_end) load_tile(kv0 + kBN, buf ^ 1);
    const bool need_mask = kv0 + kBN > kv_len || (a.causal && kv0 + kBN - 1 > p_first) ||
                           (a.sliding_window > 0 && kv0 <= p_last - a.sliding_window);

    // S = Q Kᵀ for this warpgroup's 64 rows: K-major operands, k-steps of 16 along head_dim
    // (32 bytes inside a 128-byte atom row; the next atom after four).
    float s[kBN / 8][4];
#pragma unroll
    for (int i = 0; i < kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    wgmma::fence_operands(s);
    wgmma::fence();
#pragma unroll
    for (int k = 0; k < kD / 16; ++k) {
      const uint32_t dq = q_addr + wg * 64 * 128 + (k / 4) * kRows * 128 + (k % 4) * 32;
      const uint32_t dk = k_addr + buf * kTileBytes + (k / 4) * kBN * 128 + (k % 4) * 32;
      wgmma::mma_m64n64k16_ss(s, wgmma::make_desc(dq, 16, 1024, 1),
                              wgmma::make_desc(dk, 16, 1024, 1), 1);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(s);

    // Mask and online softmax (rows row_lo: elements 0, 1; row_lo + 8: 2, 3); P as the A
    // operand per 16 keys (mma.sync's A layout per warp, which wgmma's register A shares).
    uint32_t pf[kBN / 16][4];
    online_softmax_tile<kBN, kD>(s, o, m, l, pf, sl2, tq, p_first + row_lo,
                                 TileMask{kv0, kv_len, a.sliding_window, a.causal, need_mask});

    // O += P V: V N-major (head_dim contiguous), k-steps of 16 keys = 2 KB; the 64-column
    // atoms of head_dim are 64 keys x 128 bytes apart (leading offset), 8-key row groups 1 KB
    // (stride offset).
    wgmma::fence_operands(o);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t dv = v_addr + buf * kTileBytes + kk * 16 * 128;
      wgmma::mma_m64n256k16_rs_tnsp(o, pf[kk], wgmma::make_desc(dv, kBN * 128, 1024, 1), 1);
    }
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::fence_operands(o);
  }

  if (a.flash_splits > 1)
    store_partial_rows<kD>(a.flash_partial_o, a.flash_partial_ml,
                           static_cast<int64_t>(b.num_tokens) * a.hq, split,
                           seq.query_start + q0, a.hq, h, row_lo, rows, o, m, l, tq);
  else
    store_rows<kD>(static_cast<__nv_bfloat16*>(a.out), seq.query_start + q0, a.hq, h, row_lo,
                   rows, o, l, tq);
#endif
}

__global__ void wgmma_probe_kernel(int* out) { *out = BF_WGMMA; }

}  // namespace

bool flash_wgmma_compiled() {
  static const bool compiled = [] {
    int* d = nullptr;
    int h = 0;
    if (cudaMalloc(&d, sizeof(int)) != cudaSuccess) return false;
    wgmma_probe_kernel<<<1, 1>>>(d);
    const bool ok = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
    cudaFree(d);
    (void)cudaGetLastError();  // a device without sm_90a code: no kernel image, not an error here
    return ok && h == 1;
  }();
  return compiled;
}

size_t flash_wgmma_smem_bytes() { return kSmemBytes; }

void launch_attention_flash_wgmma(const AttnArgs& a, const DeviceBatch& b, const int2* items,
                                  int num_items, cudaStream_t s) {
  if (num_items == 0) return;
  BF_CHECK(a.hd == kD, "flash-wgmma: head_dim ", a.hd, " not supported (256)");
  static bool configured = false;  // one device per process
  if (!configured) {
    BF_CUDA_CHECK(cudaFuncSetAttribute(flash_wgmma_kernel,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kSmemBytes)));
    configured = true;
  }
  const int64_t blocks = static_cast<int64_t>(num_items) * a.hq;
  BF_CHECK(blocks < (int64_t{1} << 31), "flash-wgmma: grid of ", blocks, " blocks");
  BF_CHECK(a.flash_splits >= 1 && a.flash_splits <= kDecodeMaxSplits &&
               (a.flash_splits == 1 || (a.flash_split_len > 0 && a.flash_split_len % kBN == 0)),
           "flash-wgmma: ", a.flash_splits, " key splits of ", a.flash_split_len);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(a.flash_splits));
  flash_wgmma_kernel<<<grid, kThreads, kSmemBytes, s>>>(a, b, items);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace bf::cuda
