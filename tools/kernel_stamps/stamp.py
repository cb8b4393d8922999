#!/usr/bin/env python3
"""Throwaway in-kernel timestamps for latency studies of the batch-1 decode step.

The CUPTI trace (tools/kernel_trace) says how long each kernel of a graph replay takes; it
cannot say where inside a kernel the time goes. This script patches a scratch copy of the
source so that thread 0 of each of the first 64 blocks of chosen kernels stores %globaltimer
at fixed points into a __device__ table, and bench_cuda prints the last launch's table after
the batch-1 graph replays (BENCH_STAMPS=1). Session 13 found the router's 3.9 us routing
tail and the fused GDN kernel's slow state passes this way (bench/NOTES.md).

It edits files in place, so run it on a scratch worktree, never on the checkout you commit:
    git worktree add /tmp/stamps HEAD
    python3 tools/kernel_stamps/stamp.py /tmp/stamps gdn router
    CCACHE_BASEDIR=/ cmake -S /tmp/stamps -B /tmp/stamps/build-cuda -DBLOCKFLASH_CUDA=ON \\
        -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_BUILD_TYPE=Release \\
        -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache && \\
        CCACHE_BASEDIR=/ cmake --build /tmp/stamps/build-cuda -j2 --target bench_cuda
    # (~1 minute here with ccache: only the stamped files recompile)
    BUILD=/tmp/stamps/build-cuda DEST=.gpu-stamps BINS=tests/bench_cuda bash tools/gpu_pack.sh
    # on the GPU box, carry [".gpu-stamps"]: the defaults, then each of STAMP_VARIANTS
    bash tools/gpu_stamps.sh     # = BENCH_STAMPS=1 bench_cuda model CONFIG 1, per setting
Each row is one block with the SM it ran on; columns are ns from the first block's start, then
the SM's clock cycles from the block's own first point (exact within a block; session 14 found
the GDN decode blocks three to an SM this way). The anchors are source
lines of the kernels as of session 13: when a kernel changes, adjust its POINTS entry (the
script fails loudly when an anchor is missing).
"""
import pathlib
import sys

# Per target: the file, the kernel's first line, and (stamp name, anchor, where) points in
# source order inside that kernel: the stamp goes before or after the first line at or after
# the previous point that contains the anchor (that equals it, for an anchor starting with "=").
TARGETS = {
    "gdn": {
        "file": "src/backend/cuda/kernels_gdn_fused.cu",
        "kernel": "gdn_decode_head_kernel(GdnDecodeArgs a, DeviceBatch b) {",
        "points": [
            ("start", "__shared__ bool s_last;", "after"),
            ("issued", "=  pdl_wait();", "before"),
            ("waited", "=  pdl_wait();", "after"),
            ("conv", "// Count this block in for its key head", "before"),
            ("state", "// s_q, s_k, s_v and the state visible to all", "after"),
            ("gates", "float kv_mem = 0.0f, sq = 0.0f;", "before"),
            ("pass1", "const float delta = (s_v[c]", "before"),
            ("pass2", "const float o = (sq + delta * kq) * q_norm;", "before"),
            ("out", "if (!s_last) return;", "before"),
        ],
    },
    "gateup": {
        "file": "src/backend/cuda/kernels_moe.cu",
        "kernel": "moe_gate_up_fused_kernel(MoeDecodeArgs a) {",
        "points": [
            ("start", "const int warp = threadIdx.x / 32", "before"),
            ("waited", "pdl_wait();  // by every block before any exits", "after"),
            ("done", "if (lane == 0) a.act[", "after"),
        ],
    },
    "router": {
        "file": "src/backend/cuda/kernels_moe.cu",
        "kernel": "moe_router_fused_kernel(MoeDecodeArgs a) {",
        "points": [
            ("start", "const int warp = threadIdx.x / 32", "before"),
            ("waited", "=  pdl_wait();", "after"),
            ("norm", "if (norm) router_norm_rows", "after"),
            ("counted", "if (!last) return;", "before"),
            ("stored", "const int slots = moe_slots(a);", "before"),
            ("routed", "*a.counter = 0;", "after"),
        ],
    },
}

SLOTS = 32  # per block: %globaltimer at point k, the SM's clock64 at CLOCKS + k, the SM id
CLOCKS = SLOTS // 2  # at SM_ID; so at most CLOCKS - 1 points per kernel
SM_ID = SLOTS - 1
BLOCKS = 64


def device_code(name):
    return f"""
__device__ unsigned long long g_stamps_{name}[{BLOCKS} * {SLOTS}];
#define STAMP_{name.upper()}(k)                                                       \\
  if (threadIdx.x == 0 && blockIdx.x * gridDim.y + blockIdx.y < {BLOCKS}) {{          \\
    unsigned long long now;                                                        \\
    unsigned sm;                                                                   \\
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));                       \\
    unsigned long long* row = g_stamps_{name} + (blockIdx.x * gridDim.y + blockIdx.y) * {SLOTS}; \\
    row[k] = now;                                                                  \\
    row[{CLOCKS} + (k)] = clock64();                                               \\
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));                               \\
    row[{SM_ID}] = sm;                                                             \\
  }}
"""


