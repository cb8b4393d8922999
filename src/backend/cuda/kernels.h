// Launchers of the CUDA backend's kernels (defined in the kernels_*.cu files), callable from
// plain C++. Pointers are device pointers; `dt` arguments are DT codes (cuda_common.h).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_common.h"

namespace bf::cuda {

// One sequence of a forward batch as the kernels see it.
struct SeqInfo {
  int32_t query_start, query_len, num_computed, state_slot;
  int32_t table_offset;     // into DeviceBatch::block_tables
  int32_t num_blocks;       // entries of its block table
  int32_t snapshot_offset;  // into DeviceBatch::snapshots, -1 when not a verify block
  int32_t pad;
};

// The batch metadata on the device (uploaded once per forward batch).
struct DeviceBatch {
  const int32_t* positions = nullptr;     // [num_tokens]
  const int32_t* slot_mapping = nullptr;  // [num_tokens]
  const int32_t* token_seq = nullptr;     // [num_tokens] sequence of each row, -1 for none
  const SeqInfo* seqs = nullptr;          // [num_seqs]
  const int32_t* block_tables = nullptr;  // concatenated block tables
  const int32_t* snapshots = nullptr;     // concatenated snapshot slot lists
  int32_t num_tokens = 0, num_seqs = 0;
  int32_t max_query_len = 0, max_kv_len = 0;
  bool any_snapshots = false;
  // Graph replays: the batch's max kv length, read on the device (max_kv_len is then only
  // the bound the graph was recorded for); null when eager.
  const int32_t* live_max_kv_len = nullptr;
};

#if defined(__CUDACC__)
#define BF_HOST_DEVICE __host__ __device__
#else
#define BF_HOST_DEVICE
#endif

// Split-KV layout of decode attention (FlashDecoding): split the keys when the grid of `work`
// blocks would be too small to fill `sms` SMs and the context is longer than one split (64
// keys: a block's warps walk their keys one latency-bound step after another, so at batch 1
// short splits over many blocks beat long ones; 256-key splits made a 1024-token step of the
// 27B model's attention 67 us). At most 4 blocks per SM and 128 splits. One function on the
// host (eager) and on the device (graph replays, where the context length changes between
// replays of one recorded grid), so both give the same layout and the same result.
constexpr int kDecodeMinSplitLen = 64;
constexpr int kDecodeMaxSplits = 128;  // the combine kernel keeps one weight per split
struct SplitLayout {
  int num_splits = 1, split_len = 0;
};
// The shortest split: 16 keys when even 64-key splits would leave most SMs idle (at most
// sms / 32 (token, KV head) blocks: batch 1 of models with 2-4 KV heads, batch 2 with 2), else
// 64. On the H200 at 1k context, whole decode steps in graphs (bench/NOTES.md): 35B-A3B (2 KV
// heads) batch 1 3.12 / 3.13 ms with 16-key splits vs 3.20 / 3.18 with 64 (one call) and
// 3.09 / 3.10 vs 3.11 / 3.15 (another); 27B (4 KV heads) batch 1 equal, batch 2 16.04 vs 15.63
// (8 blocks: slower, hence the bound), 35B-A3B batch 8 slower with 16.
// `forced` (BLOCKFLASH_DECODE_SPLIT_LEN=16|32|64) overrides it.
BF_HOST_DEVICE inline int decode_min_split_len(int64_t work, int sms, int forced) {
  if (forced > 0) return forced;
  return work * 32 <= sms ? 16 : kDecodeMinSplitLen;
}
BF_HOST_DEVICE inline int decode_max_splits(int64_t work, int sms, int max_kv_len,
                                            int forced_len = 0) {
  const int min_len = decode_min_split_len(work, sms, forced_len);
  if (work >= 2 * static_cast<int64_t>(sms) || max_kv_len <= min_len) return 1;
  const int64_t by_len = (max_kv_len + min_len - 1) / min_len;
  const int64_t per_work = 4 * static_cast<int64_t>(sms) / (work > 1 ? work : 1);
  int64_t splits = by_len < per_work ? by_len : per_work;
  if (splits < 1) splits = 1;
  return static_cast<int>(splits < kDecodeMaxSplits ? splits : kDecodeMaxSplits);
}
BF_HOST_DEVICE inline SplitLayout decode_split_layout(int64_t work, int sms, int max_kv_len,
                                                      int forced_len = 0) {
  const int min_len = decode_min_split_len(work, sms, forced_len);
  SplitLayout l;
  l.num_splits = decode_max_splits(work, sms, max_kv_len, forced_len);
  if (l.num_splits > 1) {
    // Splits aligned to min_len; the last may then be unused, so recount.
    l.split_len =
        ((max_kv_len + l.num_splits - 1) / l.num_splits + min_len - 1) / min_len * min_len;
    l.num_splits = (max_kv_len + l.split_len - 1) / l.split_len;
  }
  return l;
}

// --- dense (kernels_dense.cu) ---
void launch_embedding(const int32_t* ids, int64_t n, const void* table, int table_dt,
                      int64_t vocab, int64_t hidden, void* out, int out_dt, cudaStream_t s);
// residual (optional, same rows/dim): residual += x, then out = norm(residual).
void launch_rms_norm(const void* x, int x_dt, void* residual, int res_dt, const void* w, int w_dt,
                     int64_t rows, int64_t dim, float eps, bool one_centered, void* out,
                     int out_dt, cudaStream_t s);
void launch_gated_rms_norm(const void* o, int o_dt, const void* z, int z_dt, const void* w,
                           int w_dt, int64_t rows, int64_t dim, float eps, void* out, int out_dt,
                           cudaStream_t s);
void launch_rope(void* x, int dt, const int32_t* positions, int64_t tokens, int64_t heads,
                 int64_t head_dim, int32_t rotary_dim, float theta, cudaStream_t s);
// op: 0 out = silu(a)*b; 1 out = a*sigmoid(b); 2 out = a + b.
void launch_binary(int op, const void* a, int a_dt, const void* b, int b_dt, void* out,
                   int out_dt, int64_t n, cudaStream_t s);
void launch_slice_columns(const void* x, int x_dt, int64_t rows, int64_t cols, int64_t begin,
                          int64_t width, void* out, int out_dt, cudaStream_t s);
// Up to kMaxColumnParts consecutive column ranges of x [rows, cols], the first at begin[0]
// (0 for Backend::split_columns, the slice's start for slice_columns), each into its own
// [rows, width] tensor of dtype out_dt: one block per (row, part).
constexpr int kMaxColumnParts = 6;
struct ColumnParts {
  void* out[kMaxColumnParts] = {};
  int64_t begin[kMaxColumnParts + 1] = {};  // part i: columns [begin[i], begin[i + 1])
  int count = 0;
};
void launch_split_columns(const void* x, int x_dt, int64_t rows, int64_t cols,
                          const ColumnParts& parts, int out_dt, cudaStream_t s);
void launch_sigmoid_scale_rows(void* x, int x_dt, int64_t rows, int64_t cols, const void* gate,
                               int gate_dt, cudaStream_t s);

// --- Gated DeltaNet (kernels_gdn.cu, kernels_delta.cu) ---
void launch_causal_conv1d(const void* x, int x_dt, const void* w, int w_dt, int64_t conv_dim,
                          int64_t kernel, const DeviceBatch& b, float* conv_state, void* out,
                          int out_dt, cudaStream_t s);
void launch_gdn_gates(const void* a, int a_dt, const void* bb, int b_dt, const void* A_log,
                      int A_dt, const void* dt_bias, int dtb_dt, int64_t tokens, int64_t hv,
                      void* g, int g_dt, void* beta, int beta_dt, cudaStream_t s);
struct DeltaArgs {
  const void* q; const void* k; const void* v; const void* g; const void* beta;
  int q_dt, k_dt, v_dt, g_dt, beta_dt;
  int hk, hv, dk, dv;
  float* state;  // [num_slots, hv, dk, dv]
  void* out; int out_dt;
  // Sequences without snapshots and with at least this many tokens are the chunked kernel's;
  // the recurrent kernel skips them (the default leaves every sequence to it).
  int chunk_min_len = 1 << 30;
};
void launch_delta_rule_recurrent(const DeltaArgs& a, const DeviceBatch& b, cudaStream_t s);

// The Gated DeltaNet layer core for single-token decodes in one kernel (kernels_gdn_fused.cu):
// conv1d + SiLU of the q|k|v columns of `projected` ([T, proj_cols], per row
// [q | k | v | z | b | a]), the gates, the recurrent delta rule and the gated RMSNorm with z.
// out: [T, hv * dv]. dk = dv = 128 and at most 8 value heads per key head.
struct GdnDecodeArgs {
  const void* projected; int proj_dt; int64_t proj_cols;
  const void* conv_weight; int conv_w_dt; int kernel;  // [conv_dim, kernel]
  const void* A_log; int A_log_dt; const void* dt_bias; int dt_bias_dt;
  const void* norm_weight; int norm_dt; float eps;
  int hk, hv;
  int64_t key_dim, value_dim, conv_dim;                 // hk dk, hv dv, 2 key_dim + value_dim
  float* conv_state;                                    // [num_slots, conv_dim, kernel - 1]
  float* recurrent_state;                               // [num_slots, hv, dk, dv]
  void* out; int out_dt;
  // Counters, zero between launches: at least num_seqs * hk of them when hv > hk (the last
  // block of each key head's group writes its q/k conv state).
  unsigned* counters = nullptr; int64_t num_counters = 0;
  // Blocks per (sequence, value head): 1, 2 or 4 (a cluster sharing the head's columns), or 0
  // for gdn_decode_split's choice on num_sms SMs.
  int split = 1, num_sms = 132;
};
// The fused decode's blocks per (sequence, value head): `forced` when set, else the most of
// 4 and 2 whose grid still has a block per SM (35B-A3B's 32 value heads: 4 at batch 1, 2 at
// batch 2; the 27B's 48: 2 at batch 1), else 1.
int gdn_decode_split(int64_t seqs, int hv, int sms, int forced = 0);
bool gdn_decode_fused_supported(int dk, int dv, int hk, int hv, int kernel);
void launch_gdn_decode_fused(const GdnDecodeArgs& a, const DeviceBatch& b, cudaStream_t s);
// Chunked form (kernels_delta_chunked.cu, mma.sync TF32, sm_80+): the sequences the recurrent
// kernel skips; dk 16/32/64/128, any dv. scratch: f32, delta_chunked_scratch_floats(T, hv).
void launch_delta_rule_chunked(const DeltaArgs& a, const DeviceBatch& b, float* scratch,
                               cudaStream_t s);
int64_t delta_chunked_scratch_floats(int64_t tokens, int hv);
size_t delta_chunked_smem_bytes(int dk);
// Sequences of at least this many tokens take the chunked kernel when it is selected; forcing
// gdn-chunked lowers it to 2. bench_cuda gdn (H200, B=8, Qwen3.5-27B heads): 16 tokens
// recurrent 0.080 ms vs chunked 0.098, 32 tokens 0.143 vs 0.107 (bench/RESULTS.md).
constexpr int kDeltaChunkMinLen = 32;

// --- attention (kernels_attention.cu) ---
// prepare_attention_inputs (kernels_attention_prep.cu).
struct AttentionPrepArgs {
  const void* q_and_gate = nullptr;  // [T*hq, 2*hd], per head [q | gate]
  const void* k_raw = nullptr;       // [T*hkv, hd]
  const void* v = nullptr;           // [T, hkv, hd]
  const void* q_norm = nullptr;      // [hd], one-centred weights
  const void* k_norm = nullptr;
  void* q_out = nullptr;             // [T, hq, hd]
  void* cache_k = nullptr;           // [num_blocks, block_size, hkv, hd]
  void* cache_v = nullptr;
  int q_dt = 0, k_dt = 0, v_dt = 0, w_dt = 0, q_out_dt = 0, cache_dt = 0;
  int hq = 0, hkv = 0, hd = 0, rotary_dim = 0;
  float eps = 1e-6f, theta = 10000.0f;
};
void launch_attention_prep(const AttentionPrepArgs& a, const DeviceBatch& b, cudaStream_t s);
void launch_kv_write(const void* k, int k_dt, const void* v, int v_dt, const DeviceBatch& b,
                     int64_t row, int64_t num_slots, void* cache_k, void* cache_v, int cache_dt,
                     cudaStream_t s);
struct AttnArgs {
  const void* q; void* out;       // [T, hq, hd]
  const void* k_cache; const void* v_cache;  // [blocks, block_size, hkv, hd]
  int dt = kDtBF16;               // element type of q, out and the cache (bf16 or f32)
  int hq, hkv, hd, block_size;
  float scale; bool causal; int sliding_window;
  // SIMT kernel: skip rows of sequences with query_len >= this (the flash kernel takes them).
  int simt_skip_query_len = 1 << 30;
  float* partial_o = nullptr;     // split-KV scratch [splits, T, hq, hd]
  float* partial_ml = nullptr;    // [splits, T, hq, 2]
  int num_splits = 1, split_len = 0;
  // With DeviceBatch::live_max_kv_len: num_splits is the grid's (the most splits any replay
  // may use) and each block recomputes decode_split_layout(split_work, split_sms, live length).
  int64_t split_work = 0;
  int split_sms = 0;
  int forced_split_len = 0;  // BLOCKFLASH_DECODE_SPLIT_LEN; 0: decode_min_split_len chooses
  // Optional output gate (Backend::paged_attention_gated), SIMT kernel and combine only: each
  // output row r = t * hq + h is stored rounded to dt, then times sigmoid(gate[r * gate_stride
  // + d]) (gate of type dt), as a separate sigmoid_mul would.
  const void* gate = nullptr;
  int64_t gate_stride = 0;
  // flash-wgmma split-KV (verify blocks and other short query runs over a long context, where
  // items x heads leave most SMs idle): each item's keys in flash_splits ranges of
  // flash_split_len (a multiple of its 64-key tile), partials in flash_partial_o / _ml (the
  // simt partials' layout, their own buffers), merged by the combine kernel.
  int flash_splits = 1, flash_split_len = 0;
  float* flash_partial_o = nullptr;   // [flash_splits, T, hq, hd]
  float* flash_partial_ml = nullptr;  // [flash_splits, T, hq, 2]
  // Single-token decodes with the inputs' preparation folded in (fused_gated_attention; SIMT
  // kernel, hq / hkv <= 8; q unused): each block normalises, rotates and scales its heads' q
  // from prep.q_and_gate itself, and the block whose key range holds the token's own position
  // first writes that token's k and v into the cache, as prepare_attention_inputs does.
  bool fold_prep = false;
  AttentionPrepArgs prep;
};
// out[m, n] = x[m, k] · w[n, k]ᵀ, warp per output element (shapes cuBLASLt declines).
void launch_matmul_simt(const void* x, int x_dt, const void* w, int w_dt, void* out, int out_dt,
                        int64_t m, int64_t n, int64_t k, cudaStream_t s);
// Skinny bf16 GEMM for m <= 8 (kernels_gemv.cu); x and w 16-byte aligned, k % 8 == 0.
// `config` picks rows per warp and column slices (0 .. gemv_num_configs()-1; every one gives
// the op's result, the backend keeps the fastest per shape; 0 is always useful).
bool gemv_supported(int64_t m, int64_t k, const void* x, const void* w, int max_smem);
int gemv_num_configs();
bool gemv_config_useful(int config, int64_t n, int64_t k);
int gemv_config_rows(int config);    // R: w rows per warp
int gemv_config_splits(int config);  // column slices
bool gemv_config_deep(int config);  // twice the loads in flight per lane
// gated: x is [m, 2k] (gate | up) and the product is with silu(gate) ⊙ up (bf16-rounded).
void launch_gemv(const void* x, const void* w, void* out, int out_dt, int64_t m, int64_t n,
                 int64_t k, int config, cudaStream_t s, bool gated = false);
// Skinny bf16 GEMM on Hopper tensor cores for 1..kSkinnyMaxRows rows (kernels_skinny.cu,
// sm_90a only: callers check DeviceCaps::wgmma); x and w 16-byte aligned, k % 8 == 0. `config`
// picks the split of k (0: none; every useful one gives the op's result, the backend keeps
// the fastest per shape). A split configuration needs skinny_wgmma_workspace_bytes of
// f32 workspace and one zeroed counter per 64 rows of w (re-armed by the kernel).
constexpr int64_t kSkinnyMaxRows = 32;
bool skinny_wgmma_supported(int64_t m, int64_t n, int64_t k, const void* x, const void* w);
int skinny_wgmma_num_configs();
bool skinny_wgmma_config_useful(int config, int64_t m, int64_t n, int64_t k,
                                size_t workspace_bytes, int64_t counters);
size_t skinny_wgmma_workspace_bytes(int config, int64_t m, int64_t n, int64_t k);
void launch_skinny_wgmma(const void* x, const void* w, void* out, int out_dt, int64_t m,
                         int64_t n, int64_t k, int config, float* workspace, unsigned* counters,
                         cudaStream_t s);
// Portable SIMT kernel (any sm): warps over keys, online softmax, optional split-KV.
void launch_attention_simt(const AttnArgs& a, const DeviceBatch& b, cudaStream_t s);
// Merges split-KV partials into out: the simt kernel's (a.num_splits) and flash-wgmma's
// (a.flash_splits, rows of sequences with at least a.simt_skip_query_len queries).
// launch_attention_simt runs it itself when either has splits.
void launch_attention_combine(const AttnArgs& a, const DeviceBatch& b, cudaStream_t s);

// FlashAttention-2-style mma.sync kernel (bf16, sm_80+) for sequences with many queries.
// items: (sequence index, first query row) per tile of tile_rows queries; tile_rows is
// flash_mma_tile_rows(): pinned_rows (64 or 128; 0: the fastest measured, 128 at head_dim <=
// 128, 64 at 256) where the device's shared memory per block allows, else 64. The cache's
// block_size must be a power of two and the scale positive.
int flash_mma_tile_rows(int head_dim, size_t smem_per_block, int pinned_rows);
size_t flash_mma_smem_bytes(int head_dim, int tile_rows);
void launch_attention_flash_mma(const AttnArgs& a, const DeviceBatch& b, const int2* items,
                                int num_items, int tile_rows, cudaStream_t s);
constexpr int kFlashMinQueryLen = 16;  // sequences with at least this many queries use it

// flash-wgmma's key splits: a verify block (16 queries) of one sequence is one 128-row item per
// head, 24 blocks at the 27B's shape, each walking the whole context alone (~53 us at 1k keys
// on an H100, bench/NOTES.md). When `blocks` (items x heads) leave SMs idle, the keys of the
// longest flash sequence (max_kv_len) split into ranges of whole 64-key tiles, at least two
// per range, so the grid about fills `sms`; `forced` > 0 pins the count (clamped to the tiles).
// No trailing split is empty: (num_splits - 1) * split_len < max_kv_len.
constexpr int kFlashSplitTile = 64;
inline SplitLayout flash_split_layout(int64_t blocks, int sms, int max_kv_len, int forced = 0) {
  constexpr int kMinTilesPerSplit = 2;
  const int tiles = (max_kv_len + kFlashSplitTile - 1) / kFlashSplitTile;
  int64_t splits = 1;
  if (forced > 0)
    splits = forced;
  else if (blocks > 0 && blocks < sms)
    splits = std::min<int64_t>((sms + blocks - 1) / blocks, tiles / kMinTilesPerSplit);
  splits = std::clamp<int64_t>(std::min<int64_t>(splits, tiles), 1, kDecodeMaxSplits);
  SplitLayout l;
  if (splits <= 1) return l;
  l.split_len = static_cast<int>((tiles + splits - 1) / splits) * kFlashSplitTile;
  l.num_splits = (max_kv_len + l.split_len - 1) / l.split_len;
  if (l.num_splits <= 1) l = SplitLayout{};
  return l;
}

// Hopper wgmma kernel (kernels_flash_wgmma.cu), head_dim 256, same items and contract as
// flash-mma with tiles of kFlashWgmmaRows queries. flash_wgmma_compiled(): this binary holds
// its sm_90a code for the current device (false on other GPUs and on builds without 90a).
constexpr int kFlashWgmmaRows = 128;
bool flash_wgmma_compiled();
size_t flash_wgmma_smem_bytes();
void launch_attention_flash_wgmma(const AttnArgs& a, const DeviceBatch& b, const int2* items,
                                  int num_items, cudaStream_t s);

// --- MoE (kernels_moe.cu) ---
// logits: f32 [T, E]. Writes top-k ids and renormalised weights [T, k].
void launch_moe_route(const float* logits, int64_t tokens, int64_t experts, int top_k,
                      int32_t* ids, float* weights, cudaStream_t s);
// act[t, k, :] = silu(gate_e x_t) * up_e x_t  (f32 [T, k, I])
void launch_moe_gate_up(const void* x, int x_dt, const void* gate_up, int w_dt, int64_t tokens,
                        int64_t hidden, int64_t inter, int top_k, const int32_t* ids, float* act,
                        cudaStream_t s);
// out[t, :] = sum_k w_k down_e act[t, k]
void launch_moe_down(const float* act, const void* down, int w_dt, int64_t tokens, int64_t hidden,
                     int64_t inter, int top_k, const int32_t* ids, const float* weights,
                     void* out, int out_dt, cudaStream_t s);

// The fused decode path of the whole sparse MoE block (bf16 x and weights): router and
// shared-gate logits, top-k routing, gate|up + SiLU for each (token, routed expert) and the
// shared expert, then all down projections weighted by the routing weights (the shared one by
// sigmoid(shared gate · x)) and summed into out. Three kernels, launched with PDL.
constexpr int64_t kMoeDecodeMaxTokens = 64;
struct MoeDecodeArgs {
  const __nv_bfloat16* x;  // [T, H]
  int64_t tokens, hidden;
  const __nv_bfloat16* router;   // [E, H]
  const __nv_bfloat16* gate_up;  // [E, 2I, H] (gate rows first)
  const __nv_bfloat16* down;     // [E, H, I]
  int64_t experts, inter;
  int top_k;
  // The shared expert (all null without one): [2Is, H], [H, Is], [1, H].
  const __nv_bfloat16* shared_gate_up;
  const __nv_bfloat16* shared_down;
  const __nv_bfloat16* shared_gate;
  int64_t shared_inter;
  // Scratch (device): logits [T, E + 1]; ids [T, top_k]; weights [T, slots] (routing weights,
  // then the shared expert's sigmoid gate); act [T, slots, act_stride >= max(I, Is)];
  // counter: one zeroed unsigned, left zero.
  float* logits;
  int32_t* ids;
  float* weights;
  float* act;
  int64_t act_stride;
  unsigned* counter;
  void* out;  // [T, H]
  int out_dt;
  // Optional (null without): the residual add and RMSNorm in front of the block, folded into
  // the router kernel. Every router block normalises norm_residual + norm_addend itself (as
  // launch_rms_norm does, one-centred or not); the last one writes the sums back to
  // norm_residual and the normalised rows to norm_out (the buffer x points at) for the kernels
  // after it. Saves the norm's own launch, a serial latency step at batch 1.
  __nv_bfloat16* norm_residual;
  const __nv_bfloat16* norm_addend;
  const void* norm_weight;
  int norm_weight_dt;
  float norm_eps;
  bool norm_one_centered;
  __nv_bfloat16* norm_out;
};
bool moe_decode_fused_supported(const MoeDecodeArgs& a);

// Pulls up to kL2PrefetchRanges device ranges into L2 (prefetch.global.L2 per 128-byte line,
// nothing read into registers): CudaBackend::prefetch_weights' side-stream kernel.
constexpr int kL2PrefetchRanges = 6;
struct L2PrefetchRanges {
  const void* ptr[kL2PrefetchRanges];
  int64_t bytes[kL2PrefetchRanges];
  int count;
};
void launch_l2_prefetch(const L2PrefetchRanges& r, cudaStream_t s);
void launch_moe_decode_fused(const MoeDecodeArgs& a, cudaStream_t s);

// Grouped MoE helpers: act[r, :] = silu(gu[r, :I]) * gu[r, I:]; out[t] = Σ_k w · y[pos[t, k]].
void launch_swiglu_packed(const void* gu, int gu_dt, int64_t rows, int64_t inter, void* act,
                          int act_dt, cudaStream_t s);
void launch_moe_combine(const void* y, int y_dt, const int32_t* pos, const float* w,
                        int64_t tokens, int64_t hidden, int top_k, void* out, int out_dt,
                        cudaStream_t s);

}  // namespace bf::cuda

namespace bf::cuda {
// Uniform [-scale, scale) from a counter-based hash of (seed, index).
void launch_fill_uniform(void* p, int dt, int64_t n, float scale, uint64_t seed, cudaStream_t s);
}  // namespace bf::cuda
