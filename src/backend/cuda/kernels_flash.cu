// "flash-mma": FlashAttention-2-style prefill / verify attention over the paged KV cache with
// mma.sync (m16n8k16 bf16 -> f32, sm_80+, so it runs on sm_90 and sm_12x alike). One block per
// (query tile of one sequence, query head); each warp owns MT m16 row slices of the tile; K/V
// tiles of BN keys gathered through the block table into shared memory with cp.async, loads
// overlapped with the tensor-core work (kDouble below); S = Q Kᵀ and O += P V on
// the tensor cores, P kept in registers (the accumulator layout of S is the A layout of P V);
// online softmax in f32 with exp2 (the softmax scale folded into one FFMA per score). Masks:
// causal (absolute positions, so chunked prefill over cached context and verify blocks work),
// non-causal, sliding window; evaluated only on tiles that cross an edge.
//
// Tile shapes (flash_config): 128 query rows where the device's shared memory allows (sm_90)
// at head_dim <= 128: 4 warps x 32 rows, so each K/V fragment read from shared memory feeds two
// MMAs (shared-memory bandwidth, not the tensor cores, bounds the 16-row version); 64 rows of 4
// warps otherwise, within the 99 KB (101376 bytes) of sm_12x. At head_dim 256 the default is 64
// rows single-buffered (two blocks per SM on sm_90); 128 rows of 8 warps double-buffered (202
// KB) is kept as a pinnable variant. On sm_90 with the binary's sm_90a code the registry sends
// head_dim 256 to flash-wgmma (kernels_flash_wgmma.cu) instead: this kernel's 256 shapes measured
// ~300 TFLOP/s however tiled; they serve sm_12x and builds without 90a.
// Shared memory: (rows + 2 or 4 BN) x (D + 8) x 2 bytes.
#include <cfloat>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/flash_common.cuh"

namespace bf::cuda {
namespace {


// Row-padded shared-memory tiles (LD = D + 8 halves): the 8 rows an ldmatrix phase reads start
// 16 bytes apart modulo 128, so they hit distinct banks.
// kDouble: K and V of tile i+1 stream in while tile i is computed, one barrier per tile.
// Otherwise one buffer each (FlashAttention-2's order): V_i streams in during S = Q K_iᵀ and
// K_{i+1} during the softmax and P V_i, two barriers per tile, 2 BN rows of smem instead of 4.
template <int D, int BN, int NW, int MT, bool kDouble>
__global__ void __launch_bounds__(NW * 32, NW == 4 ? 2 : 1)
    flash_mma_kernel(AttnArgs a, DeviceBatch b, const int2* items) {
  constexpr int kBM = NW * 16 * MT;  // query rows per block
  constexpr int kThreads = NW * 32;
  constexpr int LD = D + 8;
  constexpr int CH = D / 8;  // 16-byte chunks per row
  static_assert(kThreads % CH == 0 && BN % (kThreads / CH) == 0,
                "each thread loads one fixed column of chunks, whole passes over a tile");
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  constexpr int kStages = kDouble ? 2 : 1;
  __nv_bfloat16* sKbuf = sQ + kBM * LD;              // [kStages][BN][LD]
  __nv_bfloat16* sVbuf = sKbuf + kStages * BN * LD;  // [kStages][BN][LD]

  // Heads are the fast grid index: the heads of one GQA group run side by side (their K/V
  // stream is shared in L2) and the items' order (longest causal tiles first) is kept.
  const int item_idx = blockIdx.x / a.hq;
  const int h = blockIdx.x - item_idx * a.hq;
  const int2 item = items[item_idx];  // (sequence, first query row of the tile)
  const SeqInfo seq = b.seqs[item.x];
  const int q0 = item.y;
  const int rows = min(kBM, seq.query_len - q0);
  const int kv_len = seq.num_computed + seq.query_len;
  const int kvh = h / (a.hq / a.hkv);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q);
  const __nv_bfloat16* kc = static_cast<const __nv_bfloat16*>(a.k_cache);
  const __nv_bfloat16* vc = static_cast<const __nv_bfloat16*>(a.v_cache);
  const int32_t* table = b.block_tables + seq.table_offset;
  const int bs_shift = __ffs(a.block_size) - 1;  // block_size is a power of two (host check)
  const int bs_mask = a.block_size - 1;

