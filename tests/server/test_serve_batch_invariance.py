#!/usr/bin/env python3
"""Batch invariance through the server: 32 concurrent greedy requests with different prompts
(different lengths, so prefill chunks and decodes share steps) return exactly what each
returns when it runs alone.  Usage: test_serve_batch_invariance.py BLOCKFLASH CHECKPOINT_DIR"""
import concurrent.futures
import threading

from serve_util import Server, main_args, make_model_dir, metrics, post_json

NUM_REQUESTS = 32


def prompt(i):
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "seven", "north", "quiet"]
    return " ".join(words[(i * 7 + k) % len(words)] for k in range(1 + (i * 5) % 23)) + f" #{i}"


def run(base, i):
    status, r = post_json(base, "/v1/completions", {
        "prompt": prompt(i), "max_tokens": 12 + i % 9, "temperature": 0, "ignore_eos": True,
        "logprobs": 1})
    assert status == 200, r
    c = r["choices"][0]
    return c["text"], c["finish_reason"], c["logprobs"]["tokens"], c["logprobs"]["token_logprobs"]


def main():
    binary, checkpoint = main_args()
    model_dir = make_model_dir(checkpoint)
    with Server(binary, model_dir, "--max-num-seqs", "32", "--max-num-batched-tokens", "256") as s:
        alone = [run(s.base, i) for i in range(NUM_REQUESTS)]
        most_running = [0]
        stop = threading.Event()

        def watch():  # proves the requests really shared steps
            while not stop.is_set():
                most_running[0] = max(most_running[0], metrics(s.base)["vllm:num_requests_running"])

        watcher = threading.Thread(target=watch)
        watcher.start()
        with concurrent.futures.ThreadPoolExecutor(NUM_REQUESTS) as pool:
            together = list(pool.map(lambda i: run(s.base, i), range(NUM_REQUESTS)))
        stop.set()
        watcher.join()
        assert most_running[0] > 1, f"requests never ran together (max running {most_running[0]})"
        bad = []
        for i, (a, b) in enumerate(zip(alone, together)):
            if a[:3] != b[:3]:
                bad.append(f"request {i}: alone {a[0]!r} / batched {b[0]!r}")
            elif any(abs(x - y) > 1e-4 for x, y in zip(a[3], b[3])):
                bad.append(f"request {i}: logprobs differ beyond 1e-4: {a[3]} / {b[3]}")
        assert not bad, "\n".join(bad)
        assert s.alive()
    print(f"OK: {NUM_REQUESTS} concurrent greedy requests match their solo runs "
          f"(up to {most_running[0]:.0f} running together)")


if __name__ == "__main__":
    main()
