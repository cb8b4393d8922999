#!/usr/bin/env python3
"""`blockflash serve --speculative-config` (DFlash) end to end: greedy completions and a
streamed chat with a drafter equal those without one (lossless), the spec-decode counters
appear in /metrics, and bad speculative configs stop the server with a clear message.
Usage: test_serve_speculative.py BLOCKFLASH TARGET_DIR DRAFTER_DIR [MISFIT_TARGET_DIR]"""
import concurrent.futures
import json
import subprocess
import sys

from serve_util import Server, make_model_dir, metrics, post_json, request, sse_events


def prompt(i):
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "seven", "north"]
    return " ".join(words[(i * 5 + k) % len(words)] for k in range(2 + (i * 3) % 17))


def complete(base, i):
    status, r = post_json(base, "/v1/completions", {
        "prompt": prompt(i), "max_tokens": 10 + i % 7, "temperature": 0, "ignore_eos": True,
        "logprobs": 1})
    assert status == 200, r
    c = r["choices"][0]
    return c["text"], c["finish_reason"], c["logprobs"]["tokens"]


def chat(base):
    status, _, data = request("POST", base + "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "seven rivers"}], "max_tokens": 20,
        "temperature": 0, "stream": True, "chat_template_kwargs": {"enable_thinking": False}})
    assert status == 200, data
    text = ""
    for event in sse_events(data):
        if event != "[DONE]":
            for choice in event["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def fails_to_start(binary, model_dir, config, expect):
    proc = subprocess.run([binary, "serve", model_dir, "--port", "0", "--device", "cpu",
                           "--speculative-config", config], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0, f"server started with {config}"
    assert expect in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr, proc.stderr


def main():
    binary, target, drafter = sys.argv[1:4]
    model_dir = make_model_dir(target)
    n = 8
    with Server(binary, model_dir, "--max-num-seqs", "8") as s:
        plain = [complete(s.base, i) for i in range(n)]
        plain_chat = chat(s.base)
        assert "vllm:spec_decode_num_drafts_total" not in metrics(s.base)
    spec = json.dumps({"method": "dflash", "model": drafter, "num_speculative_tokens": 5})
    with Server(binary, model_dir, "--max-num-seqs", "8", "--max-num-batched-tokens", "32",
                "--speculative-config", spec) as s:
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            together = list(pool.map(lambda i: complete(s.base, i), range(n)))
        for i in range(n):
            assert together[i] == plain[i], (i, together[i], plain[i])
        assert chat(s.base) == plain_chat
        m = metrics(s.base)
        assert m["vllm:spec_decode_num_drafts_total"] > 0, m
        assert m["vllm:spec_decode_num_draft_tokens_total"] >= m["vllm:spec_decode_num_drafts_total"]
        assert 0 <= m["vllm:spec_decode_num_accepted_tokens_total"] <= \
            m["vllm:spec_decode_num_draft_tokens_total"]
        for pos in range(5):
            key = f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{model_name="{model_dir}",position="{pos}"}}'
            assert key in m, sorted(k for k in m if "per_pos" in k)
        assert m["blockflash:num_state_slots"] == 8 * 6, m["blockflash:num_state_slots"]
        assert s.alive()

    fails_to_start(binary, model_dir, '{"method":"eagle","model":"' + drafter + '"}',
                   "is not supported")
    fails_to_start(binary, model_dir, '{"method":"dflash"}', "is required")
    fails_to_start(binary, model_dir, '{"method": dflash}', "not valid JSON")
    fails_to_start(binary, model_dir, '{"method":"dflash","model":"/nonexistent"}',
                   "is not a directory")
    fails_to_start(binary, model_dir, json.dumps({"method": "dflash", "model": drafter,
                                                  "num_speculative_tokens": 99}),
                   "num_speculative_tokens must be in")
    if len(sys.argv) > 4:  # a target whose layers the drafter's taps do not fit
        fails_to_start(binary, make_model_dir(sys.argv[4]), spec, "taps target layer")
    print("speculative serving: ok")


if __name__ == "__main__":
    main()
