// "flash-mma": FlashAttention-2-style prefill / verify attention over the paged KV cache with
// mma.sync (m16n8k16 bf16 -> f32, sm_80+, so it runs on sm_90 and sm_12x alike). One block per
// (64-query tile of one sequence, query head), 4 warps x 16 query rows; K/V tiles of BN keys
// gathered through the block table into shared memory with cp.async; S = Q Kᵀ and O += P V on
// the tensor cores, P kept in registers (the accumulator layout of S is the A layout of P V);
// online softmax in f32 with exp2. Masks: causal (absolute positions, so chunked prefill over
// cached context and verify blocks work), non-causal, sliding window. Shared memory per block
// (Q + double-buffered K and V): (64 + 4 BN) x (D + 8) x 2 bytes: D=64 45 KB, D=128 85 KB,
// D=256 (BN 32) 99 KB: within the 99 KB (101376 bytes) of sm_12x.
#include <cfloat>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/kernels.h"

namespace bf::cuda {
namespace {


__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;  // 0: zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(bytes));
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <int D, int BN, int NW>
__global__ void __launch_bounds__(NW * 32) flash_mma_kernel(AttnArgs a, DeviceBatch b,
                                                            const int2* items) {
  constexpr int kBM = NW * 16;  // query rows per block (16 per warp)
  constexpr int kThreads = NW * 32;
  constexpr int LD = D + 8;  // padded row (halves)
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* sKbuf = sQ + kBM * LD;        // [2][BN][LD]
  __nv_bfloat16* sVbuf = sKbuf + 2 * BN * LD;  // [2][BN][LD]

  const int2 item = items[blockIdx.x];  // (sequence, first query row of the tile)
  const int h = blockIdx.y;
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

  // Q tile -> smem (rows past the sequence zero-filled).
  constexpr int CH = D / 8;  // 16-byte chunks per row
  for (int c = tid; c < kBM * CH; c += kThreads) {
    const int r = c / CH, col = (c % CH) * 8;
    const bool valid = r < rows;
    const int64_t t = seq.query_start + q0 + (valid ? r : 0);
    cp_async16(sQ + r * LD + col, q + (t * a.hq + h) * D + col, valid);
  }

  const int p_first = seq.num_computed + q0;             // absolute position of tile row 0
  const int p_last = seq.num_computed + q0 + rows - 1;
  int kv_end = a.causal ? min(kv_len, p_last + 1) : kv_len;
  int kv_begin = a.sliding_window > 0 ? max(0, p_first - a.sliding_window + 1) : 0;
  kv_begin = kv_begin / BN * BN;

  const float sl2 = a.scale * 1.4426950408889634f;  // softmax in base 2
  const int g = lane / 4, tq = lane % 4;
  const int row_lo = warp * 16 + g, row_hi = row_lo + 8;  // this thread's two tile rows
  const int p_lo = p_first + row_lo, p_hi = p_first + row_hi;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

  // K/V tile loads through the block table (keys past kv_len zero-filled), double-buffered:
  // tile i+1 streams in (cp.async) while tile i is on the tensor cores.
  auto load_kv = [&](int kv0, int buf) {
    __nv_bfloat16* sK = sKbuf + buf * BN * LD;
    __nv_bfloat16* sV = sVbuf + buf * BN * LD;
    for (int c = tid; c < BN * CH; c += kThreads) {
      const int r = c / CH, col = (c % CH) * 8;
      const int j = kv0 + r;
      const bool valid = j < kv_len;
      const int jj = valid ? j : 0;
      const int64_t slot = static_cast<int64_t>(table[jj / a.block_size]) * a.block_size +
                           jj % a.block_size;
      const int64_t off = (slot * a.hkv + kvh) * D + col;
      cp_async16(sK + r * LD + col, kc + off, valid);
      cp_async16(sV + r * LD + col, vc + off, valid);
    }
    asm volatile("cp.async.commit_group;\n" ::);
  };
  if (kv_begin < kv_end) load_kv(kv_begin, 0);
  int buf = 0;
  for (int kv0 = kv_begin; kv0 < kv_end; kv0 += BN, buf ^= 1) {
    if (kv0 + BN < kv_end) {
      load_kv(kv0 + BN, buf ^ 1);
      asm volatile("cp.async.wait_group 1;\n" ::);
    } else {
      asm volatile("cp.async.wait_group 0;\n" ::);
    }
    __syncthreads();
    const __nv_bfloat16* sK = sKbuf + buf * BN * LD;
    const __nv_bfloat16* sV = sVbuf + buf * BN * LD;
    // Only tiles on the causal diagonal, the window's edge or past kv_len need masks.
    const bool need_mask = kv0 + BN > kv_len || (a.causal && kv0 + BN - 1 > p_first) ||
                           (a.sliding_window > 0 && kv0 <= p_last - a.sliding_window);

    // S = Q Kᵀ for this warp's 16 rows x BN keys.
    float s[BN / 8][4];
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
    for (int k0 = 0; k0 < D; k0 += 16) {
      uint32_t af[4];
      ldmatrix_x4(af, sQ + (warp * 16 + (lane % 16)) * LD + k0 + (lane / 16) * 8);
#pragma unroll
      for (int n0 = 0; n0 < BN; n0 += 16) {
        uint32_t bfr[4];
        ldmatrix_x4(bfr, sK + (n0 + (lane % 8) + (lane / 16) * 8) * LD + k0 + ((lane / 8) % 2) * 8);
        mma_bf16(s[n0 / 8], af, bfr[0], bfr[1]);
        mma_bf16(s[n0 / 8 + 1], af, bfr[2], bfr[3]);
      }
    }
    // Mask and online softmax (rows lo = g, hi = g + 8 of the warp's 16).
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = kv0 + nt * 8 + 2 * tq + (e % 2);
        const int p = e < 2 ? p_lo : p_hi;
        const bool ok = !need_mask || (j < kv_len && (!a.causal || j <= p) &&
                                       (a.sliding_window <= 0 || j > p - a.sliding_window));
        const float v = ok ? s[nt][e] * sl2 : -INFINITY;
        s[nt][e] = v;
        if (e < 2) mx_lo = fmaxf(mx_lo, v); else mx_hi = fmaxf(mx_hi, v);
      }
    }
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 1));
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, 2));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 1));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, 2));
    const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
    const float base_lo = mn_lo == -INFINITY ? 0.0f : mn_lo;
    const float base_hi = mn_hi == -INFINITY ? 0.0f : mn_hi;
    const float c_lo = exp2f(m_lo - base_lo), c_hi = exp2f(m_hi - base_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    l_lo *= c_lo;
    l_hi *= c_hi;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= c_lo; o[i][1] *= c_lo; o[i][2] *= c_hi; o[i][3] *= c_hi;
    }
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      s[nt][0] = exp2f(s[nt][0] - base_lo);
      s[nt][1] = exp2f(s[nt][1] - base_lo);
      s[nt][2] = exp2f(s[nt][2] - base_hi);
      s[nt][3] = exp2f(s[nt][3] - base_hi);
      l_lo += s[nt][0] + s[nt][1];
      l_hi += s[nt][2] + s[nt][3];
    }
    // O += P V: P (16 x BN) from registers, V (BN x D) via ldmatrix.trans.
