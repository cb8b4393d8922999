#!/usr/bin/env python3
"""The official `openai` Python client against `blockflash serve`, used as a user would:
completions, chat, streaming, n=2, logprobs, errors as the client's exception types.
Skips (exit 77, CTest SKIP_RETURN_CODE) when `openai` is not installed (tools/setup.sh
installs it).  Usage: test_serve_openai_client.py BLOCKFLASH CHECKPOINT_DIR"""
import sys

try:
    import openai
except ImportError:
    print("SKIP: the `openai` package is not installed (pip install openai, or tools/setup.sh)")
    sys.exit(77)

from serve_util import Server, main_args, make_model_dir


def main():
    binary, checkpoint = main_args()
    model_dir = make_model_dir(checkpoint)
    with Server(binary, model_dir, "--served-model-name", "tiny-qwen", "--api-key", "k") as s:
        client = openai.OpenAI(base_url=s.base + "/v1", api_key="k", max_retries=0)
        models = client.models.list()
        assert [m.id for m in models.data] == ["tiny-qwen"]

        c = client.completions.create(model="tiny-qwen", prompt="Hello", max_tokens=8, temperature=0,
                                      logprobs=2, extra_body={"ignore_eos": True})
        assert c.object == "text_completion" and len(c.choices) == 1
        assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 8
        assert len(c.choices[0].logprobs.tokens) == 8 and len(c.choices[0].logprobs.top_logprobs) == 8

        stream = client.completions.create(model="tiny-qwen", prompt="Hello", max_tokens=8, temperature=0,
                                           stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True})
        text, usage = "", None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
            if chunk.usage:
                usage = chunk.usage
        assert text == c.choices[0].text and usage.completion_tokens == 8

        n2 = client.completions.create(model="tiny-qwen", prompt="Hi", max_tokens=4, n=2, seed=3)
        assert sorted(ch.index for ch in n2.choices) == [0, 1]

        chat = client.chat.completions.create(
            model="tiny-qwen", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0,
            logprobs=True, top_logprobs=3, n=2, extra_body={"ignore_eos": True})
        assert chat.object == "chat.completion" and len(chat.choices) == 2
        for ch in chat.choices:
            assert ch.message.role == "assistant" and ch.finish_reason == "length"
            assert len(ch.logprobs.content) == 6
            assert all(len(e.top_logprobs) == 3 for e in ch.logprobs.content)
            extra = ch.message.model_extra or {}
            assert "reasoning_content" in extra

        deltas, role, finish = [], None, None
        for chunk in client.chat.completions.create(
                model="tiny-qwen", messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
                temperature=0, stream=True, extra_body={"ignore_eos": True,
                                                        "chat_template_kwargs": {"enable_thinking": False}}):
            d = chunk.choices[0].delta
            role = role or d.role
            deltas.append(d.content or "")
            finish = chunk.choices[0].finish_reason or finish
        assert role == "assistant" and finish == "length"
        plain = client.chat.completions.create(
            model="tiny-qwen", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0,
            extra_body={"ignore_eos": True, "chat_template_kwargs": {"enable_thinking": False}})
        assert "".join(deltas) == plain.choices[0].message.content

        try:
            client.completions.create(model="nope", prompt="x", max_tokens=2)
            raise AssertionError("expected NotFoundError")
        except openai.NotFoundError as e:
            assert "The model `nope` does not exist." in str(e)
        try:
            client.completions.create(model="tiny-qwen", prompt="x", max_tokens=100000)
            raise AssertionError("expected BadRequestError")
        except openai.BadRequestError as e:
            assert "maximum context length" in str(e)
        try:
            openai.OpenAI(base_url=s.base + "/v1", api_key="wrong", max_retries=0).models.list()
            raise AssertionError("expected AuthenticationError")
        except openai.AuthenticationError:
            pass
    print("OK")


if __name__ == "__main__":
    main()
