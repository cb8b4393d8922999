#!/usr/bin/env python3
"""Renders chat-template goldens for tests/tokenizer/chat_template_test.cpp.

Each case is (template file, context); the expected text comes from transformers' own
compiled Jinja environment (trim_blocks, lstrip_blocks, loopcontrols, its tojson,
raise_exception and strftime_now), i.e. exactly what apply_chat_template renders.
Cases that raise get the exception message instead. Contexts carry what
apply_chat_template passes: messages, tools, documents, add_generation_prompt and the
template kwargs (special tokens, enable_thinking, ...).

Usage: python tools/make_chat_template_goldens.py  (writes tests/data/chat_templates/goldens.json)
"""
import copy
import json
from pathlib import Path

from transformers.utils.chat_template_utils import _compile_jinja_template

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "chat_templates"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city, e.g. \"Paris\" or 'Zürich' <fast>.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "top_k": {"type": "number"}}},
        },
    },
]

SYSTEM_USER = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello there, who are you?"},
]

MULTI_TURN = [
    {"role": "system", "content": "  Be brief.  "},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "Simple arithmetic: 2 + 2 = 4.\n"},
    {"role": "user", "content": "And times 3?"},
    {"role": "assistant", "content": "<think>\n4 * 3 = 12\n</think>\n\n12"},
    {"role": "user", "content": "Thanks! Explain why."},
]

TOOL_CALLS = [
    {"role": "user", "content": "Weather in Paris and London, then search news."},
    {
        "role": "assistant",
        "content": "Let me check both.",
        "reasoning_content": "Need two weather calls.",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 3}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "London", "extra": {"nested": [1, 2.5, None, True]}, "tags": ["a", "b"]}}},
        ],
    },
    {"role": "tool", "content": "{\"temp\": 21}"},
    {"role": "tool", "content": "Rainy, 14°C"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": "news \"today\"", "top_k": 5}}}],
    },
    {"role": "tool", "content": "Headline: <b>markets up</b>"},
    {"role": "assistant", "content": "Paris is 21°C, London rainy. Markets are up."},
    {"role": "user", "content": "Great."},
]

AGENT_LOOP = TOOL_CALLS[:6]  # ends on a tool response: the model is mid-task

LIST_CONTENT = [
    {"role": "system", "content": [{"type": "text", "text": "You see images."}]},
    {
        "role": "user",
        "content": [
            {"type": "image", "image": "file:///a.png"},
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "http://x/b.png"}},
            {"type": "video", "video": "file:///c.mp4"},
            {"type": "text", "text": "And the video?"},
        ],
    },
    {"role": "assistant", "content": [{"type": "text", "text": "A cat, then a dog."}]},
    {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
]

SYSTEM_NOT_FIRST = [
    {"role": "user", "content": "hi"},
    {"role": "system", "content": "late system"},
]

ONLY_TOOL_RESPONSES = [
    {"role": "user", "content": "<tool_response>\nx\n</tool_response>"},
]

SPECIAL = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}

CONVERSATIONS = {
    "system_user": SYSTEM_USER,
    "multi_turn_reasoning": MULTI_TURN,
    "tool_calls": TOOL_CALLS,
    "agent_loop": AGENT_LOOP,
    "list_content": LIST_CONTENT,
}


def context(messages, add_generation_prompt, tools=None, **kwargs):
    ctx = {"messages": copy.deepcopy(messages), "tools": tools, "documents": None,
           "add_generation_prompt": add_generation_prompt}
    ctx.update(SPECIAL)
    ctx.update(kwargs)
    return ctx


def cases():
    out = []
    for name in ("qwen3_5", "qwen3_6", "qwen3", "synthetic_features", "synthetic_macros"):
        for conv_name, conv in CONVERSATIONS.items():
            if name == "qwen3" and conv_name == "list_content":
                continue  # Qwen3 (text-only) renders list content as empty; covered once below
            out.append((name, f"{conv_name}", context(conv, True)))
            out.append((name, f"{conv_name}/no_gen", context(conv, False)))
            out.append((name, f"{conv_name}/no_think", context(conv, True, enable_thinking=False)))
            out.append((name, f"{conv_name}/tools", context(conv, True, tools=TOOLS, enable_thinking=True)))
        out.append((name, "system_user/undefined_kwargs", {"messages": copy.deepcopy(SYSTEM_USER), "add_generation_prompt": True}))
    out.append(("qwen3", "list_content", context(LIST_CONTENT, True)))
    out.append(("qwen3_5", "list_content/vision_ids", context(LIST_CONTENT, True, add_vision_id=True)))
    out.append(("qwen3_6", "multi_turn_reasoning/preserve", context(MULTI_TURN, True, preserve_thinking=True)))
    out.append(("qwen3_6", "tool_calls/preserve", context(TOOL_CALLS, False, tools=TOOLS, preserve_thinking=True)))
    out.append(("qwen3_6", "multi_turn_reasoning/preserve_false", context(MULTI_TURN, True, preserve_thinking=False)))
    for name in ("qwen3_5", "qwen3_6"):
        out.append((name, "error/system_not_first", context(SYSTEM_NOT_FIRST, True)))
        out.append((name, "error/no_messages", context([], True)))
        out.append((name, "error/no_user_query", context(ONLY_TOOL_RESPONSES, True)))
        out.append((name, "error/image_in_system", context([{"role": "system", "content": [{"type": "image"}]}, {"role": "user", "content": "x"}], True)))
        out.append((name, "error/bad_role", context([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}], True)))
    for conv_name, conv in CONVERSATIONS.items():
        if conv_name in ("system_user", "multi_turn_reasoning"):
            out.append(("chatml", conv_name, context(conv, True)))
            out.append(("chatml", conv_name + "/no_gen", context(conv, False)))
    return out


def main():
    compiled = {}
    goldens = []
    for template_name, case_name, ctx in cases():
        if template_name not in compiled:
            source = (DATA_DIR / f"{template_name}.jinja").read_text(encoding="utf-8")
            compiled[template_name] = _compile_jinja_template(source)
        entry = {"template": template_name, "name": f"{template_name}/{case_name}", "context": ctx}
        try:
            entry["expected"] = compiled[template_name].render(**copy.deepcopy(ctx))
        except Exception as e:  # raise_exception -> TemplateError(message)
            entry["error"] = str(e)
        goldens.append(entry)
    path = DATA_DIR / "goldens.json"
    path.write_text(json.dumps(goldens, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(goldens)} cases to {path}")


if __name__ == "__main__":
    main()
