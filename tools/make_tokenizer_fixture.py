#!/usr/bin/env python3
"""Builds the tiny tokenizer fixtures in tests/data/tokenizer/ with HF `tokenizers`.

tokenizer.json has exactly Qwen3.5's pipeline (NFC, Split(Qwen3.5 regex, isolated) +
ByteLevel(use_regex=False), BPE without unk, ByteLevel decoder) and Qwen's added tokens at
the ids right after ~900 trained regular tokens (total < 1000, so tiny models use vocab 1024).
cases.json / decode_cases.json are what HF produces for them: the C++ tokenizer must match.
tokenizer_gpt2.json / cases_gpt2.json cover plain ByteLevel(use_regex=True).

Run from the repository root: python3 tools/make_tokenizer_fixture.py
"""
import json
import os
import random

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, trainers)

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tokenizer")

QWEN35_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"
                r" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# (content, special) in Qwen's order; ids follow the regular vocabulary.
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
    ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True), ("<|repo_name|>", True), ("<|file_sep|>", True),
    ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog didn't care; it's been there before.",
    "I'LL be there at 10:30, she's said. We've got 3 apples, you're late, they'd know, I'm here.",
    "Transformers process tokens in parallel; attention weights every pair of positions.",
    "In 1969, 600 million people watched the landing. Pi is 3.14159265358979323846.",
    "Prices: $19.99, €25,00, £7 — total 52.99 (tax incl.). Call +1-555-0100 now!",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < num_blocks; ++i) {\n\tsum += x[i] * w[i];\n}\nreturn sum;\n",
    "#include <vector>\nstd::vector<int32_t> ids = tokenizer.encode(\"hello\");\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\r\n",
    "{\"name\": \"blockflash\", \"version\": 1, \"tags\": [\"llm\", \"cuda\"]}",
    "   leading spaces, trailing spaces   \n\n\nthree newlines\r\nwindows line\ttab\t\ttabs",
    "Voilà un café très agréable à Paris; l'été dernier, nous étions à Besançon.",
    "Straße, Größe, über, schön — Ärger und Öl. Ça va? Niño, año, mañana.",
    "Привет, мир! Как дела? Это тест токенизатора. Москва, Санкт-Петербург.",
    "Γειά σου κόσμε. Η γλώσσα είναι όμορφη.",
    "你好，世界！今天天气很好。我们正在测试分词器，中文、日文和韩文。",
    "東京は日本の首都です。ひらがなとカタカナ、漢字を使います。こんにちは！",
    "안녕하세요, 세계! 한국어 토크나이저 테스트입니다. 감사합니다.",
    "مرحبا بالعالم. هذه جملة باللغة العربية للاختبار.",
    "שלום עולם. नमस्ते दुनिया। สวัสดีชาวโลก",
    "Emoji: 😀😃😄 👍🏽 ❤️ 🇫🇷 👨‍👩‍👧‍👦 🧑‍💻 🎉✨🔥",
    "Combining marks: e\u0301 a\u0300 o\u0308 n\u0303 \u0915\u093f \u0e01\u0e34",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 12345678901234567890 3.5e-7 0x1F",
    "Qwen3.5 uses hybrid Gated DeltaNet and gated attention layers with a paged KV cache.",
    "<html><body><p class=\"x\">Hello &amp; welcome</p></body></html>",
    "a+b=c; x*y/z; (1+2)*3 == 9; [a, b, c]; {k: v}; ~!@#%^&*_-=|\\:;'<>,.?/",
    "user: what's the capital of France?\nassistant: The capital of France is Paris.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "She sells sea shells by the sea shore. Peter Piper picked a peck of pickled peppers.",
    "git commit -m \"tokenizer: add BPE\" && cmake --build build -j2 && ./test_tokenizer",
    "    indented code\n        deeper\n            deepest\n",
    "The year 2024 had 366 days; 2025 has 365. Counting: one, two, three, four, five.",
]

# Pieces the test cases and the random strings are built from.
PIECES = [
    "hello", " world", "Hello", "don't", " I'LL", " she's", " we've", "'re", "'D",
    "  ", "   ", "\t", "\n", "\n\n\n", "\r\n", " \n", "\t\n ", "12345", "3.14", "0",
    "中文", "日本語", "한국어", "مرحبا", "café", "cafe\u0301", "e\u0301", "\u0301",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "def f(x):", "{\"a\": 1}", "a+b", "!!!", "...",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
    "<|im_start", "im_end|>", "<", "|", "Привет", "\u00a0", "\u3000", "x", "ß",
]

