#!/usr/bin/env python3
"""Build tiny random Qwen3.5 checkpoints and transformers reference outputs (goldens).

For every case in CASES this script
  1. builds a tiny Hugging Face model of the given layout (dense / MoE, flat CausalLM /
     nested ConditionalGeneration) with *all* parameters randomised (norm weights included,
     so the (1+w) RMSNorm convention is exercised; A_log, dt_bias, conv1d, router,
     shared_expert_gate too),
  2. rounds every weight to bfloat16 and saves the checkpoint in bf16 with
     `save_pretrained` (sharded for `moe_nested`), post-edits it where the case asks for it
     (config.json without `layer_types`, extra `mtp.*` tensors), writes a
     generation_config.json and copies the tokenizer files from tests/data/tokenizer/,
  3. reloads the saved checkpoint with dtype=float32, attn_implementation="eager" on CPU and
     computes reference outputs in float32 from the bf16-rounded weights:
       * teacher-forced top-5 log-probs for every prompt position,
       * 32 greedy tokens per prompt (full recompute every step, EOS ignored) and the
         per-step top-2 log-probs,
  4. cross-checks the reference: chunked prefill vs token-by-token cached decode (which runs
     the recurrent gated-delta-rule path), HF generate() vs the full-recompute greedy loop,
     and for nested checkpoints the ConditionalGeneration model vs the CausalLM loaded from
     the same directory,
  5. writes tests/goldens/<case>/golden.json.

Usage:  python tools/make_goldens.py [--out tests/goldens] [--cases a,b] [--tokenizer DIR]
                                     [--wait-tokenizer SECONDS]
Runs on CPU only (also on GPU boxes) for determinism; takes well under a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
torch.use_deterministic_algorithms(True, warn_only=True)

import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    GenerationConfig,
    Qwen3_5Config,
    Qwen3_5ForCausalLM,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForCausalLM,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3_5MoeTextConfig,
    Qwen3_5TextConfig,
)

REPO = Path(__file__).resolve().parent.parent
SEED = 20250531
PROMPT_SEED = 1234
PROMPT_LENGTHS = [1, 7, 64, 300]
N_GREEDY = 32
TOPK = 5
DEV = torch.device("cpu")

# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------

LLLF = ["linear_attention"] * 3 + ["full_attention"]
LLF = ["linear_attention"] * 2 + ["full_attention"]

COMMON_TEXT = dict(
    vocab_size=1024,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_conv_kernel_dim=4,
    rms_norm_eps=1e-6,
    max_position_embeddings=4096,
    hidden_act="silu",
    attention_bias=False,
)

TINY_VISION = dict(
    depth=1,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    in_channels=3,
    patch_size=4,
    temporal_patch_size=2,
    spatial_merge_size=2,
    out_hidden_size=64,  # = text hidden_size
    num_position_embeddings=16,
)

CASES = {
    # Qwen3_5ForCausalLM, flat config, tied embeddings, explicit layer_types, 8 layers LLLF x2
    "dense_flat": dict(
        moe=False, nested=False, tie=True, num_layers=8, layer_types=LLLF * 2,
        head_dim=32, linear_value_head_dim=16, rope_theta=1e7,
    ),
    # Qwen3_5ForConditionalGeneration, nested config with tiny vision tower, untied, 6 layers
    # with full_attention_interval=2 (layer_types removed from config.json), head_dim 64,
    # linear_value_head_dim 32, rope_theta 1e4, two fake mtp.* tensors.
    "dense_nested": dict(
        moe=False, nested=True, tie=False, num_layers=6, full_attention_interval=2,
        drop_layer_types=True, head_dim=64, linear_value_head_dim=32, rope_theta=1e4,
        add_mtp=True,
    ),
    # Qwen3_5MoeForCausalLM, flat, untied, 8 experts top-2, 6 layers [L,L,F] x2 (explicit
    # layer_types), experts saved per expert as transformers writes them
    # (mlp.experts.<e>.{gate,up,down}_proj.weight)
    "moe_flat": dict(
        moe=True, nested=False, tie=False, num_layers=6, layer_types=LLF * 2,
        head_dim=32, linear_value_head_dim=32, rope_theta=1e7,
    ),
    # Qwen3_5MoeForConditionalGeneration, nested, tied, 7 layers with an irregular explicit
    # layer_types [L,L,L,F,L,L,F] (matches no full_attention_interval), experts rewritten
    # FUSED 3-D (mlp.experts.gate_up_proj [E,2I,H], mlp.experts.down_proj [E,H,I]),
    # saved sharded (several model-0000i-of-0000N.safetensors + model.safetensors.index.json)
    "moe_nested": dict(
        moe=True, nested=True, tie=True, num_layers=7, layer_types=LLLF + LLF,
        head_dim=32, linear_value_head_dim=16, rope_theta=1e7, shard_bytes=300_000,
        fuse_experts=True,
    ),
}

MOE_FIELDS = dict(
    num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
)

# init scales
EMBED_STD = 1.0
LINEAR_GAIN = 1.0        # std = gain / sqrt(fan_in)
LM_HEAD_GAIN = 4.0       # untied lm_head std = gain / sqrt(hidden)
ROUTER_GAIN = 2.0
NORM_STD = 0.3           # (1+w) norms: w ~ N(0, NORM_STD)
GATED_NORM_STD = 0.3     # linear_attn.norm (plain w): w ~ N(1, GATED_NORM_STD)
CONV_STD = 0.5
TIED_EMBED_STD = 0.5     # tied cases: logits = h . E  =>  std ~ sqrt(hidden) * std(E)


def mrope_section_for(rotary_dim: int) -> list[int]:
    """Split rotary_dim/2 frequencies over (t, h, w) like Qwen's [11, 11, 10] for 32."""
    half = rotary_dim // 2
    base = half // 3
    sec = [base, base, base]
    for i in range(half - 3 * base):
        sec[i] += 1
    return sec