#pragma unroll
    for (int k0 = 0; k0 < BN; k0 += 16) {
      uint32_t pf[4] = {pack_bf16(s[k0 / 8][0], s[k0 / 8][1]), pack_bf16(s[k0 / 8][2], s[k0 / 8][3]),
                        pack_bf16(s[k0 / 8 + 1][0], s[k0 / 8 + 1][1]),
                        pack_bf16(s[k0 / 8 + 1][2], s[k0 / 8 + 1][3])};
#pragma unroll
      for (int n0 = 0; n0 < D; n0 += 16) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, sV + (k0 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + n0 + (lane / 16) * 8);
        mma_bf16(o[n0 / 8], pf, vf[0], vf[1]);
        mma_bf16(o[n0 / 8 + 1], pf, vf[2], vf[3]);
      }
    }
    __syncthreads();  // this buffer is the next prefetch's target
  }
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 1);
  l_lo += __shfl_xor_sync(0xffffffffu, l_lo, 2);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 1);
  l_hi += __shfl_xor_sync(0xffffffffu, l_hi, 2);
  const float inv_lo = l_lo > 0.0f ? 1.0f / l_lo : 0.0f, inv_hi = l_hi > 0.0f ? 1.0f / l_hi : 0.0f;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(a.out);
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    const int col = i * 8 + 2 * tq;
    if (row_lo < rows) {
      const int64_t t = seq.query_start + q0 + row_lo;
      *reinterpret_cast<__nv_bfloat162*>(out + (t * a.hq + h) * D + col) =
          __floats2bfloat162_rn(o[i][0] * inv_lo, o[i][1] * inv_lo);
    }
    if (row_hi < rows) {
      const int64_t t = seq.query_start + q0 + row_hi;
      *reinterpret_cast<__nv_bfloat162*>(out + (t * a.hq + h) * D + col) =
          __floats2bfloat162_rn(o[i][2] * inv_hi, o[i][3] * inv_hi);
    }
  }
}

template <int D, int BN, int NW>
void launch_d(const AttnArgs& a, const DeviceBatch& b, const int2* items, int num_items,
              cudaStream_t s) {
  const size_t smem = static_cast<size_t>(NW * 16 + 4 * BN) * (D + 8) * 2;
  static bool configured = false;  // per instantiation (one device per process)
  if (!configured) {
    BF_CUDA_CHECK(cudaFuncSetAttribute(flash_mma_kernel<D, BN, NW>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem)));
    configured = true;
  }
  flash_mma_kernel<D, BN, NW><<<dim3(num_items, a.hq), NW * 32, smem, s>>>(a, b, items);
  BF_CUDA_LAUNCH_CHECK();
}

}  // namespace

size_t flash_mma_smem_bytes(int head_dim, int warps) {
  const int bn = head_dim == 256 ? 32 : 64;
  return static_cast<size_t>(warps * 16 + 4 * bn) * (head_dim + 8) * 2;
}

void launch_attention_flash_mma(const AttnArgs& a, const DeviceBatch& b, const int2* items,
                                int num_items, int warps, cudaStream_t s) {
  if (num_items == 0) return;
  if (warps == 8) {
    switch (a.hd) {
      case 64: launch_d<64, 64, 8>(a, b, items, num_items, s); return;
      case 128: launch_d<128, 64, 8>(a, b, items, num_items, s); return;
      default: break;  // head_dim 256: 4 warps (8 would need 135 KB)
    }
  }
  switch (a.hd) {
    case 64: launch_d<64, 64, 4>(a, b, items, num_items, s); break;
    case 128: launch_d<128, 64, 4>(a, b, items, num_items, s); break;
    case 256: launch_d<256, 32, 4>(a, b, items, num_items, s); break;
    default: fail("flash-mma: head_dim ", a.hd, " not supported (64/128/256)");
  }
}

}  // namespace bf::cuda
