#!/usr/bin/env python3
"""End-to-end: `blockflash serve` on a tiny checkpoint, every endpoint streaming and not,
with exact-field assertions, the error contract (vLLM's statuses and OpenAI's error JSON),
API keys and the queue limit.  Usage: test_serve_endpoints.py BLOCKFLASH CHECKPOINT_DIR"""
import json
import threading
import time

from serve_util import (Server, main_args, make_model_dir, metrics, post_json, request,
                        sse_events)

COMPLETION_KEYS = {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
CHOICE_KEYS = {"index", "text", "logprobs", "finish_reason", "stop_reason", "prompt_logprobs"}
USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"}
ERROR_KEYS = {"message", "type", "param", "code"}


def check_error(status, body, want_status, want_type, param=None, contains=None):
    assert status == want_status, (status, body)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ERROR_KEYS, err
    assert err["code"] == want_status and err["type"] == want_type, err
    if param is not None:
        assert err["param"] == param, err
    if contains is not None:
        assert contains in err["message"], err


def test_basics(base, name):
    status, headers, data = request("GET", base + "/health")
    assert status == 200 and data == b""
    status, models = post_json(base, "/v1/models", None) if False else (None, None)
    status, _, data = request("GET", base + "/v1/models")
    models = json.loads(data)
    assert status == 200 and models["object"] == "list" and len(models["data"]) == 1
    m = models["data"][0]
    assert set(m) == {"id", "object", "created", "owned_by", "root", "parent", "max_model_len"}
    assert m["id"] == name and m["object"] == "model" and m["owned_by"] == "blockflash"
    assert m["max_model_len"] == 512
    status, _, data = request("GET", base + "/version")
    assert status == 200 and "version" in json.loads(data)


def test_completions(base, name):
    body = {"model": name, "prompt": "Hello world", "max_tokens": 12, "temperature": 0,
            "ignore_eos": True}
    status, r = post_json(base, "/v1/completions", body)
    assert status == 200, r
    assert set(r) == COMPLETION_KEYS, r
    assert r["object"] == "text_completion" and r["id"].startswith("cmpl-") and r["model"] == name
    assert isinstance(r["created"], int)
    assert len(r["choices"]) == 1
    c = r["choices"][0]
    assert set(c) == CHOICE_KEYS, c
    assert c["index"] == 0 and c["finish_reason"] == "length" and c["stop_reason"] is None
    assert c["logprobs"] is None and c["prompt_logprobs"] is None
    assert set(r["usage"]) == USAGE_KEYS
    assert r["usage"]["completion_tokens"] == 12
    _, tok = post_json(base, "/tokenize", {"prompt": "Hello world"})
    assert r["usage"]["prompt_tokens"] == tok["count"]
    assert r["usage"]["total_tokens"] == tok["count"] + 12
    greedy_text = c["text"]
    # Greedy is deterministic; no model field means the served model.
    status, r2 = post_json(base, "/v1/completions", {k: v for k, v in body.items() if k != "model"})
    assert r2["choices"][0]["text"] == greedy_text

    # Prompt as ids gives the same as the text.
    status, r3 = post_json(base, "/v1/completions", dict(body, prompt=tok["tokens"]))
    assert status == 200 and r3["choices"][0]["text"] == greedy_text

    # Batched prompts x n: choices indexed prompt * n + i.
    status, rb = post_json(base, "/v1/completions", dict(body, prompt=["Hello world", "Bye"],
                                                         n=2, max_tokens=4))
    assert status == 200, rb
    assert [ch["index"] for ch in rb["choices"]] == [0, 1, 2, 3]
    assert rb["choices"][0]["text"] == rb["choices"][1]["text"] == greedy_text[:len(rb["choices"][0]["text"])]
    _, tok2 = post_json(base, "/tokenize", {"prompt": "Bye"})
    assert rb["usage"]["prompt_tokens"] == tok["count"] + tok2["count"]
    assert rb["usage"]["completion_tokens"] == 16
    status, rids = post_json(base, "/v1/completions", dict(body, prompt=[tok["tokens"], tok2["tokens"]],
                                                           max_tokens=4))
    assert status == 200 and len(rids["choices"]) == 2

    # Seeded sampling is reproducible.
    sampled = dict(body, temperature=1.0, top_p=0.9, top_k=50, seed=1234)
    a = post_json(base, "/v1/completions", sampled)[1]["choices"][0]["text"]
    b = post_json(base, "/v1/completions", sampled)[1]["choices"][0]["text"]
    assert a == b

    # Logprobs: the OpenAI completions object.
    status, rl = post_json(base, "/v1/completions", dict(body, logprobs=3))
    lp = rl["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 12
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0
    for tok_text, tok_lp, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert 1 <= len(top) <= 4 and top[tok_text] == tok_lp  # texts may collide ("\ufffd")
        assert abs(max(top.values()) - tok_lp) < 1e-6  # greedy: the sampled token is the top one
    assert rl["choices"][0]["text"] == greedy_text

    # Echo + prompt_logprobs (vLLM extension).
    status, re_ = post_json(base, "/v1/completions", dict(body, echo=True, prompt_logprobs=2, logprobs=1))
    ce = re_["choices"][0]
    assert ce["text"] == "Hello world" + greedy_text
    assert ce["logprobs"]["token_logprobs"][0] is None
    assert len(ce["logprobs"]["tokens"]) == tok["count"] + 12
    pl = ce["prompt_logprobs"]
    assert len(pl) == tok["count"] and pl[0] is None
    for pos, entry in enumerate(pl[1:], start=1):
        assert str(tok["tokens"][pos]) in entry
        for tid, info in entry.items():
            assert set(info) == {"logprob", "rank", "decoded_token"}
        assert 2 <= len(entry) <= 3

    # Stop strings: the text ends before the first match, stop_reason names it.
    letters = [i for i in range(2, len(greedy_text) - 1) if greedy_text[i].isalpha()]
    if letters:
        stop = greedy_text[letters[0]]
        status, rs = post_json(base, "/v1/completions", dict(body, stop=[stop, "zzzz"]))
        cs = rs["choices"][0]
        assert cs["text"] == greedy_text[:greedy_text.index(stop)], (cs, stop)
        assert cs["finish_reason"] == "stop" and cs["stop_reason"] == stop
        status, rs2 = post_json(base, "/v1/completions", dict(body, stop=stop, include_stop_str_in_output=True))
        assert rs2["choices"][0]["text"] == greedy_text[:greedy_text.index(stop) + 1]

    # Accepted knobs.
    status, rk = post_json(base, "/v1/completions", dict(body, min_tokens=2, presence_penalty=0.5,
                                                         frequency_penalty=0.5, repetition_penalty=1.1,
                                                         min_p=0.1, user="u", skip_special_tokens=False,
                                                         stop_token_ids=[5], some_unknown_field=1))
    assert status == 200, rk
    return greedy_text


def test_completions_stream(base, greedy_text):
    body = {"prompt": "Hello world", "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}, "logprobs": 1}
    status, headers, data = request("POST", base + "/v1/completions", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(data)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
    chunks = events[:-2]
    text = ""
    ntokens = 0
    for ch in chunks:
        assert set(ch) == {"id", "object", "created", "model", "choices"}, ch
        assert ch["object"] == "text_completion" and ch["id"] == chunks[0]["id"]
        (c,) = ch["choices"]
        assert set(c) == {"index", "text", "logprobs", "finish_reason", "stop_reason"}, c
        text += c["text"]
        if c["logprobs"]:
            ntokens += len(c["logprobs"]["tokens"])
    assert text == greedy_text and ntokens == 12
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(ch["choices"][0]["finish_reason"] is None for ch in chunks[:-1])
    # n=2 batched streaming: every index finishes once.
    body = {"prompt": ["a", "b"], "n": 2, "max_tokens": 3, "stream": True, "temperature": 0}
    events = sse_events(request("POST", base + "/v1/completions", body)[2])
    finished = sorted(e["choices"][0]["index"] for e in events[:-1] if e["choices"][0]["finish_reason"])
    assert finished == [0, 1, 2, 3] and events[-1] == "[DONE]"


def test_chat(base, name):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]
    body = {"model": name, "messages": messages, "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    status, r = post_json(base, "/v1/chat/completions", body)
    assert status == 200, r
    assert set(r) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint",
                      "prompt_logprobs"}
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    (c,) = r["choices"]
    assert set(c) == {"index", "message", "logprobs", "finish_reason", "stop_reason"}
    assert c["finish_reason"] == "length" and c["logprobs"] is None
    msg = c["message"]
    assert set(msg) == {"role", "content", "reasoning_content", "tool_calls"}
    assert msg["role"] == "assistant" and msg["tool_calls"] == []
    # Qwen3.5's template opens <think> in the prompt: the output starts as reasoning.
    assert isinstance(msg["reasoning_content"], str)
    full = msg["reasoning_content"] + (("</think>" + msg["content"]) if msg["content"] is not None else "")
    _, tok = post_json(base, "/tokenize", {"messages": messages})
    assert r["usage"]["prompt_tokens"] == tok["count"] and r["usage"]["completion_tokens"] == 10
    assert tok["max_model_len"] == 512 and tok["count"] == len(tok["tokens"])

    # prompt_logprobs (vLLM extension) on chat.
    status, rp = post_json(base, "/v1/chat/completions", dict(body, prompt_logprobs=1, max_tokens=2))
    assert status == 200 and len(rp["prompt_logprobs"]) == tok["count"] and rp["prompt_logprobs"][0] is None

    # Thinking disabled: everything is content.
    status, rn = post_json(base, "/v1/chat/completions",
                           dict(body, chat_template_kwargs={"enable_thinking": False}))
    assert status == 200
    assert rn["choices"][0]["message"]["reasoning_content"] is None
    assert isinstance(rn["choices"][0]["message"]["content"], str)
    _, tok_nothink = post_json(base, "/tokenize", {"messages": messages,
                                                   "chat_template_kwargs": {"enable_thinking": False}})
    assert tok_nothink["count"] > tok["count"]

    # Streaming: role first, then deltas adding up to the non-streamed message.
    status, _, data = request("POST", base + "/v1/chat/completions",
                              dict(body, stream=True, stream_options={"include_usage": True}))
    events = sse_events(data)
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    assert events[-2]["usage"] == r["usage"]
    first = events[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""} and first["finish_reason"] is None
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events[1:-2])
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-2])
    for e in events[:-2]:
        assert e["object"] == "chat.completion.chunk"
        assert set(e["choices"][0]) == {"index", "delta", "logprobs", "finish_reason", "stop_reason"}
    assert reasoning == msg["reasoning_content"]
    assert content == (msg["content"] or "")
    assert events[-3]["choices"][0]["finish_reason"] == "length"

    # Logprobs in chat format, n=2, max_completion_tokens.
    status, rl = post_json(base, "/v1/chat/completions",
                           dict(body, logprobs=True, top_logprobs=2, n=2, max_tokens=None,
                                max_completion_tokens=5))
    assert status == 200, rl
    assert len(rl["choices"]) == 2 and rl["usage"]["completion_tokens"] == 10
    for ch in rl["choices"]:
        entries = ch["logprobs"]["content"]
        assert len(entries) == 5
        for e in entries:
            assert set(e) == {"token", "logprob", "bytes", "top_logprobs"}
            assert len(e["top_logprobs"]) == 2
            assert set(e["top_logprobs"][0]) == {"token", "logprob", "bytes"}
            assert e["logprob"] == e["top_logprobs"][0]["logprob"]  # greedy
    # No max_tokens: the rest of the context is allowed (stops at the eos or 512 total).
    status, rf = post_json(base, "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": "x"}], "temperature": 0, "max_tokens": None})
    assert status == 200 and rf["usage"]["total_tokens"] <= 512

    # continue_final_message continues the assistant's text.
    status, rc = post_json(base, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        "add_generation_prompt": False, "continue_final_message": True, "max_tokens": 3,
        "temperature": 0, "chat_template_kwargs": {"enable_thinking": False}})
    assert status == 200, rc

    # Tools are passed to the template (the prompt grows).
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": {"type": "object", "properties": {}}}}]
    _, tok_tools = post_json(base, "/tokenize", {"messages": messages, "tools": tools})
    assert tok_tools["count"] > tok["count"]