CASES = [
    "", " ", "a", "Hello, world!", "hello world", "  two leading", "trailing   ",
    "trailing\n", "tabs\tand\t\ttabs", "line1\nline2\n\n\nline5", "crlf\r\nline\r\n",
    "   \n\n  \t", "\n", "\t", "              ",
    "don't", "I'LL", "she's", "DON'T STOP", "we're, you've, they'd, I'm",
    "12345678901234567890", "3.14159", "Room 101, floor 7", "0x1F3A", "1,000,000.00",
    "你好，世界！", "東京は日本の首都です。", "안녕하세요, 세계!", "مرحبا بالعالم",
    "Привет, мир!", "Γειά σου", "नमस्ते", "สวัสดี",
    "caf\u00e9", "cafe\u0301", "e\u0301\u0301", "\u0301abc", "a\u0308o\u0308u\u0308", "n\u0303",
    "😀", "👍🏽👍🏿", "👨‍👩‍👧‍👦 family", "🧑‍💻 coder", "🇫🇷🇩🇪", "❤️🔥",
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += i;\n}",
    "{\"key\": [1, 2, 3]}", "a+b==c&&d||e", "~!@#$%^&*()_+",
    "<|im_start|>user\nhi<|im_end|>", "<|im_start|>system\nYou are helpful.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>",
    "text<|endoftext|>more", " <|im_end|> ", "<|im_end|><|im_end|>", "<|im_start", "<|im_end|",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "<think>reasoning</think>answer",
    "<|vision_start|><|image_pad|><|vision_end|>describe", "<<|im_end|>>",
    "\u180e|\u00a0|\u2028|\u3000|\u0085|\u200b", "ſ's 'S 'LL 'Ll",
]


def build(pre_tokenizer, vocab_size):
    tok = Tokenizer(models.BPE())  # no unk_token, byte_fallback False, as Qwen
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    regular = tok.get_vocab_size()
    tok.add_tokens([AddedToken(c, special=s, normalized=False) for c, s in ADDED_TOKENS])
    for i, (content, special) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(content) == regular + i, content
    return tok, regular


def random_texts(rng, count, max_pieces):
    out = []
    for _ in range(count):
        out.append("".join(rng.choice(PIECES) for _ in range(rng.randint(5, max_pieces))))
    return out


def make_cases(tok, texts):
    cases = []
    # Note: python's Tokenizer.decode skips special tokens unless told otherwise.
    for text in texts:
        enc = tok.encode(text, add_special_tokens=False)
        cases.append({"text": text, "ids": enc.ids, "decoded": tok.decode(enc.ids, skip_special_tokens=False)})
    # allow_special=false: special tokens' text is plain text (non-special added tokens still split).
    tok.encode_special_tokens = True
    for text in [t for t in texts if "<" in t][:6]:
        enc = tok.encode(text, add_special_tokens=False)
        cases.append({"text": text, "ids": enc.ids,
                      "decoded": tok.decode(enc.ids, skip_special_tokens=False),
                      "allow_special": False})
    tok.encode_special_tokens = False
    return cases


def make_decode_cases(tok, rng, count):
    # Random ids, including lone pieces of multi-byte characters (lossy U+FFFD decoding).
    n = tok.get_vocab_size()
    cases = []
    for i in range(count):
        ids = [rng.randrange(n) for _ in range(rng.randint(1, 12))]
        if i % 3 == 0:  # favour byte tokens (ids < 256 are the byte alphabet)
            ids = [rng.randrange(256) if rng.random() < 0.7 else x for x in ids]
        cases.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return cases


def write_json(name, obj, indent=None):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    rng = random.Random(1234)

    qwen, regular = build(pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN35_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]), vocab_size=900)
    total = qwen.get_vocab_size()
    assert total < 1000, total
    print(f"qwen35 fixture: {regular} regular + {len(ADDED_TOKENS)} added = {total} ids")
    qwen.save(os.path.join(OUT_DIR, "tokenizer.json"))
    write_json("tokenizer_config.json", {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "model_max_length": 131072,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }, indent=2)
    texts = CASES + random_texts(rng, 8, 40)
    write_json("cases.json", make_cases(qwen, texts), indent=0)
    write_json("decode_cases.json", make_decode_cases(qwen, rng, 30), indent=0)

    gpt2, _ = build(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), vocab_size=600)
    gpt2.save(os.path.join(OUT_DIR, "tokenizer_gpt2.json"))
    write_json("cases_gpt2.json", make_cases(gpt2, CASES[::2] + random_texts(rng, 4, 30)), indent=0)


if __name__ == "__main__":
    main()
