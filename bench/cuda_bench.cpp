// bench_cuda: GPU benchmarks of the CUDA backend, printed as table rows with their roofline.
//   bench_cuda copy                       device-to-device copy bandwidth (the roofline's GB/s)
//   bench_cuda gemm                       decode-sized GEMMs: the gemv kernel vs cuBLASLt
//   bench_cuda skinny                     8-32 rows: the tensor-core skinny GEMM vs cuBLASLt
//   bench_cuda gdn                        the gated delta rule at Qwen3.5-27B head shapes
//   bench_cuda attention                  paged attention prefill (4k/16k, hd 128/256) and
//                                         split-KV decode (8k/32k) through the Backend API
//   bench_cuda sample                     one sampling step at vocab 248320, batch 1/8/32:
//                                         Backend::sample_rows on the device vs the old path
//                                         (rows copied to the host + sample_token per row)
//   bench_cuda model CONFIG.json [B...]   decode steps at batch sizes B (context 1024) and a
//                                         prefill of 2048 tokens, random weights on the GPU,
//                                         the layers of src/model driven as Model::forward does;
//                                         each decode step eager and as a replayed CUDA graph
//                                         (recorded for block tables of 256k-token contexts)
//                                         BENCH_PROFILE=1: instead, one eager decode step per B
//                                         after warm-up, between cudaProfilerStart/Stop (for
//                                         `ncu --profile-from-start off`: per-kernel times);
//                                         BENCH_SKIP_PREFILL=1: decode steps only;
//                                         then one layer of each kind (full layer tokens/s)
// Times: median of N runs, each between device synchronisations (host clock).
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <cstdlib>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels.h"
#include "engine/sampler.h"
#include "model/config.h"
#include "model/layers.h"
#include "model/model.h"

using namespace bf;