  // Q tile -> smem (rows past the sequence zero-filled).
  const int chunk_col = (tid % CH) * 8;  // this thread's column in every row it loads
  constexpr int kRowStep = kThreads / CH;  // rows one pass of the block loads
#pragma unroll
  for (int i = 0; i < kBM / kRowStep; ++i) {
    const int r = tid / CH + i * kRowStep;
    const bool valid = r < rows;
    const int64_t t = seq.query_start + q0 + (valid ? r : 0);
    cp_async16(sQ + r * LD + chunk_col, q + (t * a.hq + h) * D + chunk_col, valid);
  }

  const int p_first = seq.num_computed + q0;  // absolute position of tile row 0
  const int p_last = seq.num_computed + q0 + rows - 1;
  const int kv_end = a.causal ? min(kv_len, p_last + 1) : kv_len;
  int kv_begin = a.sliding_window > 0 ? max(0, p_first - a.sliding_window + 1) : 0;
  kv_begin = kv_begin / BN * BN;

  const float sl2 = a.scale * 1.4426950408889634f;  // softmax in base 2 (scale > 0, host check)
  const int g = lane / 4, tq = lane % 4;
  // This thread's rows: (warp * MT + mt) * 16 + g and + 8, for mt < MT.
  float o[MT][D / 8][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
  }