# ----------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------

def wait_for_tokenizer(tok_dir: Path, wait_s: float) -> None:
    need = [tok_dir / "tokenizer.json", tok_dir / "tokenizer_config.json"]
    t0 = time.time()
    while not all(p.is_file() for p in need):
        if time.time() - t0 > wait_s:
            sys.exit(f"tokenizer files not found in {tok_dir} after {wait_s:.0f}s")
        print(f"waiting for {tok_dir} ...", flush=True)
        time.sleep(20)
    time.sleep(2)  # let a writer finish


def tokenizer_info(tok_dir: Path) -> dict:
    tj = json.loads((tok_dir / "tokenizer.json").read_text())
    tc = json.loads((tok_dir / "tokenizer_config.json").read_text())
    vocab = tj.get("model", {}).get("vocab", {})
    if isinstance(vocab, list):  # unigram style
        regular_ids = list(range(len(vocab)))
    else:
        regular_ids = sorted(set(vocab.values()))
    added = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    special_ids = {t["id"] for t in tj.get("added_tokens", []) if t.get("special", False)}
    added_ids = set(added.values())
    regular_ids = [i for i in regular_ids if i not in added_ids]

    def tok_id(key):
        v = tc.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v is None:
            return None
        if v in added:
            return added[v]
        if not isinstance(vocab, list) and v in vocab:
            return vocab[v]
        return None

    n_total = max([*regular_ids, *added_ids]) + 1
    return dict(
        regular_ids=regular_ids,
        n_total=n_total,
        bos=tok_id("bos_token"),
        eos=tok_id("eos_token"),
        pad=tok_id("pad_token"),
        special_ids=sorted(special_ids),
        mm={k: v for k, v in added.items()
            if k in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")},
    )


# ----------------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------------

def build_config(case: dict, tok: dict):
    head_dim = case["head_dim"]
    rotary_dim = int(head_dim * 0.25)
    text = dict(COMMON_TEXT)
    text.update(
        num_hidden_layers=case["num_layers"],
        head_dim=head_dim,
        linear_value_head_dim=case["linear_value_head_dim"],
        tie_word_embeddings=case["tie"],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": case["rope_theta"],
            "partial_rotary_factor": 0.25,
            "mrope_section": mrope_section_for(rotary_dim),
            "mrope_interleaved": True,
        },
        bos_token_id=tok["bos"],
        eos_token_id=tok["eos"],
        pad_token_id=tok["pad"],
    )
    if "layer_types" in case:
        text["layer_types"] = list(case["layer_types"])
    else:
        text["full_attention_interval"] = case["full_attention_interval"]
    if case["moe"]:
        text.update(MOE_FIELDS)
    TextCfg = Qwen3_5MoeTextConfig if case["moe"] else Qwen3_5TextConfig
    if not case["nested"]:
        return TextCfg(**text)
    Cfg = Qwen3_5MoeConfig if case["moe"] else Qwen3_5Config
    return Cfg(
        text_config=text,
        vision_config=dict(TINY_VISION),
        tie_word_embeddings=case["tie"],
        # multimodal special ids taken from the tiny tokenizer (unused by the text-only goldens)
        image_token_id=tok["mm"].get("<|image_pad|>", 1020),
        video_token_id=tok["mm"].get("<|video_pad|>", 1021),
        vision_start_token_id=tok["mm"].get("<|vision_start|>", 1018),
        vision_end_token_id=tok["mm"].get("<|vision_end|>", 1019),
        bos_token_id=tok["bos"], eos_token_id=tok["eos"], pad_token_id=tok["pad"],
    )


