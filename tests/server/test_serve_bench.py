#!/usr/bin/env python3
"""End-to-end: `blockflash bench serve` (the load generator) against `blockflash serve` on a tiny
checkpoint: the JSON report's counts and latency statistics, the chat endpoint, a server that
is not there (a clear error, non-zero exit) and a wrong API key (failed requests counted, no
crash).  Usage: test_serve_bench.py BLOCKFLASH CHECKPOINT_DIR"""
import json
import os
import subprocess
import tempfile

from serve_util import Server, free_port, main_args, make_model_dir, metrics

ENV = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


def bench(binary, *args, timeout=120):
    cmd = [binary, "bench", "serve", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    return p.returncode, p.stdout, p.stderr


def last_json(stdout):
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, stdout
    return json.loads(lines[-1])


def percentile(values, q):
    """numpy.percentile's default (linear interpolation between closest ranks)."""
    v = sorted(values)
    rank = q / 100 * (len(v) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def check_stats(r, name, values_ms=None):
    mean, median, p99 = r[f"mean_{name}_ms"], r[f"median_{name}_ms"], r[f"p99_{name}_ms"]
    # Streamed chunks can arrive together (gaps near 0): only TTFT's median must be positive.
    assert mean > 0 and p99 > 0 and median >= 0, (name, mean, median, p99)
    assert name == "itl" or name == "tpot" or median > 0, (name, median)
    assert p99 >= median, (name, median, p99)
    assert r[f"std_{name}_ms"] >= 0
    if values_ms is not None:  # the statistics of the per-request values it reports
        close = lambda a, b: abs(a - b) <= 1e-6 * max(1.0, abs(b))
        assert close(mean, sum(values_ms) / len(values_ms)), (name, mean)
        assert close(median, percentile(values_ms, 50)), (name, median)
        assert close(p99, percentile(values_ms, 99)), (name, p99)


def test_completions(binary, server):
    before = metrics(server.base)
    result_file = tempfile.NamedTemporaryFile(prefix="bf_bench_", suffix=".json", delete=False).name
    rc, out, err = bench(binary, "--port", str(server.port), "--num-prompts", "12",
                         "--max-concurrency", "4", "--random-input-len", "16",
                         "--random-output-len", "8", "--json", "--result-file", result_file)
    assert rc == 0, (rc, out, err)
    r = last_json(out)
    assert r["completed"] == 12 and r["failed"] == 0, r
    assert r["total_output_tokens"] == 12 * 8, r
    assert r["total_input_tokens"] == 12 * 16, r
    assert r["output_lens"] == [8] * 12 and r["input_lens"] == [16] * 12, r
    assert r["max_concurrency"] == 4 and r["num_prompts"] == 12 and r["request_rate"] == "inf"
    assert r["model_id"] == server.model_dir, r["model_id"]  # from GET /v1/models
    assert r["duration"] > 0
    assert r["request_throughput"] > 0 and r["output_throughput"] > 0
    assert r["total_token_throughput"] > r["output_throughput"]
    check_stats(r, "ttft", [t * 1000 for t in r["ttfts"]])
    check_stats(r, "itl", [gap * 1000 for gaps in r["itls"] for gap in gaps])
    check_stats(r, "tpot")
    check_stats(r, "e2el")
    assert r["mean_e2el_ms"] >= r["mean_ttft_ms"]
    assert all(t > 0 for t in r["ttfts"]) and len(r["itls"]) == 12
    assert all(gap >= 0 for gaps in r["itls"] for gap in gaps)
    assert sum(len(gaps) for gaps in r["itls"]) > 0
    assert r["first_error"] is None and r["errors"] == [""] * 12
    # The table, as vLLM prints it.
    for label in ("Successful requests:", "Failed requests:", "Request throughput (req/s):",
                  "Output token throughput (tok/s):", "Mean TTFT (ms):", "P99 TPOT (ms):",
                  "Median ITL (ms):"):
        assert label in out, (label, out)
    assert "Successful requests:                     12" in out, out
    with open(result_file) as f:
        saved = json.load(f)
    assert saved["completed"] == 12 and saved["total_output_tokens"] == 96
    os.unlink(result_file)
    # The server saw the same work.
    after = metrics(server.base)
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 96
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == 12 * 16


def test_chat_and_options(binary, server):
    rc, out, err = bench(binary, "--base-url", server.base, "--endpoint", "/v1/chat/completions",
                         "--model", server.model_dir, "--num-prompts", "4",
                         "--random-input-len", "6", "--random-output-len", "5",
                         "--request-rate", "50", "--seed", "3", "--metric-percentiles", "50,90",
                         "--percentile-metrics", "ttft,e2el", "--json")
    assert rc == 0, (rc, out, err)
    r = last_json(out)
    assert r["completed"] == 4 and r["failed"] == 0 and r["total_output_tokens"] == 20, r
    assert r["request_rate"] == 50 and r["backend"] == "openai-chat"
    assert r["p90_ttft_ms"] >= r["p50_ttft_ms"] > 0
    assert "P90 E2EL (ms):" in out and "Mean TPOT" not in out, out


def test_nothing_listening(binary):
    port = free_port()
    rc, out, err = bench(binary, "--port", str(port), "--num-prompts", "2", "--json", timeout=30)
    assert rc != 0, (rc, out, err)
    assert "cannot reach the server" in err and str(port) in err, err
    assert "internal error" not in err and "terminate" not in err, err


def test_wrong_api_key(binary, model_dir):
    with Server(binary, model_dir, "--api-key", "sekret") as s:
        rc, out, err = bench(binary, "--port", str(s.port), "--api-key", "wrong",
                             "--num-prompts", "3", "--max-concurrency", "2",
                             "--random-input-len", "4", "--random-output-len", "2", "--json")
        # Every request failed: counted in the report, then a non-zero exit (not a crash).
        assert rc == 1, (rc, out, err)
        r = last_json(out)
        assert r["completed"] == 0 and r["failed"] == 3, r
        assert "401" in r["first_error"] and "Unauthorized" in r["first_error"], r
        assert "Failed requests:                         3" in out, out
        assert "401" in err and "internal error" not in err, err
        # The right key works.
        rc, out, err = bench(binary, "--port", str(s.port), "--api-key", "sekret",
                             "--num-prompts", "2", "--random-input-len", "4",
                             "--random-output-len", "2", "--json")
        assert rc == 0, (rc, out, err)
        assert last_json(out)["completed"] == 2
        assert s.alive()


def main():
    binary, checkpoint = main_args()
    model_dir = make_model_dir(checkpoint)
    with Server(binary, model_dir) as s:
        s.model_dir = model_dir
        test_completions(binary, s)
        test_chat_and_options(binary, s)
        assert s.alive()
    test_nothing_listening(binary)
    test_wrong_api_key(binary, model_dir)
    print("OK")


if __name__ == "__main__":
    main()