def test_tokenize(base):
    status, t = post_json(base, "/tokenize", {"prompt": "Hello world"})
    assert status == 200 and set(t) == {"count", "max_model_len", "tokens", "token_strs"}
    assert t["token_strs"] is None
    status, d = post_json(base, "/detokenize", {"tokens": t["tokens"]})
    assert status == 200 and d == {"prompt": "Hello world"}
    status, ts = post_json(base, "/tokenize", {"prompt": "Hello world", "return_token_strs": True})
    assert len(ts["token_strs"]) == ts["count"]
    check_error(*post_json(base, "/detokenize", {"tokens": [10 ** 6]}), 400, "BadRequestError", "tokens")
    check_error(*post_json(base, "/tokenize", {}), 400, "BadRequestError")


def test_errors(base):
    # Malformed JSON, wrong content type, wrong field types.
    status, _, data = request("POST", base + "/v1/completions", raw=b'{"prompt": "x", ')
    check_error(status, json.loads(data), 400, "BadRequestError", contains="invalid JSON")
    status, _, data = request("POST", base + "/v1/completions", raw=b'{"prompt": "x"}',
                              headers={"Content-Type": "text/plain"})
    check_error(status, json.loads(data), 400, "BadRequestError", contains="application/json")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "max_tokens": "many"}),
                400, "BadRequestError", "max_tokens", "max_tokens must be an integer")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "temperature": [1]}),
                400, "BadRequestError", "temperature")
    check_error(*post_json(base, "/v1/completions", {"prompt": 5}), 400, "BadRequestError", "prompt")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "max_tokens": -3}),
                400, "BadRequestError", "max_tokens", "max_tokens must be at least 1")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "logprobs": 21}),
                400, "BadRequestError", "logprobs")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "n": 0}), 400, "BadRequestError", "n")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "stream_options": {"include_usage": True}}),
                400, "BadRequestError", "stream_options")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "suffix": "y"}),
                400, "BadRequestError", "suffix")
    # Empty prompts, ids out of range.
    check_error(*post_json(base, "/v1/completions", {"prompt": ""}), 400, "BadRequestError", "prompt")
    check_error(*post_json(base, "/v1/completions", {"prompt": []}), 400, "BadRequestError", "prompt")
    check_error(*post_json(base, "/v1/completions", {"prompt": [1, 2, 99999]}), 400, "BadRequestError",
                contains="99999")
    check_error(*post_json(base, "/v1/completions", {"prompt": [1, -2]}), 400, "BadRequestError")
    # Context length: prompt + max_tokens > max_model_len, and a huge max_tokens.
    status, body = post_json(base, "/v1/completions", {"prompt": "x", "max_tokens": 600})
    check_error(status, body, 400, "BadRequestError", contains="maximum context length is 512")
    check_error(*post_json(base, "/v1/completions", {"prompt": "x", "max_tokens": 2 ** 31 - 1}),
                400, "BadRequestError", contains="maximum context length")
    check_error(*post_json(base, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 600}]}),
                400, "BadRequestError", contains="maximum context length")
    # Unknown model, route, method.
    check_error(*post_json(base, "/v1/completions", {"model": "gpt-9", "prompt": "x"}),
                404, "NotFoundError", "model", "The model `gpt-9` does not exist.")
    status, _, data = request("GET", base + "/v1/nothing")
    check_error(status, json.loads(data), 404, "NotFoundError")
    status, _, data = request("GET", base + "/v1/completions")
    check_error(status, json.loads(data), 405, "MethodNotAllowedError")
    # Chat-specific.
    check_error(*post_json(base, "/v1/chat/completions", {"messages": "hi"}), 400, "BadRequestError", "messages")
    check_error(*post_json(base, "/v1/chat/completions", {"messages": [{"role": "user"}]}),
                400, "BadRequestError", "messages")
    check_error(*post_json(base, "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
                400, "BadRequestError", "top_logprobs")
    check_error(*post_json(base, "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                400, "BadRequestError", "messages", "only text")
    # Too-large body.
    status, _, data = request("POST", base + "/v1/completions", raw=b'{"prompt": "' + b"a" * 300000 + b'"}')
    check_error(status, json.loads(data), 413, "RequestTooLargeError")


def test_metrics(base, name):
    m = metrics(base)
    label = '{model_name="%s"}' % name
    for key in ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                "blockflash:num_free_kv_blocks", "blockflash:num_free_state_slots",
                "blockflash:num_preemptions_total", "blockflash:num_kv_blocks",
                "vllm:time_to_first_token_seconds_count", "vllm:inter_token_latency_seconds_count",
                "vllm:e2e_request_latency_seconds_count"]:
        assert key + label in m, key
    assert m["vllm:prompt_tokens_total" + label] > 0 and m["vllm:generation_tokens_total" + label] > 0
    assert m['vllm:request_success_total{model_name="%s",finished_reason="length"}' % name] > 0
    assert m["vllm:num_requests_running" + label] == 0
    assert m["blockflash:num_free_kv_blocks" + label] == m["blockflash:num_kv_blocks" + label]
    assert m["vllm:time_to_first_token_seconds_bucket" + label[:-1] + ',le="+Inf"}'] == \
        m["vllm:time_to_first_token_seconds_count" + label]


def test_auth_and_queue(binary, model_dir):
    with Server(binary, model_dir, "--api-key", "sekret", "--max-queue", "1",
                "--served-model-name", "tiny", "alias") as s:
        status, _, data = request("GET", s.base + "/v1/models")
        check_error(status, json.loads(data), 401, "AuthenticationError")
        status, _, data = request("GET", s.base + "/v1/models", headers={"Authorization": "Bearer nope"})
        assert status == 401
        status, _, data = request("GET", s.base + "/v1/models", headers={"Authorization": "Bearer sekret"})
        assert status == 200 and [m["id"] for m in json.loads(data)["data"]] == ["tiny", "alias"]
        assert request("GET", s.base + "/health")[0] == 200
        assert request("GET", s.base + "/metrics")[0] == 200
        auth = {"Authorization": "Bearer sekret"}
        status, r = post_json(s.base, "/v1/completions", {"model": "alias", "prompt": "x", "max_tokens": 2},
                              headers=auth)
        assert status == 200 and r["model"] == "tiny"
        # Queue limit: one long request holds the only place; the next gets 503.
        long_req = threading.Thread(target=post_json, args=(s.base, "/v1/completions", {
            "prompt": "x", "max_tokens": 400, "ignore_eos": True}), kwargs={"headers": auth})
        long_req.start()
        deadline = time.time() + 10
        while metrics(s.base)["vllm:num_requests_running"] == 0 and time.time() < deadline:
            time.sleep(0.01)
        status, body = post_json(s.base, "/v1/completions", {"prompt": "y", "max_tokens": 2}, headers=auth)
        check_error(status, body, 503, "ServiceUnavailableError", contains="busy")
        long_req.join()
        status, _ = post_json(s.base, "/v1/completions", {"prompt": "y", "max_tokens": 2}, headers=auth)
        assert status == 200
    with Server(binary, model_dir, env={"VLLM_API_KEY": "envkey"}) as s:
        assert request("GET", s.base + "/v1/models")[0] == 401
        assert request("GET", s.base + "/v1/models", headers={"Authorization": "Bearer envkey"})[0] == 200


def test_shutdown(binary, model_dir):
    """SIGTERM stops the server promptly, answering a running request with a 503."""
    s = Server(binary, model_dir, max_model_len=20000)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=post_json(
        s.base, "/v1/completions", {"prompt": "x", "max_tokens": 19000, "ignore_eos": True})))
    worker.start()
    deadline = time.time() + 10
    while metrics(s.base)["vllm:num_requests_running"] == 0 and time.time() < deadline:
        time.sleep(0.01)
    started = time.time()
    s.proc.terminate()
    assert s.proc.wait(10) == 0
    assert time.time() - started < 2
    worker.join()
    check_error(*result["r"], 503, "ServiceUnavailableError", contains="shutting down")


def main():
    binary, checkpoint = main_args()
    model_dir = make_model_dir(checkpoint)
    with Server(binary, model_dir, "--max-body-bytes", "200000") as s:
        name = model_dir
        test_basics(s.base, name)
        greedy = test_completions(s.base, name)
        test_completions_stream(s.base, greedy)
        test_chat(s.base, name)
        test_tokenize(s.base)
        test_errors(s.base)
        test_metrics(s.base, name)
        assert s.alive()
    test_auth_and_queue(binary, model_dir)
    test_shutdown(binary, model_dir)
    print("OK")


if __name__ == "__main__":
    main()