def impl_kwargs(case: dict) -> dict:
    """Plain PyTorch code paths: eager attention, and for MoE the per-expert loop (not grouped_mm)."""
    kw = dict(attn_implementation="eager")
    if case["moe"]:
        kw["experts_implementation"] = "eager"
    return kw


def model_class(case: dict):
    if case["moe"]:
        return Qwen3_5MoeForConditionalGeneration if case["nested"] else Qwen3_5MoeForCausalLM
    return Qwen3_5ForConditionalGeneration if case["nested"] else Qwen3_5ForCausalLM


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator, tied: bool, hidden: int) -> dict:
    """Overwrite every parameter with random values; returns {rule: count} for the log."""
    rules: dict[str, int] = {}

    def randn(shape, std, mean=0.0):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

    seen = set()
    for name, p in model.named_parameters(remove_duplicate=True):
        if id(p) in seen:
            continue
        seen.add(id(p))
        shape = tuple(p.shape)
        if name.endswith("embed_tokens.weight"):
            rule, v = "embed", randn(shape, TIED_EMBED_STD if tied else EMBED_STD)
        elif name == "lm_head.weight":
            rule, v = "lm_head", randn(shape, LM_HEAD_GAIN / math.sqrt(hidden))
        elif name.endswith("A_log"):
            rule = "A_log"
            v = torch.empty(shape).uniform_(math.log(0.05), math.log(3.0), generator=gen)
        elif name.endswith("dt_bias"):
            rule, v = "dt_bias", randn(shape, 0.5)
        elif name.endswith("conv1d.weight"):
            rule, v = "conv1d", randn(shape, CONV_STD)
        elif name.endswith("linear_attn.norm.weight"):
            rule, v = "gated_norm(plain w)", randn(shape, GATED_NORM_STD, 1.0)
        elif ".visual." in name or name.startswith("model.visual") or name.startswith("visual"):
            if p.dim() >= 2:
                fan_in = int(np.prod(shape[1:]))
                rule, v = "visual_matrix", randn(shape, 1.0 / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                rule, v = "visual_norm", randn(shape, 0.3, 1.0)
            else:
                rule, v = "visual_vec", randn(shape, 0.1)
        elif name.endswith("mlp.gate.weight"):
            rule, v = "router", randn(shape, ROUTER_GAIN / math.sqrt(shape[-1]))
        elif name.endswith("shared_expert_gate.weight"):
            rule, v = "shared_expert_gate", randn(shape, 1.0 / math.sqrt(shape[-1]))
        elif name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            rule, v = "experts", randn(shape, LINEAR_GAIN / math.sqrt(shape[-1]))
        elif p.dim() == 1 and "norm" in name:
            rule, v = "norm(1+w)", randn(shape, NORM_STD)
        elif p.dim() == 2:
            rule, v = "linear", randn(shape, LINEAR_GAIN / math.sqrt(shape[-1]))
        else:
            raise RuntimeError(f"no randomisation rule for {name} {shape}")
        p.copy_(v.to(torch.bfloat16).to(p.dtype))  # round to bf16 right away
        rules[rule] = rules.get(rule, 0) + 1
    return rules


# ----------------------------------------------------------------------------------------------
# checkpoint post-processing
# ----------------------------------------------------------------------------------------------

def edit_config_drop_layer_types(out_dir: Path, interval: int) -> None:
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    tc = cfg["text_config"] if "text_config" in cfg else cfg
    had = "layer_types" in tc
    tc.pop("layer_types", None)
    tc["full_attention_interval"] = interval
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    print(f"  config.json: layer_types {'removed' if had else 'was absent'}, "
          f"full_attention_interval={interval}")


def add_fake_mtp(out_dir: Path, hidden: int, gen: torch.Generator) -> list[str]:
    st = out_dir / "model.safetensors"
    assert st.is_file(), "add_fake_mtp expects an unsharded checkpoint"
    with safe_open(str(st), "pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(st))
    extra = {
        "mtp.fc.weight": (torch.randn((hidden, 2 * hidden), generator=gen) / math.sqrt(2 * hidden)),
        "mtp.norm.weight": torch.randn((hidden,), generator=gen) * NORM_STD,
    }
    for k, v in extra.items():
        tensors[k] = v.to(torch.bfloat16)
    meta = dict(meta)
    meta.setdefault("format", "pt")
    save_file(tensors, str(st), metadata=meta)
    return list(extra)


def fuse_experts_and_shard(out_dir: Path, fuse: bool, num_experts: int, shard_bytes: int | None) -> dict:
    """Rewrite per-expert tensors (as transformers saves them) into the fused 3-D layout
    (`...mlp.experts.gate_up_proj` [E, 2I, H] = per expert cat(gate, up) on dim 0,
    `...mlp.experts.down_proj` [E, H, I]) and optionally write the checkpoint sharded in
    transformers' format (model-0000i-of-0000N.safetensors + model.safetensors.index.json)."""
    import re

    files = sorted(out_dir.glob("*.safetensors"))
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(f)))
        f.unlink()
    idx = out_dir / "model.safetensors.index.json"
    if idx.exists():
        idx.unlink()
    pat = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
    groups: dict[str, dict] = {}
    for k in list(tensors):
        m = pat.match(k)
        if m and fuse:
            groups.setdefault(m.group(1), {})[(int(m.group(2)), m.group(3))] = tensors.pop(k)
    for prefix, g in groups.items():
        assert len(g) == 3 * num_experts, (prefix, len(g))
        tensors[prefix + ".gate_up_proj"] = torch.stack(
            [torch.cat([g[(e, "gate_proj")], g[(e, "up_proj")]], dim=0) for e in range(num_experts)]
        ).contiguous()
        tensors[prefix + ".down_proj"] = torch.stack([g[(e, "down_proj")] for e in range(num_experts)]).contiguous()

    names = sorted(tensors)
    if not shard_bytes:
        save_file({k: tensors[k] for k in names}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return tensors
    shards: list[list[str]] = [[]]
    cur = 0
    for k in names:
        nb = tensors[k].numel() * tensors[k].element_size()
        if shards[-1] and cur + nb > shard_bytes:
            shards.append([])
            cur = 0
        shards[-1].append(k)
        cur += nb
    n = len(shards)
    weight_map = {}
    for i, ks in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file({k: tensors[k] for k in ks}, str(out_dir / fn), metadata={"format": "pt"})
        weight_map.update({k: fn for k in ks})
    index = dict(
        metadata=dict(
            total_parameters=sum(t.numel() for t in tensors.values()),
            total_size=sum(t.numel() * t.element_size() for t in tensors.values()),
        ),
        weight_map=dict(sorted(weight_map.items())),
    )
    idx.write_text(json.dumps(index, indent=2) + "\n")
    return tensors


def write_generation_config(out_dir: Path, tok: dict) -> None:
    # like Qwen3.5's generation_config: eos = [<|im_end|>, <|endoftext|>]
    eos = [i for i in (tok["eos"], tok["pad"]) if i is not None]
    gc = GenerationConfig(
        bos_token_id=tok["bos"], eos_token_id=eos if len(eos) > 1 else (eos[0] if eos else None),
        pad_token_id=tok["pad"], do_sample=False,
    )
    gc.save_pretrained(str(out_dir))


def checkpoint_tensor_index(out_dir: Path) -> dict:
    """{name: (shape, dtype, file)} over all safetensors files of the checkpoint."""
    res = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                sl = h.get_slice(k)
                res[k] = (list(sl.get_shape()), sl.get_dtype(), f.name)
    return res


# ----------------------------------------------------------------------------------------------
# reference computation
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def logits_full(model, ids: list[int]) -> torch.Tensor:
    x = torch.tensor([ids], dtype=torch.long, device=DEV)
    out = model(input_ids=x, use_cache=False)
    return out.logits[0].float()


@torch.no_grad()
def logits_stepwise(model, ids: list[int]) -> torch.Tensor:
    """Token-by-token with the HF cache (recurrent gated-delta path, conv state update)."""
    from transformers import DynamicCache

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cache = DynamicCache(config=cfg)
    outs = []
    for t, tid in enumerate(ids):
        x = torch.tensor([[tid]], dtype=torch.long, device=DEV)
        out = model(input_ids=x, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        outs.append(out.logits[0, -1].float())
    return torch.stack(outs)


def topk_entries(logprobs_row: torch.Tensor, k: int) -> list[dict]:
    v, i = torch.topk(logprobs_row, k)
    return [{"id": int(ii), "logprob": round(float(vv), 6)} for vv, ii in zip(v, i)]


@torch.no_grad()
def greedy_full_recompute(model, ids: list[int], n: int):
    seq = list(ids)
    toks, top2, top2_ids = [], [], []
    for _ in range(n):
        lp = torch.log_softmax(logits_full(model, seq)[-1].double(), dim=-1)
        v, i = torch.topk(lp, 2)
        nxt = int(i[0])
        toks.append(nxt)
        top2.append([round(float(v[0]), 6), round(float(v[1]), 6)])
        top2_ids.append([int(i[0]), int(i[1])])
        seq.append(nxt)
    return toks, top2, top2_ids


@torch.no_grad()
def greedy_hf_generate(model, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids], dtype=torch.long, device=DEV)
    out = model.generate(
        input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
        do_sample=False, eos_token_id=None, pad_token_id=0,
    )
    return out[0, len(ids):].tolist()


def config_summary(model, case_name: str, case: dict, ckpt: dict) -> dict:
    tc = model.config.get_text_config()
    rp = dict(tc.rope_parameters)
    s = dict(
        case=case_name,
        architecture=type(model).__name__,
        model_type=model.config.model_type,
        text_model_type=tc.model_type,
        nested=case["nested"],
        moe=case["moe"],
        tie_word_embeddings=bool(case["tie"]),
        vocab_size=tc.vocab_size,
        hidden_size=tc.hidden_size,
        intermediate_size=tc.intermediate_size,
        num_hidden_layers=tc.num_hidden_layers,
        layer_types=list(tc.layer_types),
        layer_types_in_config_json=not case.get("drop_layer_types", False),
        full_attention_interval=case.get("full_attention_interval"),
        num_attention_heads=tc.num_attention_heads,
        num_key_value_heads=tc.num_key_value_heads,
        head_dim=tc.head_dim,
        rotary_dim=int(tc.head_dim * rp.get("partial_rotary_factor", 1.0)),
        rope_parameters=rp,
        linear_num_key_heads=tc.linear_num_key_heads,
        linear_num_value_heads=tc.linear_num_value_heads,
        linear_key_head_dim=tc.linear_key_head_dim,
        linear_value_head_dim=tc.linear_value_head_dim,
        linear_conv_kernel_dim=tc.linear_conv_kernel_dim,
        rms_norm_eps=tc.rms_norm_eps,
        max_position_embeddings=tc.max_position_embeddings,
        checkpoint_files=sorted({v[2] for v in ckpt.values()}),
        num_tensors=len(ckpt),
        extra_tensors_ignored_by_hf=sorted(k for k in ckpt if k.startswith("mtp.")),
        num_visual_tensors=sum(1 for k in ckpt if ".visual." in k or k.startswith("model.visual")),
    )
    if case["moe"]:
        s.update({k: getattr(tc, k) for k in MOE_FIELDS})
    return s


# ----------------------------------------------------------------------------------------------
# main per case
# ----------------------------------------------------------------------------------------------

def make_case(name: str, case: dict, out_root: Path, tok_dir: Path, tok: dict, prompts: list[list[int]],
              skip_checks: bool) -> dict:
    t0 = time.time()
    print(f"\n=== {name} ===", flush=True)
    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    case_seed = SEED + sum(ord(c) for c in name)
    torch.manual_seed(case_seed)
    gen = torch.Generator().manual_seed(case_seed)

    cfg = build_config(case, tok)
    Cls = model_class(case)
    model = Cls._from_config(cfg, dtype=torch.float32, **impl_kwargs(case)).to(DEV).eval()
    hidden = cfg.get_text_config().hidden_size
    rules = randomise(model, gen, tied=case["tie"], hidden=hidden)
    print(f"  randomised: {rules}")
    if case["tie"]:
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr(), "not tied"
    ref_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # ---- save bf16 ----
    model.to(torch.bfloat16)
    for sub in ("text_config", "vision_config"):  # sub-configs would otherwise say float32
        if getattr(model.config, sub, None) is not None:
            getattr(model.config, sub).dtype = torch.bfloat16
    model.save_pretrained(str(out_dir), safe_serialization=True)
    del model
    if case.get("fuse_experts") or case.get("shard_bytes"):
        fuse_experts_and_shard(out_dir, bool(case.get("fuse_experts")), MOE_FIELDS["num_experts"],
                               case.get("shard_bytes"))
    if case.get("drop_layer_types"):
        edit_config_drop_layer_types(out_dir, case["full_attention_interval"])
    if case.get("add_mtp"):
        added = add_fake_mtp(out_dir, hidden, gen)
        print(f"  added fake tensors: {added}")
    write_generation_config(out_dir, tok)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / fn, out_dir / fn)

    ckpt = checkpoint_tensor_index(out_dir)
    dtypes = sorted({v[1] for v in ckpt.values()})
    print(f"  saved {len(ckpt)} tensors in {sorted({v[2] for v in ckpt.values()})}, dtypes {dtypes}")

    # ---- reload in float32 ----
    model, info = Cls.from_pretrained(
        str(out_dir), dtype=torch.float32, output_loading_info=True, **impl_kwargs(case),
    )
    model = model.to(DEV).eval()
    print(f"  reload: missing={info.get('missing_keys')} unexpected={info.get('unexpected_keys')} "
          f"mismatched={info.get('mismatched_keys')}")
    assert not info.get("missing_keys"), info
    assert not info.get("mismatched_keys"), info
    # reloaded weights must equal the bf16-rounded originals exactly
    sd = model.state_dict()
    for k, v in ref_sd.items():
        assert k in sd, k
        assert torch.equal(sd[k].float(), v.float()), f"weight mismatch after reload: {k}"
    assert list(model.config.get_text_config().layer_types) == list(
        cfg.get_text_config().layer_types), "layer_types differ after reload"

    # ---- references ----
    results = []
    stats = dict(gap12=[], p1=[])
    step_diffs = []
    for pi, ids in enumerate(prompts):
        logits = logits_full(model, ids)
        lp = torch.log_softmax(logits.double(), dim=-1)
        tf = [topk_entries(lp[i], TOPK) for i in range(len(ids))]
        for row in tf:
            stats["gap12"].append(row[0]["logprob"] - row[1]["logprob"])
            stats["p1"].append(math.exp(row[0]["logprob"]))
        toks, top2, top2_ids = greedy_full_recompute(model, ids, N_GREEDY)
        results.append(dict(ids=ids, teacher_forced=tf, greedy=toks, greedy_top2=top2,
                            greedy_top2_ids=top2_ids))

        if not skip_checks:
            # chunked prefill vs recurrent token-by-token decode
            step = logits_stepwise(model, ids)
            d = (torch.log_softmax(step.double(), -1) - lp).abs().max().item()
            gh = greedy_hf_generate(model, ids, N_GREEDY)
            same = gh == toks
            print(f"  prompt {pi} len {len(ids)}: max|lp_chunked - lp_stepwise|={d:.2e}; "
                  f"hf.generate==full-recompute greedy: {same}", flush=True)
            assert d < 1e-3, f"chunked vs stepwise mismatch {d}"
            step_diffs.append(d)
            if not same:
                print(f"    generate: {gh}\n    recompute: {toks}")

    # nested: the text-only CausalLM loaded from the same directory must agree
    if case["nested"] and not skip_checks:
        CL = Qwen3_5MoeForCausalLM if case["moe"] else Qwen3_5ForCausalLM
        try:
            lm, info2 = CL.from_pretrained(str(out_dir), dtype=torch.float32, output_loading_info=True,
                                           **impl_kwargs(case))
            lm.eval()
            d = max((logits_full(lm, p) - logits_full(model, p)).abs().max().item() for p in prompts)
            print(f"  {CL.__name__} from nested dir: missing={info2.get('missing_keys')}, "
                  f"max|logit diff| vs {Cls.__name__} = {d:.2e}")
        except Exception as e:  # informative only
            print(f"  {CL.__name__} from nested dir failed: {type(e).__name__}: {e}")

    # estimate of the float32 reference's own error: float64 forward of the same weights
    fp64_err = None
    if not skip_checks:
        m64 = Cls.from_pretrained(str(out_dir), dtype=torch.float64, **impl_kwargs(case)).eval()
        fp64_err = 0.0
        for r in results:
            lp64 = torch.log_softmax(logits_full(m64, r["ids"]).double(), -1)
            for i, row in enumerate(r["teacher_forced"]):
                for e in row:
                    fp64_err = max(fp64_err, abs(e["logprob"] - float(lp64[i, e["id"]])))
        del m64
        print(f"  float32 reference vs float64 forward: max |dlogprob| over stored top-5 = {fp64_err:.2e}")

    g = np.array(stats["gap12"])
    p1 = np.array(stats["p1"])
    st = dict(
        teacher_forced_positions=int(g.size),
        top1_top2_gap_median=round(float(np.median(g)), 4),
        frac_gap_lt_0p01=round(float((g < 0.01).mean()), 4),
        frac_gap_lt_2e_3=round(float((g < 2e-3).mean()), 4),
        top1_prob_median=round(float(np.median(p1)), 4),
        frac_top1_prob_gt_0p05=round(float((p1 > 0.05).mean()), 4),
        min_greedy_gap=round(float(min(a - b for r in results for a, b in r["greedy_top2"])), 6),
        max_abs_dlogprob_fp32_chunked_vs_fp32_stepwise=(round(max(step_diffs), 7) if step_diffs else None),
        max_abs_dlogprob_top5_fp32_vs_fp64=(round(fp64_err, 7) if fp64_err is not None else None),
    )
    print(f"  stats: {st}")

    golden = dict(
        format="blockflash-golden-v1",
        case=name,
        config_summary=config_summary(model, name, case, ckpt),
        reference=dict(
            transformers=transformers.__version__, torch=torch.__version__, device="cpu",
            compute_dtype="float32", weights_dtype_on_disk="bfloat16", attn_implementation="eager",
            experts_implementation=("eager" if case["moe"] else None),
            linear_attention_impl="torch_chunk_gated_delta_rule (chunk 64), no FLA",
            weight_seed=case_seed, prompt_seed=PROMPT_SEED, topk=TOPK, n_greedy=N_GREEDY,
            greedy_method="full recompute each step (no cache), argmax, EOS ignored",
            logprob_rounding=6,
        ),
        stats=st,
        prompts=results,
    )
    (out_dir / "golden.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"  wrote {out_dir} ({size/1e6:.2f} MB) in {time.time()-t0:.1f}s")
    assert size < 1.5e6, f"golden dir too large: {size}"
    return dict(name=name, stats=st, size=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "tests" / "goldens"))
    ap.add_argument("--tokenizer", default=str(REPO / "tests" / "data" / "tokenizer"))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--wait-tokenizer", type=float, default=1200.0)
    ap.add_argument("--skip-checks", action="store_true", help="skip the cross-checks (faster)")
    args = ap.parse_args()

    tok_dir = Path(args.tokenizer)
    wait_for_tokenizer(tok_dir, args.wait_tokenizer)
    tok = tokenizer_info(tok_dir)
    assert tok["n_total"] <= COMMON_TEXT["vocab_size"], f"tokenizer has {tok['n_total']} ids > vocab 1024"
    print(f"tokenizer: {len(tok['regular_ids'])} regular ids, {tok['n_total']} total, "
          f"bos={tok['bos']} eos={tok['eos']} pad={tok['pad']}")

    rng = np.random.default_rng(PROMPT_SEED)
    regular = np.array(tok["regular_ids"])
    prompts = [rng.choice(regular, size=n, replace=True).tolist() for n in PROMPT_LENGTHS]

    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in args.cases.split(","):
        summary.append(make_case(name, CASES[name], out_root, tok_dir, tok, prompts, args.skip_checks))
    print("\nsummary:")
    for s in summary:
        print(f"  {s['name']:14s} {s['size']/1e6:.2f} MB  {s['stats']}")


if __name__ == "__main__":
    main()
