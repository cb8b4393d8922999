"""transformers' reference gated delta rule (the torch path Qwen3.5 uses without the fla
kernels) at Qwen3.5-27B shapes, bf16 inputs on the GPU, for bench_cuda gdn to compare with."""
import time
import torch

fn_chunk = fn_rec = None
for mod in ("qwen3_5", "qwen3_next"):
    try:
        m = __import__(f"transformers.models.{mod}.modeling_{mod}", fromlist=["x"])
        fn_chunk = getattr(m, "torch_chunk_gated_delta_rule", None)
        fn_rec = getattr(m, "torch_recurrent_gated_delta_rule", None)
        if fn_chunk:
            print(f"transformers.models.{mod}: torch_chunk_gated_delta_rule")
            break
    except Exception as e:
        print(f"{mod}: {type(e).__name__}: {e}")

def time_ms(fn, iters=3):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[len(ts) // 2]

print("| reference | B x T | tokens | ms | tokens/s |\n|---|---|---|---|---|")
H, D = 48, 128
for B, T, fn, name in [(1, 4096, fn_chunk, "torch_chunk_gated_delta_rule"),
                       (8, 512, fn_chunk, "torch_chunk_gated_delta_rule"),
                       (1, 1, fn_rec, "torch_recurrent_gated_delta_rule")]:
    if fn is None:
        print(f"| {name} | {B} x {T} | {B * T} | n/a | n/a |"); continue
    q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    g = -torch.rand(B, T, H, device="cuda", dtype=torch.float32)
    beta = torch.rand(B, T, H, device="cuda", dtype=torch.bfloat16)
    state = torch.zeros(B, H, D, D, device="cuda", dtype=torch.float32)
    try:
        ms = time_ms(lambda: fn(q, k, v, g, beta, initial_state=state, output_final_state=True,
                                use_qk_l2norm_in_kernel=True))
        print(f"| {name} | {B} x {T} | {B * T} | {ms:.3f} | {B * T / (ms * 1e-3):.0f} |")
    except Exception as e:
        print(f"| {name} | {B} x {T} | {B * T} | n/a | {type(e).__name__}: {str(e)[:80]} |")
