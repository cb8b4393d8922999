#!/usr/bin/env python3
"""Client disconnect mid-stream aborts the request: after a streaming client closes its
connection, /metrics shows no running request and every KV block and state slot free again
within a short time, long before the request would have finished; with several streams,
killing half leaves the others intact.  Usage: test_serve_disconnect.py BLOCKFLASH CHECKPOINT_DIR"""
import http.client
import json
import time

from serve_util import Server, main_args, make_model_dir, metrics, post_json, wait_idle

MAX_TOKENS = 4000


def open_stream(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/completions" if "prompt" in body else "/v1/chat/completions",
                 json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    return conn, resp


def read_events(resp, count):
    events = []
    while len(events) < count:
        line = resp.fp.readline()
        assert line, "stream ended early"
        if line.startswith(b"data: "):
            events.append(line[6:].strip())
    return events


def main():
    binary, checkpoint = main_args()
    model_dir = make_model_dir(checkpoint)
    long_body = {"prompt": "Once upon a time", "max_tokens": MAX_TOKENS, "ignore_eos": True,
                 "temperature": 0, "stream": True}
    with Server(binary, model_dir, max_model_len=MAX_TOKENS + 64) as s:
        # One stream: read a few chunks, hang up.
        conn, resp = open_stream(s.port, long_body)
        read_events(resp, 3)
        assert metrics(s.base)["vllm:num_requests_running"] == 1
        closed_at = time.time()
        conn.sock.close()
        conn.close()
        m = wait_idle(s.base, 2.0)
        took = time.time() - closed_at
        aborted = m['vllm:request_success_total{model_name="%s",finished_reason="abort"}' % model_dir]
        assert aborted == 1, m
        assert m["vllm:generation_tokens_total"] < MAX_TOKENS, m["vllm:generation_tokens_total"]
        print(f"one stream: idle {took * 1000:.0f} ms after the disconnect, "
              f"{m['vllm:generation_tokens_total']:.0f} of {MAX_TOKENS} tokens generated")

        # Four streams (completions and chat): kill two, the other two finish normally.
        short = 200
        bodies = [dict(long_body), dict(long_body, max_tokens=short),
                  {"messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS,
                   "ignore_eos": True, "stream": True},
                  {"messages": [{"role": "user", "content": "yo"}], "max_tokens": short,
                   "ignore_eos": True, "stream": True, "temperature": 0}]
        streams = [open_stream(s.port, b) for b in bodies]
        for conn, resp in streams:
            read_events(resp, 2)
        for conn, resp in (streams[0], streams[2]):
            conn.sock.close()
            conn.close()
        for conn, resp in (streams[1], streams[3]):
            rest = b""
            while not rest.endswith(b"data: [DONE]\n"):
                line = resp.fp.readline()  # raw chunked framing; only data lines matter
                assert line, rest[-300:]
                if line.startswith(b"data: "):
                    rest += line
            assert b'"finish_reason":"length"' in rest
            conn.close()
        m = wait_idle(s.base, 2.0)
        assert m['vllm:request_success_total{model_name="%s",finished_reason="abort"}' % model_dir] == 3
        assert m['vllm:request_success_total{model_name="%s",finished_reason="length"}' % model_dir] == 2
        # The server still serves.
        status, r = post_json(s.base, "/v1/completions", {"prompt": "x", "max_tokens": 3})
        assert status == 200 and r["usage"]["completion_tokens"] == 3
    print("OK")


if __name__ == "__main__":
    main()
