// Device helpers shared by the flash attention kernels (kernels_flash.cu: mma.sync;
// kernels_flash_wgmma.cu: Hopper wgmma): cp.async, ldmatrix, mma.sync, bf16 packing, exp2,
// the masked online-softmax step and the output store. The GDN kernels that stage through
// shared memory (kernels_delta_chunked.cu, kernels_gdn_fused.cu) take the cp.async ones.
#pragma once

#include <cuda_bf16.h>

#include <cfloat>
#include <cstdint>

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
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits for all of this thread's committed cp.async groups.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }
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

// 2^x with the SFU's approximation (flush-to-zero; 2^-inf = 0), no range fix-up code.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The masks of one BN-key tile: keys past kv_len, causal (absolute positions) and the
// sliding window; evaluated only when need_mask (tiles on an edge).
struct TileMask {
  int kv0, kv_len, sliding_window;
  bool causal, need_mask;
};

// Mask and online-softmax step for one warp's 16-row slice of a score tile, in the mma.sync
// m16n8 accumulator layout (also wgmma's per warp): s[nt][e] is row g (e = 0, 1) or g + 8
// (e = 2, 3) at key kv0 + 8 nt + 2 tq + e % 2, where p_lo is row g's absolute position. Updates
// the running max m (base-2 units: the softmax scale is folded into sl2) and sum l, rescales
// the slice's output accumulators o when a row max moved (a warp-uniform skip otherwise: deep
// into a long row it rarely moves), and writes P as bf16 A-operand fragments, 16 keys each.
template <int BN, int D>
__device__ __forceinline__ void online_softmax_tile(float (&s)[BN / 8][4], float (&o)[D / 8][4],
                                                    float (&m)[2], float (&l)[2],
                                                    uint32_t (&pf)[BN / 16][4], float sl2,
                                                    int tq, int p_lo, const TileMask& t) {
  const int p_hi = p_lo + 8;
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (t.need_mask) {
        const int j = t.kv0 + nt * 8 + 2 * tq + (e % 2);
        const int p = e < 2 ? p_lo : p_hi;
        const bool ok = j < t.kv_len && (!t.causal || j <= p) &&
                        (t.sliding_window <= 0 || j > p - t.sliding_window);
        if (!ok) s[nt][e] = -INFINITY;
      }
      mx[e / 2] = fmaxf(mx[e / 2], s[nt][e]);
    }
  }
  float base[2], c[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 1));
    mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 2));
    const float m_new = fmaxf(m[hf], mx[hf] * sl2);  // running max, scaled units
    base[hf] = m_new == -INFINITY ? 0.0f : m_new;   // a fully masked row so far
    c[hf] = fast_exp2(m[hf] - base[hf]);
    m[hf] = m_new;
    l[hf] *= c[hf];
  }
  if (__any_sync(0xffffffffu, c[0] != 1.0f || c[1] != 1.0f)) {
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= c[0];
      o[i][1] *= c[0];
      o[i][2] *= c[1];
      o[i][3] *= c[1];
    }
  }
#pragma unroll
  for (int nt = 0; nt < BN / 8; ++nt) {
    float p[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) p[e] = fast_exp2(fmaf(s[nt][e], sl2, -base[e / 2]));
    l[0] += p[0] + p[1];
    l[1] += p[2] + p[3];
    pf[nt / 2][(nt % 2) * 2] = pack_bf16(p[0], p[1]);
    pf[nt / 2][(nt % 2) * 2 + 1] = pack_bf16(p[2], p[3]);
  }
}

// A row's sum over the four lanes (tq = 0..3) that hold its columns in the m16n8 layout.
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Divides a warp's 16-row output slice by its row sums (quad-reduced) and stores rows row_lo
// and row_lo + 8 where below `rows`, as bf16: tile row r is token first_token + r, head h.
template <int D>
__device__ __forceinline__ void store_rows(__nv_bfloat16* out, int64_t first_token, int hq,
                                           int h, int row_lo, int rows,
                                           const float (&o)[D / 8][4], const float (&l)[2],
                                           int tq) {
  float inv[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const float sum = quad_sum(l[hf]);
    inv[hf] = sum > 0.0f ? 1.0f / sum : 0.0f;
  }
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = row_lo + 8 * hf;
    if (row >= rows) continue;
    __nv_bfloat16* dst = out + ((first_token + row) * static_cast<int64_t>(hq) + h) * D;
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<__nv_bfloat162*>(dst + i * 8 + 2 * tq) =
          __floats2bfloat162_rn(o[i][2 * hf] * inv[hf], o[i][2 * hf + 1] * inv[hf]);
  }
}

// Split-KV form of store_rows: the rows' normalised output as f32 into partial_o and their
// (max in natural-log units, sum) into partial_ml, at [split][token][head] (plane: tokens x
// heads per split), the simt kernel's partial layout, for attention_combine_kernel. m is in
// base-2 scaled units (online_softmax_tile), so times ln 2.
template <int D>
__device__ __forceinline__ void store_partial_rows(float* partial_o, float* partial_ml,
                                                   int64_t plane, int split, int64_t first_token,
                                                   int hq, int h, int row_lo, int rows,
                                                   const float (&o)[D / 8][4], const float (&m)[2],
                                                   const float (&l)[2], int tq) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const float sum = quad_sum(l[hf]);
    const int row = row_lo + 8 * hf;
    if (row >= rows) continue;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    const int64_t at = split * plane + (first_token + row) * static_cast<int64_t>(hq) + h;
    float* dst = partial_o + at * D;
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<float2*>(dst + i * 8 + 2 * tq) =
          make_float2(o[i][2 * hf] * inv, o[i][2 * hf + 1] * inv);
    if (tq == 0) {
      partial_ml[at * 2] = sum > 0.0f ? m[hf] * 0.6931471805599453f : -FLT_MAX;
      partial_ml[at * 2 + 1] = sum;
    }
  }
}

}  // namespace
}  // namespace bf::cuda
