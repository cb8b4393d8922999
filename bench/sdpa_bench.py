"""PyTorch SDPA baselines for bench_cuda attention: causal prefill at 4k/16k tokens with the
flash and cuDNN backends, bf16, the same head shapes (K/V expanded to the query heads, as
SDPA's flash path needs). Prints markdown rows: median ms (CUDA events) and TFLOP/s."""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

def time_ms(fn, iters=5):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]

print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
print("| backend | hq/hkv | hd | tokens | ms | TFLOP/s |")
print("|---|---|---|---|---|---|")
for hq, hkv, hd in [(32, 8, 128), (24, 4, 256)]:
    for T in [4096, 16384]:
        q = torch.randn(1, hq, T, hd, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, T, hd, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, hkv, T, hd, device="cuda", dtype=torch.bfloat16)
        ke = k.repeat_interleave(hq // hkv, dim=1)
        ve = v.repeat_interleave(hq // hkv, dim=1)
        flops = 4.0 * hq * hd * T * (T + 1) / 2
        for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                with sdpa_kernel(be):
                    ms = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True))
                print(f"| sdpa-{name} | {hq}/{hkv} | {hd} | {T} | {ms:.3f} | {flops / (ms * 1e-3) / 1e12:.1f} |")
            except Exception as e:  # a backend that cannot run this shape says so
                print(f"| sdpa-{name} | {hq}/{hkv} | {hd} | {T} | n/a | {type(e).__name__}: {str(e)[:60]} |")