namespace {

double median_ms(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cuda_synchronize();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    cuda_synchronize();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Per-launch ms of `reps` launches back to back between two synchronisations (median of
// `samples`): the host's sync overhead (~10 us) spread over the launches, for kernels of tens
// of microseconds that the launch rate keeps fed.
double back_to_back_ms(const std::function<void()>& fn, int reps, int samples) {
  return median_ms(
             [&] {
               for (int i = 0; i < reps; ++i) fn();
             },
             1, samples) /
         reps;
}

double copy_bandwidth_gbs() {
  const size_t bytes = size_t{2} << 30;
  void *a = nullptr, *b = nullptr;
  cudaMalloc(&a, bytes);
  cudaMalloc(&b, bytes);
  cudaMemset(a, 1, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (i >= 2) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;  // read + write
}

void fill(Tensor& t, float scale, uint64_t& seed) { cuda_fill_uniform(t, scale, seed++); }

ForwardBatch batch_for(const std::vector<std::pair<int32_t, int32_t>>& seqs /*computed, new*/,
                       int32_t block_size, int32_t& blocks_used) {
  ForwardBatch b;
  int32_t next = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    auto [computed, len] = seqs[s];
    BatchSequence seq;
    seq.query_start = b.num_tokens();
    seq.query_len = len;
    seq.num_computed = computed;
    seq.state_slot = static_cast<int32_t>(s);
    const int32_t need = (computed + len + block_size - 1) / block_size;
    for (int32_t i = 0; i < need; ++i) seq.block_table.push_back(next++);
    for (int32_t i = 0; i < len; ++i) {
      const int32_t p = computed + i;
      b.token_ids.push_back(1 + (p % 1000));
      b.positions.push_back(p);
      b.slot_mapping.push_back(seq.block_table[p / block_size] * block_size + p % block_size);
    }
    b.logits_rows.push_back(seq.query_start + len - 1);
    b.seqs.push_back(seq);
  }
  blocks_used = next;
  return b;
}

int bench_attention(double bw) {
  // BLOCKFLASH_FLASH_TILE=64|128 pins the flash query tile; the table says which ran.
  const char* ft = std::getenv("BLOCKFLASH_FLASH_TILE");
  std::printf("flash-mma tile: %s\n", ft ? ft : "default (hd <= 128: 128 rows, hd 256: 64)");
  auto be = make_cuda_backend();
  uint64_t seed = 1;
  std::printf("| case | hq/hkv | hd | tokens | ctx | ms | TFLOP/s | GB/s | of copy roofline |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  struct Shape { int hq, hkv, hd; };
  for (Shape s : {Shape{32, 8, 128}, Shape{24, 4, 256}}) {
    for (int T : {4096, 16384}) {
      int32_t blocks = 0;
      ForwardBatch b = batch_for({{0, T}}, 16, blocks);
      KvCache cache{be->empty({blocks, 16, s.hkv, s.hd}), be->empty({blocks, 16, s.hkv, s.hd})};
      fill(cache.k, 1.0f, seed);
      fill(cache.v, 1.0f, seed);
      Tensor q = be->empty({T, s.hq, s.hd}), out = be->empty({T, s.hq, s.hd});
      fill(q, 1.0f, seed);
      AttentionParams p{.scale = 1.0f / std::sqrt(float(s.hd)), .causal = true};
      double ms = median_ms([&] { be->paged_attention(q, cache, b, p, out); }, 1, 3);
      double flops = 4.0 * s.hq * s.hd * (double(T) * (T + 1) / 2);
      std::printf("| prefill causal | %d/%d | %d | %d | 0 | %.3f | %.1f | - | - |\n", s.hq, s.hkv,
                  s.hd, T, ms, flops / (ms * 1e-3) / 1e12);
    }
    for (int ctx : {8192, 32768}) {
      for (int B : {1, 16}) {
        std::vector<std::pair<int32_t, int32_t>> seqs(B, {ctx - 1, 1});
        int32_t blocks = 0;
        ForwardBatch b = batch_for(seqs, 16, blocks);
        KvCache cache{be->empty({blocks, 16, s.hkv, s.hd}), be->empty({blocks, 16, s.hkv, s.hd})};
        fill(cache.k, 1.0f, seed);
        fill(cache.v, 1.0f, seed);
        Tensor q = be->empty({B, s.hq, s.hd}), out = be->empty({B, s.hq, s.hd});
        fill(q, 1.0f, seed);
        AttentionParams p{.scale = 1.0f / std::sqrt(float(s.hd)), .causal = true};
        double ms = median_ms([&] { be->paged_attention(q, cache, b, p, out); }, 2, 10);
        double bytes = double(B) * ctx * s.hkv * s.hd * 2 * 2;
        double gbs = bytes / (ms * 1e-3) / 1e9;
        std::printf("| decode split-KV B=%d | %d/%d | %d | %d | %d | %.3f | - | %.0f | %.0f%% |\n", B,
                    s.hq, s.hkv, s.hd, B, ctx, ms, gbs, 100 * gbs / bw);
      }
    }
  }
  return 0;
}

// Decode-sized GEMMs of Qwen3.5-27B: the gemv kernel vs cuBLASLt (BLOCKFLASH_GEMV pinned).
int bench_gemm(double bw) {
  setenv("BLOCKFLASH_GEMV", "always", 1);
  auto gemv = make_cuda_backend();
  setenv("BLOCKFLASH_GEMV", "never", 1);
  auto lt = make_cuda_backend();
  unsetenv("BLOCKFLASH_GEMV");
  uint64_t seed = 3;
  std::printf("| shape [M, K] x [N, K]^T | gemv us | gemv GB/s | cuBLASLt us | cuBLASLt GB/s | of copy roofline (best) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (auto [n, k] : {std::pair{10240, 5120}, {17408, 5120}, {5120, 17408}, {248320, 5120}}) {
    for (int m : {1, 4, 8}) {
      Tensor w = gemv->empty({n, k}, DType::kBF16), x = gemv->empty({m, k}, DType::kBF16);
      Tensor out = gemv->empty({m, n}, DType::kBF16);
      fill(w, 0.05f, seed);
      fill(x, 1.0f, seed);
      double t_g = -1, t_l;
      if (size_t(m) * k * 2 <= 200 * 1024) t_g = median_ms([&] { gemv->matmul(x, w, out); }, 3, 20);
      t_l = median_ms([&] { lt->matmul(x, w, out); }, 3, 20);
      double bytes = double(n) * k * 2 + double(m) * (k + n) * 2;
      double best = t_g > 0 ? std::min(t_g, t_l) : t_l;
      std::printf("| [%d, %d] x [%d, %d] | %s | %s | %.1f | %.0f | %.0f%% |\n", m, k, n, k,
                  t_g > 0 ? std::to_string(int(t_g * 1e3)).c_str() : "-",
                  t_g > 0 ? std::to_string(int(bytes / (t_g * 1e-3) / 1e9)).c_str() : "-", t_l * 1e3,
                  bytes / (t_l * 1e-3) / 1e9, 100 * bytes / (best * 1e-3) / 1e9 / bw);
    }
  }
  return 0;
}

// The tensor-core skinny GEMM (Hopper) against cuBLASLt at decode and verify row counts
// (16 rows: a DFlash verify block of one sequence) on the 27B's and the 35B-A3B's projection
// shapes; each split configuration pinned in its own backend, the fastest shown. Times per
// launch of 20 back to back (each skinny launch a programmatic dependent of the one before).
int bench_skinny(double bw) {
  if (!query_cuda_device(0).wgmma) {
    std::printf("skinny: no sm_90a device\n");
    return 0;
  }
  setenv("BLOCKFLASH_SKINNY", "never", 1);
  auto lt = make_cuda_backend();
  std::vector<std::unique_ptr<Backend>> pinned;
  setenv("BLOCKFLASH_SKINNY", "always", 1);
  for (int c = 0; c < cuda::skinny_wgmma_num_configs(); ++c) {
    setenv("BLOCKFLASH_SKINNY_CONFIG", std::to_string(c).c_str(), 1);
    pinned.push_back(make_cuda_backend());
  }
  unsetenv("BLOCKFLASH_SKINNY");
  unsetenv("BLOCKFLASH_SKINNY_CONFIG");
  uint64_t seed = 7;
  std::printf("| shape [M, K] x [N, K]^T | cuBLASLt us | GB/s | skinny us (config) | GB/s | "
              "skinny / cuBLASLt | of copy roofline (skinny) |\n|---|---|---|---|---|---|---|\n");
  for (auto [n, k] : {std::pair{10240, 5120}, {17408, 5120}, {5120, 17408}, {5120, 6144},
                      {1024, 5120}, {248320, 5120}, {12288, 2048}, {2048, 4096}, {9216, 2048}}) {
    for (int m : {8, 16, 32}) {
      Tensor w = lt->empty({n, k}, DType::kBF16), x = lt->empty({m, k}, DType::kBF16);
      Tensor out = lt->empty({m, n}, DType::kBF16);
      fill(w, 0.05f, seed);
      fill(x, 1.0f, seed);
      const double t_l = back_to_back_ms([&] { lt->matmul(x, w, out); }, 20, 5);
      double t_s = -1;
      int best = -1;
      for (int c = 0; c < cuda::skinny_wgmma_num_configs(); ++c) {
        if (!cuda::skinny_wgmma_config_useful(c, m, n, k, size_t{16} << 20, int64_t{1} << 16))
          continue;
        const double t = back_to_back_ms([&] { pinned[c]->matmul(x, w, out); }, 20, 5);
        if (best < 0 || t < t_s) best = c, t_s = t;
      }
      const double bytes = double(n) * k * 2 + double(m) * (k + n) * 2;
      std::printf("| [%d, %d] x [%d, %d] | %.1f | %.0f | %.1f (%d) | %.0f | %.2f | %.0f%% |\n", m,
                  k, n, k, t_l * 1e3, bytes / (t_l * 1e-3) / 1e9, t_s * 1e3, best,
                  bytes / (t_s * 1e-3) / 1e9, t_s / t_l, 100 * bytes / (t_s * 1e-3) / 1e9 / bw);
    }
  }
  return 0;
}

// The gated delta rule alone at Qwen3.5-27B shapes (Hk 16, Hv 48, dk = dv = 128): the
// recurrent and the chunked kernel (each forced) and the automatic choice, on the same inputs.
int bench_gdn(double bw) {
  std::unique_ptr<Backend> backends[] = {
      make_cuda_backend(CudaBackendOptions{.attention_backend = "gdn-recurrent"}),
      make_cuda_backend(CudaBackendOptions{.attention_backend = "gdn-chunked"}),
      make_cuda_backend()};
  Backend& be = *backends[2];
  uint64_t seed = 5;
  GdnDims dims{.num_k_heads = 16, .num_v_heads = 48, .k_head_dim = 128, .v_head_dim = 128};
  std::printf("| case | tokens | recurrent ms | chunked ms | auto ms | auto tokens/s | "
              "recurrent / auto |\n|---|---|---|---|---|---|---|\n");
  for (auto [B, L] : {std::pair{1, 4096}, {8, 512}, {1, 1024}, {8, 64}, {8, 32}, {8, 16},
                      {8, 8}, {8, 4}, {1, 1}, {32, 1}}) {
    std::vector<std::pair<int32_t, int32_t>> seqs(B, {L == 1 ? 100 : 0, L});
    int32_t used = 0;
    ForwardBatch b = batch_for(seqs, 16, used);
    const int T = b.num_tokens();
    Tensor q = be.empty({T, 16, 128}), k = be.empty({T, 16, 128}), v = be.empty({T, 48, 128});
    Tensor g = be.empty({T, 48}), beta = be.empty({T, 48}), out = be.empty({T, 48, 128});
    Tensor state = be.empty({B, 48, 128, 128}, DType::kF32);
    for (Tensor* t : {&q, &k, &v, &state}) fill(*t, 0.5f, seed);
    fill(g, 0.5f, seed);
    fill(beta, 0.5f, seed);
    double ms[3];
    for (int i = 0; i < 3; ++i)
      ms[i] = median_ms([&] { backends[i]->gated_delta_rule(q, k, v, g, beta, dims, b, state, out); },
                        2, 11);
    std::printf("| %s B=%d x %d | %d | %.3f | %.3f | %.3f | %.0f | %.2fx |\n",
                L > 1 ? "prefill" : "decode", B, L, T, ms[0], ms[1], ms[2], T / (ms[2] * 1e-3),
                ms[0] / ms[2]);
  }
  (void)bw;
  return 0;
}

// One sampling step: logits [B, 248320] bf16 on the device (a model-like row: normal bulk and a
// few strong candidates), to tokens (+ logprobs) on the host.
int bench_sample() {
  auto be = make_cuda_backend();
  const int vocab = 248320;
  struct Case {
    const char* name;
    RowSampling row;
  };
  const Case cases[] = {
      {"T 0.8, top_k 50, top_p 0.95", {.temperature = 0.8f, .top_k = 50, .top_p = 0.95f}},
      {"T 1 (no truncation)", {.temperature = 1.0f}},
      {"T 0.7, top_p 0.9, min_p 0.05, 5 logprobs",
       {.temperature = 0.7f, .top_p = 0.9f, .min_p = 0.05f, .num_logprobs = 5}},
  };
  std::printf("| params | batch | device sample_rows ms | host path ms (copy + sample_token) | "
              "speed-up |\n|---|---|---|---|---|\n");
  std::mt19937 rng(1);
  for (const Case& c : cases) {
    for (int B : {1, 8, 32}) {
      Tensor host = Tensor::empty({B, vocab});
      std::normal_distribution<float> bulk(0.0f, 2.5f);
      std::uniform_int_distribution<int> pick(0, vocab - 1);
      for (int64_t i = 0; i < host.numel(); ++i) host.f32()[i] = bulk(rng);
      for (int r = 0; r < B; ++r)
        for (int j = 0; j < 8; ++j) host.f32()[int64_t{r} * vocab + pick(rng)] += 4.0f + 1.5f * j;
      Tensor logits = be->empty({B, vocab}, DType::kBF16);
      cuda_copy_from_host(logits, host);
      std::vector<RowSampling> rows(B, c.row);
      for (int r = 0; r < B; ++r) {
        rows[r].seed = 100 + r;
        rows[r].position = 7;
      }
      const double device_ms = median_ms([&] { be->sample_rows(logits, rows); }, 3, 20);
      const double host_ms = median_ms(
          [&] {
            Tensor copy = be->to_host(logits);
            for (int r = 0; r < B; ++r)
              sample_token(std::span<const float>(copy.f32() + int64_t{r} * vocab, vocab),
                           sampling_params_of(rows[r]), {}, {}, {}, rows[r].seed,
                           rows[r].position);
          },
          1, 5);
      std::printf("| %s | %d | %.3f | %.3f | %.1fx |\n", c.name, B, device_ms, host_ms,
                  host_ms / device_ms);
    }
  }
  return 0;
}

// The layers of a Qwen3.5 model with random device weights.
struct Stack {
  ModelConfig c;
  Tensor embed, lm_head, final_norm;
  std::vector<Model::Layer> layers;
  size_t weight_bytes = 0, active_bytes = 0;  // all weights; weights one decode token reads
};

Tensor weight(Backend& be, Stack& st, Shape shape, uint64_t& seed, bool active = true) {
  Tensor t = be.empty(shape, shape.size() <= 1 ? DType::kF32 : DType::kBF16);
  const float scale = shape.size() <= 1 ? 0.1f : 1.0f / std::sqrt(float(shape.back()));
  fill(t, scale, seed);
  st.weight_bytes += t.size_bytes();
  if (active) st.active_bytes += t.size_bytes();
  return t;
}

Stack build(Backend& be, const ModelConfig& c) {
  Stack st;
  st.c = c;
  uint64_t seed = 7;
  const int64_t H = c.hidden_size;
  st.embed = weight(be, st, {c.vocab_size, H}, seed, false);
  st.lm_head = weight(be, st, {c.vocab_size, H}, seed);
  st.final_norm = weight(be, st, {H}, seed);
  int32_t kv = 0, gdn = 0;
  for (int32_t i = 0; i < c.num_hidden_layers; ++i) {
    Model::Layer l;
    l.type = c.layer_types[i];
    l.input_layernorm = weight(be, st, {H}, seed);
    l.post_attention_layernorm = weight(be, st, {H}, seed);
    if (l.type == LayerType::kLinearAttention) {
      l.cache_index = gdn++;
      auto& g = l.linear_attn;
      // qkv | z | b | a stacked, as GatedDeltaNet::load fuses them.
      g.in_proj = weight(
          be, st, {c.linear_conv_dim() + c.linear_value_dim() + 2 * c.linear_num_value_heads, H},
          seed);
      g.conv1d = weight(be, st, {c.linear_conv_dim(), c.linear_conv_kernel_dim}, seed);
      g.dt_bias = weight(be, st, {c.linear_num_value_heads}, seed);
      g.A_log = weight(be, st, {c.linear_num_value_heads}, seed);
      g.norm = weight(be, st, {c.linear_value_head_dim}, seed);
      g.out_proj = weight(be, st, {H, c.linear_value_dim()}, seed);
    } else {
      l.cache_index = kv++;
      auto& a = l.self_attn;
      const int64_t hq = c.num_attention_heads, hkv = c.num_key_value_heads, hd = c.head_dim;
      a.qkv_proj = weight(be, st, {hq * hd * 2 + 2 * hkv * hd, H}, seed);  // q | k | v
      a.o_proj = weight(be, st, {H, hq * hd}, seed);
      a.q_norm = weight(be, st, {hd}, seed);
      a.k_norm = weight(be, st, {hd}, seed);
    }
    auto& m = l.mlp;
    m.is_moe = c.is_moe;
    if (!c.is_moe) {
      m.gate_up_proj = weight(be, st, {2 * c.intermediate_size, H}, seed);
      m.down_proj = weight(be, st, {H, c.intermediate_size}, seed);
    } else {
      const int64_t E = c.num_experts, I = c.moe_intermediate_size;
      m.router = weight(be, st, {E, H}, seed);
      m.experts_gate_up = weight(be, st, {E, 2 * I, H}, seed, false);
      m.experts_down = weight(be, st, {E, H, I}, seed, false);
      st.active_bytes += (m.experts_gate_up.size_bytes() + m.experts_down.size_bytes()) /
                         E * c.num_experts_per_tok;
      m.has_shared_expert = c.shared_expert_intermediate_size > 0;
      if (m.has_shared_expert) {
        const int64_t S = c.shared_expert_intermediate_size;
        m.gate_up_proj = weight(be, st, {2 * S, H}, seed);
        m.down_proj = weight(be, st, {H, S}, seed);
        m.shared_expert_gate = weight(be, st, {1, H}, seed);
      }
    }
    st.layers.push_back(std::move(l));
  }
  return st;
}

void forward_layer(Backend& be, const Stack& st, size_t i, bool first, const ForwardBatch& batch,
                   ModelCache& cache, Tensor& residual, Tensor& normed, Tensor& block_out) {
  Model::forward_layer(be, st.c, st.layers[i], first, batch, cache, residual, normed, block_out);
}

// Model::forward's layer loop (without copying logits to the host).
void forward(Backend& be, const Stack& st, const ForwardBatch& batch, ModelCache& cache) {
  const ModelConfig& c = st.c;
  const int64_t T = batch.num_tokens();
  Tensor residual = be.empty({T, c.hidden_size});
  be.embedding(batch.token_ids, st.embed, residual);
  Tensor normed = be.empty({T, c.hidden_size}), block_out = be.empty({T, c.hidden_size});
  for (size_t i = 0; i < st.layers.size(); ++i)
    forward_layer(be, st, i, i == 0, batch, cache, residual, normed, block_out);
  be.add_rms_norm(residual, block_out, st.final_norm, c.rms_norm_eps, true, normed);
  const int64_t R = static_cast<int64_t>(batch.logits_rows.size());
  Tensor selected = be.empty({R, c.hidden_size}), logits = be.empty({R, c.vocab_size});
  be.embedding(batch.logits_rows, normed, selected);
  be.matmul(selected, st.lm_head, logits);
}

int bench_model(const std::string& path, std::vector<int> batches, double bw) {
  ModelConfig c = parse_model_config(read_json_file(path));
  auto be = make_cuda_backend();
  Stack st = build(*be, c);
  cuda_synchronize();
  std::printf("model %s: %.2f GB of weights, %.2f GB read per decode step (weights a token uses)\n",
              path.c_str(), st.weight_bytes / 1e9, st.active_bytes / 1e9);
  const int32_t ctx = 1024, block_size = 16;
  const int32_t max_b = *std::max_element(batches.begin(), batches.end());
  CacheSizes sizes{.num_blocks = max_b * ((ctx + 64) / block_size + 1) + 2048 / 16 + 8,
                   .block_size = block_size, .num_state_slots = std::max(max_b, 1)};
  ModelCache cache = ModelCache::allocate(*be, c, sizes);
  uint64_t seed = 99;
  for (auto& kv : cache.kv) { fill(kv.k, 1.0f, seed); fill(kv.v, 1.0f, seed); }
  for (auto& g : cache.gdn) { fill(g.conv, 0.5f, seed); fill(g.recurrent, 0.05f, seed); }
  const double state_bytes = double(ModelCache::state_slot_bytes(c));
  // Graphs first, largest batch first (the backend's graph metadata buffer is sized by it).
  std::map<int, ForwardBatch> decode_batches;
  std::map<int, std::unique_ptr<Backend::Graph>> graphs;
  std::vector<int> descending = batches;
  std::sort(descending.rbegin(), descending.rend());
  for (int B : descending) {
    if (decode_batches.count(B)) continue;
    std::vector<std::pair<int32_t, int32_t>> seqs(B, {ctx, 1});
    int32_t used = 0;
    ForwardBatch& b = decode_batches[B] = batch_for(seqs, block_size, used);
    const int32_t max_blocks = 262144 / block_size;  // Qwen3.5's max_position_embeddings
    graphs[B] = be->capture_graph(b, max_blocks, [&] { forward(*be, st, b, cache); });
  }
  if (const char* p = std::getenv("BENCH_PROFILE"); p != nullptr && std::string(p) == "1") {
    for (int B : batches) {
      const ForwardBatch& b = decode_batches.at(B);
      for (int i = 0; i < 2; ++i) forward(*be, st, b, cache);
      cuda_synchronize();
      cudaProfilerStart();
      forward(*be, st, b, cache);
      cuda_synchronize();
      cudaProfilerStop();
    }
    return 0;
  }
  std::printf("| step | tokens | ms | tokens/s | bytes/step GB | roofline ms | of roofline |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int B : batches) {
    const ForwardBatch& b = decode_batches.at(B);
    // Every step re-runs position ctx (the states advance; timing is what matters here).
    double ms = median_ms([&] { forward(*be, st, b, cache); }, 2, 8);
    double ms_graph = median_ms([&] { be->replay_graph(*graphs.at(B), b); }, 2, 8);
    // Bytes that must move: the weights a step uses (dense: all; MoE: routed experts of up to
    // B*top_k distinct experts, counted as B*top_k capped at E), KV read, GDN state read+write.
    double weights = st.active_bytes;
    if (c.is_moe) {
      double per_expert = 0;
      for (auto& l : st.layers) per_expert += (l.mlp.experts_gate_up.size_bytes() + l.mlp.experts_down.size_bytes()) / double(c.num_experts);
      double distinct = std::min<double>(c.num_experts, double(B) * c.num_experts_per_tok);
      weights = st.active_bytes - per_expert * c.num_experts_per_tok + per_expert * distinct;
    }
    double kv_bytes = double(B) * ctx * ModelCache::kv_block_bytes(c, 1, 2);
    double bytes = weights + kv_bytes + 2.0 * B * state_bytes;
    double roof = bytes / (bw * 1e9) * 1e3;
    std::printf("| decode B=%d | %d | %.2f | %.1f | %.2f | %.2f | %.0f%% |\n", B, B, ms, B / (ms * 1e-3),
                bytes / 1e9, roof, 100 * roof / ms);
    std::printf("| decode B=%d graph | %d | %.2f | %.1f | %.2f | %.2f | %.0f%% |\n", B, B, ms_graph,
                B / (ms_graph * 1e-3), bytes / 1e9, roof, 100 * roof / ms_graph);
  }
  if (const char* p = std::getenv("BENCH_SKIP_PREFILL"); p == nullptr || std::string(p) != "1") {
    const int32_t T = 2048;
    int32_t used = 0;
    ForwardBatch b = batch_for({{0, T}}, block_size, used);
    double ms = median_ms([&] { forward(*be, st, b, cache); }, 1, 3);
    std::printf("| prefill 1x%d | %d | %.2f | %.0f | - | - | - |\n", T, T, ms, T / (ms * 1e-3));
    // One layer of each kind (tokens/s of a full layer: norms, mixer, MLP / MoE), prefill of
    // the same 2048 tokens and a batch-1 decode step.
    const ForwardBatch& d1 = decode_batches.begin()->second;
    for (LayerType kind : {LayerType::kLinearAttention, LayerType::kFullAttention}) {
      size_t i = 0;
      while (i < st.layers.size() && st.layers[i].type != kind) ++i;
      if (i == st.layers.size()) continue;
      const char* name = kind == LayerType::kLinearAttention ? "Gated DeltaNet" : "gated attention";
      for (const ForwardBatch* fb : std::initializer_list<const ForwardBatch*>{&b, &d1}) {
        const int64_t n = fb->num_tokens();
        Tensor residual = be->empty({n, c.hidden_size}), normed = be->empty({n, c.hidden_size});
        Tensor block_out = be->empty({n, c.hidden_size});
        for (Tensor* t : {&residual, &block_out}) fill(*t, 1.0f, seed);
        const double layer_ms = median_ms(
            [&] { forward_layer(*be, st, i, false, *fb, cache, residual, normed, block_out); },
            2, 5);
        std::printf("| layer %zu (%s + %s) %s %lld | %lld | %.3f | %.0f | - | - | - |\n", i,
                    name, c.is_moe ? "MoE" : "MLP", fb == &b ? "prefill 1x" : "decode B=",
                    static_cast<long long>(fb == &b ? n : fb->seqs.size()),
                    static_cast<long long>(n), layer_ms, n / (layer_ms * 1e-3));
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_cuda copy | attention | gemm | skinny | gdn | sample | model CONFIG.json [B...]\n");
    return 2;
  }
  try {
    const std::string mode = argv[1];
    const double bw = copy_bandwidth_gbs();
    std::printf("device-to-device copy: %.0f GB/s (read + write)\n", bw);
    if (mode == "copy") return 0;
    if (mode == "attention") return bench_attention(bw);
    if (mode == "gemm") return bench_gemm(bw);
    if (mode == "skinny") return bench_skinny(bw);
    if (mode == "gdn") return bench_gdn(bw);
    if (mode == "sample") return bench_sample();
    if (mode == "model" && argc >= 3) {
      std::vector<int> batches;
      for (int i = 3; i < argc; ++i) batches.push_back(std::atoi(argv[i]));
      if (batches.empty()) batches = {1, 8, 32};
      return bench_model(argv[2], batches, bw);
    }
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
