"""Shared helpers of the server tests: a test model directory, starting `blockflash serve`
on a free port, and small HTTP helpers (urllib only, so no third-party package is needed).

The tiny golden checkpoints have a 1024-row LM head but a 926-token tokenizer; a random model
samples ids the tokenizer does not know. The fixture pads tokenizer.json with added tokens up
to the model's vocab_size (as real Qwen checkpoints' padded vocabularies are) and adds the
Qwen3.5 chat template as chat_template.jinja, the way Hugging Face finds it.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "data", "chat_templates", "qwen3_5.jinja")


def make_model_dir(checkpoint, template=TEMPLATE):
    """Copies (links) the checkpoint into a temp dir with a padded tokenizer and a template."""
    out = tempfile.mkdtemp(prefix="bf_serve_")
    for name in os.listdir(checkpoint):
        src = os.path.join(checkpoint, name)
        if name in ("tokenizer.json",) or not os.path.isfile(src):
            continue
        os.symlink(os.path.abspath(src), os.path.join(out, name))
    with open(os.path.join(checkpoint, "config.json")) as f:
        config = json.load(f)
    vocab_size = config.get("text_config", config)["vocab_size"]
    with open(os.path.join(checkpoint, "tokenizer.json")) as f:
        tok = json.load(f)
    used = set(tok["model"]["vocab"].values()) | {t["id"] for t in tok["added_tokens"]}
    for i in range(vocab_size):
        if i not in used:
            tok["added_tokens"].append({"id": i, "content": f"<|pad_{i}|>", "single_word": False,
                                        "lstrip": False, "rstrip": False, "normalized": False,
                                        "special": True})
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    if template:
        shutil.copy(template, os.path.join(out, "chat_template.jinja"))
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`blockflash serve` in a subprocess; use as a context manager."""

    def __init__(self, binary, model_dir, *extra, env=None, max_model_len=512):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="bf_serve_log_", suffix=".txt", delete=False)
        cmd = [binary, "serve", model_dir, "--port", str(self.port), "--device", "cpu",
               "--max-model-len", str(max_model_len), "--kv-cache-memory-gib", "0.25", *extra]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if request("GET", self.base + "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError("server did not become healthy:\n" + self.log_text())

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()[-5000:]

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(method, url, body=None, headers=None, raw=None, timeout=60):
    """Returns (status, headers, body bytes); never raises on HTTP error statuses."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(base, path, body, **kw):
    status, headers, data = request("POST", base + path, body, **kw)
    return status, (json.loads(data) if data else None)


def sse_events(data):
    """The `data:` payloads of an SSE body, JSON-decoded except the final [DONE]."""
    events = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def metrics(base):
    status, _, data = request("GET", base + "/metrics")
    assert status == 200
    values = {}
    for line in data.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        labels = name_labels[len(name):]
        values[name + labels] = float(value)
        values.setdefault(name, float(value))
    return values


def main_args():
    if len(sys.argv) < 3:
        print(f"usage: {sys.argv[0]} BLOCKFLASH_BINARY CHECKPOINT_DIR", file=sys.stderr)
        sys.exit(2)
    return sys.argv[1], sys.argv[2]


def wait_idle(base, timeout):
    """Polls /metrics until no request runs or waits and every KV block and state slot is free
    (a finished or aborted request is released by the engine loop shortly after its response
    or disconnect, not before); fails after `timeout` seconds: a leak."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = metrics(base)
        if (m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0 and
                m["blockflash:num_free_kv_blocks"] == m["blockflash:num_kv_blocks"] and
                m["blockflash:num_free_state_slots"] == m["blockflash:num_state_slots"]):
            return m
        time.sleep(0.005)
    raise AssertionError(f"engine not idle after {timeout}s: {metrics(base)}")