  // K and/or V rows of a tile through the block table (keys past kv_len zero-filled), one
  // cp.async group.
  auto load_tile = [&](bool load_k, bool load_v, int kv0, int buf) {
    __nv_bfloat16* sK = sKbuf + buf * BN * LD;
    __nv_bfloat16* sV = sVbuf + buf * BN * LD;
#pragma unroll
    for (int i = 0; i < BN / kRowStep; ++i) {
      const int r = tid / CH + i * kRowStep;
      const int j = kv0 + r;
      const bool valid = j < kv_len;
      const int jj = valid ? j : 0;
      const int64_t slot = (static_cast<int64_t>(table[jj >> bs_shift]) << bs_shift) + (jj & bs_mask);
      const int64_t off = (slot * a.hkv + kvh) * D + chunk_col;
      if (load_k) cp_async16(sK + r * LD + chunk_col, kc + off, valid);
      if (load_v) cp_async16(sV + r * LD + chunk_col, vc + off, valid);
    }
    cp_async_commit();
  };
  auto wait_loads = [] { cp_async_wait_all(); };
  if (kv_begin < kv_end) load_tile(true, kDouble, kv_begin, 0);  // same group as Q
  int buf = 0;
  for (int kv0 = kv_begin; kv0 < kv_end; kv0 += BN, buf ^= (kDouble ? 1 : 0)) {
    const bool more = kv0 + BN < kv_end;
    wait_loads();
    // Tile i (double) or K_i (single) has landed, and every warp is done with tile i-1: its
    // buffers may be refilled.
    __syncthreads();
    if (kDouble) {
      if (more) load_tile(true, true, kv0 + BN, buf ^ 1);
    } else {
      load_tile(false, true, kv0, 0);
    }
    const __nv_bfloat16* sK = sKbuf + buf * BN * LD;
    const __nv_bfloat16* sV = sVbuf + buf * BN * LD;
    // Only tiles on the causal diagonal, the window's edge or past kv_len need masks.
    const bool need_mask = kv0 + BN > kv_len || (a.causal && kv0 + BN - 1 > p_first) ||
                           (a.sliding_window > 0 && kv0 <= p_last - a.sliding_window);

    // S = Q Kᵀ for this warp's MT x 16 rows x BN keys; a K fragment feeds MT row slices.
    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < BN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
#pragma unroll
    for (int k0 = 0; k0 < D; k0 += 16) {
      uint32_t qf[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
        ldmatrix_x4(qf[mt], sQ + ((warp * MT + mt) * 16 + (lane % 16)) * LD + k0 + (lane / 16) * 8);
#pragma unroll
      for (int n0 = 0; n0 < BN; n0 += 16) {
        uint32_t kf[4];
        ldmatrix_x4(kf, sK + (n0 + (lane % 8) + (lane / 16) * 8) * LD + k0 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(s[mt][n0 / 8], qf[mt], kf[0], kf[1]);
          mma_bf16(s[mt][n0 / 8 + 1], qf[mt], kf[2], kf[3]);
        }
      }
    }
    if (!kDouble) {
      wait_loads();
      __syncthreads();  // V_i has landed; every warp is done with K_i
      if (more) load_tile(true, false, kv0 + BN, 0);
    }
    // Mask and online softmax; per row slice, rows g (elements 0, 1) and g + 8 (2, 3).
    const TileMask mask{kv0, kv_len, a.sliding_window, a.causal, need_mask};
    uint32_t pf[MT][BN / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      online_softmax_tile<BN, D>(s[mt], o[mt], m[mt], l[mt], pf[mt], sl2, tq,
                                 p_first + (warp * MT + mt) * 16 + g, mask);
    // O += P V: P (MT x 16 x BN) from registers, V (BN x D) via ldmatrix.trans.
#pragma unroll
    for (int k0 = 0; k0 < BN; k0 += 16) {
#pragma unroll
      for (int n0 = 0; n0 < D; n0 += 16) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, sV + (k0 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + n0 + (lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16(o[mt][n0 / 8], pf[mt][k0 / 16], vf[0], vf[1]);
          mma_bf16(o[mt][n0 / 8 + 1], pf[mt][k0 / 16], vf[2], vf[3]);
        }
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    store_rows<D>(static_cast<__nv_bfloat16*>(a.out), seq.query_start + q0, a.hq, h,
                  (warp * MT + mt) * 16 + g, rows, o[mt], l[mt], tq);
}

// Tile shape per head_dim and query rows (64 or 128). 64 rows fit sm_12x's 99 KB everywhere;
// at head_dim 256 that is FlashAttention-2's H100 shape (64 x 64, single-buffered, two blocks
// per SM), the default there.
struct FlashConfig {
  int bn, warps, mt;
  bool double_buffer;
  int rows() const { return warps * 16 * mt; }
};
FlashConfig flash_config(int head_dim, int rows) {
  if (head_dim == 256) return rows == 128 ? FlashConfig{64, 8, 1, true} : FlashConfig{64, 4, 1, false};
  return rows == 128 ? FlashConfig{64, 4, 2, true} : FlashConfig{64, 4, 1, true};
}
size_t config_smem(int head_dim, const FlashConfig& c) {
  return static_cast<size_t>(c.rows() + (c.double_buffer ? 4 : 2) * c.bn) * (head_dim + 8) * 2;
}

template <int D, int BN, int NW, int MT, bool kDouble>
void launch_d(const AttnArgs& a, const DeviceBatch& b, const int2* items, int num_items,
              cudaStream_t s) {
  const size_t smem = config_smem(D, FlashConfig{BN, NW, MT, kDouble});
  static bool configured = false;  // per instantiation (one device per process)
  if (!configured) {
    BF_CUDA_CHECK(cudaFuncSetAttribute(flash_mma_kernel<D, BN, NW, MT, kDouble>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
    configured = true;
  }
  const int64_t blocks = static_cast<int64_t>(num_items) * a.hq;
  BF_CHECK(blocks < (int64_t{1} << 31), "flash-mma: grid of ", blocks, " blocks");
  flash_mma_kernel<D, BN, NW, MT, kDouble>
      <<<static_cast<unsigned>(blocks), NW * 32, smem, s>>>(a, b, items);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace

int flash_mma_tile_rows(int head_dim, size_t smem_per_block, int pinned_rows) {
  const int want = pinned_rows == 64 || pinned_rows == 128 ? pinned_rows
                                                            : (head_dim == 256 ? 64 : 128);
  return want == 128 && config_smem(head_dim, flash_config(head_dim, 128)) <= smem_per_block ? 128
                                                                                              : 64;
}

size_t flash_mma_smem_bytes(int head_dim, int tile_rows) {
  return config_smem(head_dim, flash_config(head_dim, tile_rows));
}

void launch_attention_flash_mma(const AttnArgs& a, const DeviceBatch& b, const int2* items,
                                int num_items, int tile_rows, cudaStream_t s) {
  if (num_items == 0) return;
  BF_CHECK(tile_rows == 64 || tile_rows == 128, "flash-mma: tile of ", tile_rows, " rows");
  const bool wide = tile_rows == 128;
  switch (a.hd) {
    case 64:
      return wide ? launch_d<64, 64, 4, 2, true>(a, b, items, num_items, s)
                  : launch_d<64, 64, 4, 1, true>(a, b, items, num_items, s);
    case 128:
      return wide ? launch_d<128, 64, 4, 2, true>(a, b, items, num_items, s)
                  : launch_d<128, 64, 4, 1, true>(a, b, items, num_items, s);
    case 256:
      return wide ? launch_d<256, 64, 8, 1, true>(a, b, items, num_items, s)
                  : launch_d<256, 64, 4, 1, false>(a, b, items, num_items, s);
    default: fail("flash-mma: head_dim ", a.hd, " not supported (64/128/256)");
  }
}

}  // namespace bf::cuda
