// Does a small decode kernel pay for its code length at each launch? Launches one warp running
// N independent FMAs (eight chains, so a lone warp issues about one per cycle) as CUDA graph
// nodes, either back to back (code hot in the SM's instruction caches) or each after a kernel
// that streams a buffer several times L2's size (as a decode step's weights do between two
// launches of one kernel). Prints the time per launch against N for both; the slope is the
// cost per instruction, hot and after the stream.
//   nvcc -O3 -arch=sm_90a -o probe tools/icache_probe/probe.cu   (run on the GPU box)
#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>

#define CHECK(x)                                                                  \
  do {                                                                            \
    cudaError_t e = (x);                                                          \
    if (e != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e));                \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

template <int N>
__global__ void pad_kernel(float* out, float seed) {
  float a[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) a[c] = seed + c;
#pragma unroll
  for (int i = 0; i < N / 8; ++i)
#pragma unroll
    for (int c = 0; c < 8; ++c) a[c] = fmaf(a[c], 1.0000001f, 0.5f);
  float sum = 0.0f;
#pragma unroll
  for (int c = 0; c < 8; ++c) sum += a[c];
  if (sum == 1234.5f) out[threadIdx.x] = sum;  // keeps the chains; never true for seed 0
}

__global__ void stream_kernel(const uint4* p, long n, float* out) {
  unsigned acc = 0;
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
    const uint4 v = __ldcg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[0] = 1.0f;
}

struct Ctx {
  cudaStream_t s;
  float* out;
  const uint4* buf;
  long n16;
};

template <typename F>
float graph_ms(Ctx& c, F body) {  // the average replay of a captured sequence
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CHECK(cudaStreamBeginCapture(c.s, cudaStreamCaptureModeGlobal));
  body();
  CHECK(cudaStreamEndCapture(c.s, &g));
  CHECK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 3; ++i) CHECK(cudaGraphLaunch(ge, c.s));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  constexpr int kReps = 10;
  CHECK(cudaEventRecord(a, c.s));
  for (int i = 0; i < kReps; ++i) CHECK(cudaGraphLaunch(ge, c.s));
  CHECK(cudaEventRecord(b, c.s));
  CHECK(cudaEventSynchronize(b));
  float ms = 0;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaGraphExecDestroy(ge));
  CHECK(cudaGraphDestroy(g));
  return ms / kReps;
}

template <int N>
void measure(Ctx& c, float stream_only_us) {
  constexpr int kHot = 200, kCold = 40;
  const float hot = graph_ms(c, [&] {
    for (int i = 0; i < kHot; ++i) pad_kernel<N><<<1, 32, 0, c.s>>>(c.out, 0.0f);
  }) * 1000.0f / kHot;
  const float cold = graph_ms(c, [&] {
    for (int i = 0; i < kCold; ++i) {
      stream_kernel<<<528, 256, 0, c.s>>>(c.buf, c.n16, c.out);
      pad_kernel<N><<<1, 32, 0, c.s>>>(c.out, 0.0f);
    }
  }) * 1000.0f / kCold;
  std::printf("| %d | %.2f | %.2f |\n", N, hot, cold - stream_only_us);
}

int main() {
  Ctx c{};
  CHECK(cudaStreamCreate(&c.s));
  CHECK(cudaMalloc(&c.out, 4096));
  const long bytes = 256L << 20;  // five times an H100/H200 L2
  void* buf;
  CHECK(cudaMalloc(&buf, bytes));
  CHECK(cudaMemset(buf, 1, bytes));
  c.buf = static_cast<const uint4*>(buf);
  c.n16 = bytes / 16;
  constexpr int kCold = 40;
  const float stream_us = graph_ms(c, [&] {
    for (int i = 0; i < kCold; ++i) stream_kernel<<<528, 256, 0, c.s>>>(c.buf, c.n16, c.out);
  }) * 1000.0f / kCold;
  std::printf("stream kernel alone: %.2f us per launch (%.0f GB/s)\n", stream_us,
              bytes / (stream_us * 1e3));
  std::printf("| instructions (FMA) | us per launch, back to back | us per launch after the stream (its time subtracted) |\n|---|---|---|\n");
  measure<64>(c, stream_us);
  measure<512>(c, stream_us);
  measure<2048>(c, stream_us);
  measure<4096>(c, stream_us);
  measure<8192>(c, stream_us);
  return 0;
}