def host_code(name, labels):
    header = " ".join(labels)
    return f"""
void print_stamps_{name}() {{
  unsigned long long h[{BLOCKS} * {SLOTS}] = {{}};
  cudaMemcpyFromSymbol(h, g_stamps_{name}, sizeof(h));
  unsigned long long t0 = ~0ull;
  for (int b = 0; b < {BLOCKS}; ++b)
    if (h[b * {SLOTS}] != 0 && h[b * {SLOTS}] < t0) t0 = h[b * {SLOTS}];
  std::printf("stamps {name} (ns from the first block's start, at %llu): {header}\\n", t0);
  for (int b = 0; b < {BLOCKS}; ++b) {{
    if (h[b * {SLOTS}] == 0) continue;
    std::printf("  block %2d sm %3llu:", b, h[b * {SLOTS} + {SM_ID}]);
    for (int k = 0; k < {len(labels)}; ++k)
      std::printf(" %7lld", h[b * {SLOTS} + k] >= t0 ? (long long)(h[b * {SLOTS} + k] - t0) : -1ll);
    std::printf("  | cycles:");  // the SM's clock from this block's first point (exact within it)
    for (int k = 0; k < {len(labels)}; ++k)
      std::printf(" %6lld", (long long)(h[b * {SLOTS} + {CLOCKS} + k] - h[b * {SLOTS} + {CLOCKS}]));
    std::printf("\\n");
  }}
}}
"""


def patch_kernel(root, name, spec):
    if len(spec["points"]) > CLOCKS - 1:
        sys.exit(f"{name}: at most {CLOCKS - 1} points (each takes a time and a clock slot)")
    path = root / spec["file"]
    lines = path.read_text().split("\n")
    start = next((i for i, l in enumerate(lines) if spec["kernel"] in l), None)
    if start is None:
        sys.exit(f"{name}: kernel line not found in {spec['file']}: {spec['kernel']!r}")
    inserts = []  # (line index, text)
    pos = start
    for slot, (label, anchor, where) in enumerate(spec["points"]):
        exact = anchor.startswith("=")
        hit = next((i for i in range(pos, len(lines))
                    if (lines[i] == anchor[1:] if exact else anchor in lines[i])), None)
        if hit is None:
            sys.exit(f"{name}: anchor for stamp {label!r} not found: {anchor!r}")
        at = hit + 1 if where == "after" else hit
        inserts.append((at, f"  STAMP_{name.upper()}({slot});"))
        pos = hit + 1 if where == "after" else hit
    for at, text in sorted(inserts, reverse=True):
        lines.insert(at, text)
    # The table and macro before the kernel's template/declaration line, the printer at the end.
    decl = start
    while decl > 0 and lines[decl - 1].strip().startswith(("template", "__global__")):
        decl -= 1
    lines.insert(decl, device_code(name))
    text = "\n".join(lines)
    if "#include <cstdio>" not in text:
        text = text.replace("#include <cstdint>", "#include <cstdint>\n#include <cstdio>", 1)
    labels = [p[0] for p in spec["points"]]
    text = text.rstrip("\n")
    closing = "}  // namespace bf::cuda"
    if not text.endswith(closing):
        sys.exit(f"{name}: {spec['file']} does not end with {closing!r}")
    text = text[: -len(closing)] + host_code(name, labels) + closing + "\n"
    path.write_text(text)


def patch_bench(root, names):
    path = root / "bench/cuda_bench.cpp"
    text = path.read_text()
    decls = "".join(f"void print_stamps_{n}();\n" for n in names)
    text = text.replace("namespace {\n", f"namespace bf::cuda {{\n{decls}}}\nnamespace {{\n", 1)
    anchor = "B / (ms_graph * 1e-3), bytes / 1e9, roof, 100 * roof / ms_graph);"
    if anchor not in text:
        sys.exit("bench/cuda_bench.cpp: the graph row's printf not found")
    calls = "".join(f" bf::cuda::print_stamps_{n}();" for n in names)
    text = text.replace(
        anchor, anchor + f'\n    if (std::getenv("BENCH_STAMPS") != nullptr && B == 1) {{{calls} }}', 1)
    path.write_text(text)


def main():
    if len(sys.argv) < 3 or any(n not in TARGETS for n in sys.argv[2:]):
        sys.exit(f"usage: stamp.py SCRATCH_TREE {{{'|'.join(TARGETS)}}}...")
    root = pathlib.Path(sys.argv[1])
    if (root / ".git").is_dir():
        sys.exit(f"{root} is a main checkout; use a scratch worktree (git worktree add)")
    names = sys.argv[2:]
    for n in names:
        patch_kernel(root, n, TARGETS[n])
    patch_bench(root, names)
    print(f"stamped {', '.join(names)} in {root}")


if __name__ == "__main__":
    main()
