#!/usr/bin/env python3
"""Build tiny random DFlash drafter checkpoints + reference greedy DFlash traces (goldens).

For every case in CASES this script
  1. loads an existing tiny Qwen3.5 target checkpoint (tests/goldens/<target>/, made by
     tools/make_goldens.py) in float32 on CPU (eager attention / eager experts),
  2. builds a tiny DFlash drafter with z-lab's reference `DFlashDraftModel` (imported at run
     time from a local copy of github.com/z-lab/dflash `dflash/model.py`; NOT part of this repo,
     see --ref), randomises every weight (norm weights ~ N(1, 0.3): Qwen3 norms are plain x*w),
     then runs a few Adam steps of DFlash distillation on the target's greedy continuations of
     the golden prompts (only so that the loop accepts 0..7 drafts; a random drafter never
     matches the target), rounds to bf16 and writes
     tests/goldens/dflash_<name>/{config.json, model.safetensors}
     (config.json hand-written in the real z-lab DFlash format; tensor names as z-lab
     checkpoints: layers.*, fc.weight, hidden_norm.weight, norm.weight; no embed_tokens /
     lm_head: the drafter uses the target's),
  3. reloads the drafter with `DFlashDraftModel.from_pretrained(dir, dtype=float32)` and runs the
     reference greedy DFlash loop (z-lab `dflash_generate`, temperature 0) for every prompt:
       * target side WITHOUT a cache (HF cannot roll back the Gated-DeltaNet recurrent state
         on partial acceptance): each verify runs the target on the whole sequence
         prompt + committed + block with output_hidden_states=True; exact;
       * drafter side with the reference's own cached path (_make_cache / _crop_to, new context
         features only, positions start-n_new .. start+B-1) -- these are the recorded values --
         cross-checked every step against (a) the same reference module run WITHOUT a cache on
         the whole context (positions 0..start-1) + block and (b) an independent plain-torch
         re-implementation with an explicit attention mask (full: non-causal over context ∪ block;
         sliding: key j visible from query p iff p - window < j <= p);
       * blocks are always full (B = block_size); the loop runs until >= N_NEW tokens are
         generated (the newest z-lab loop shrinks the last block to max_length - start; we have
         no max_length, so no step is truncated),
  4. asserts the lossless property (DFlash output == plain greedy continuation of the target)
     and writes tests/goldens/dflash_<name>/golden.json.

Usage:  python tools/make_dflash_goldens.py [--ref .ref/zlab_dflash_10129599/model.py]
                                            [--old-ref .ref/zlab_dflash_e763f230/model.py]
                                            [--cases dflash_dense,dflash_swa,dflash_moe]
Runs on CPU (float32), deterministic for a given torch/transformers version; ~30 s.
See tests/goldens/README.md (DFlash section) for the golden.json schema and the attention semantics.
"""

from __future__ import annotations

import argparse
import importlib.util
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
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import Qwen3_5ForCausalLM, Qwen3_5MoeForCausalLM  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEED = 20260601
PROMPT_SEED = 4321
PROMPT_LENGTHS = [5, 13, 40]
N_NEW = 32          # run DFlash steps until at least this many tokens are generated
TOPK = 5
DEV = torch.device("cpu")

# ----------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------

CASES = {
    # all full attention (non-causal), explicit target_layer_ids (3 taps != 2 draft layers,
    # includes layer 0 so the hidden_states[id + 1] offset is tested)
    "dflash_dense": dict(
        target="dense_flat", head_dim=32, layer_types=["full_attention"] * 2,
        sliding_window=None, target_layer_ids=[0, 3, 6], mask_token_id=1023,
    ),
    # layer 0 sliding (causal + window 6), layer 1 full; target_layer_ids absent from
    # config.json => default build_target_layer_ids(8 target layers, 2 draft layers) = [1, 5]
    "dflash_swa": dict(
        target="dense_flat", head_dim=32, layer_types=["sliding_attention", "full_attention"],
        sliding_window=6, target_layer_ids=None, mask_token_id=1023,
    ),
    # MoE target (6 layers, untied lm_head), all full attention, 2 taps
    "dflash_moe": dict(
        target="moe_flat", head_dim=32, layer_types=["full_attention"] * 2,
        sliding_window=None, target_layer_ids=[1, 4], mask_token_id=1000, train_steps=25,
    ),
}

COMMON_DRAFT = dict(
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    rms_norm_eps=1e-6,
    block_size=8,
    max_position_embeddings=4096,
)

# short distillation of the random drafter on the target's greedy continuations of some prompts
TRAIN_PROMPTS = (0, 1, 2)
TRAIN_STEPS = 20        # per case override "train_steps" (chosen so that accepted counts 0..7 all occur)
TRAIN_LR = 3e-3

# init scales
LINEAR_GAIN = 1.0   # std = gain / sqrt(fan_in)
NORM_MEAN, NORM_STD = 1.0, 0.3   # Qwen3RMSNorm is plain x*w: w ~ N(1, 0.3)


# ----------------------------------------------------------------------------------------------
# reference import
# ----------------------------------------------------------------------------------------------

def import_module_from(path: Path, name: str):
    # The reference file is used unmodified: with transformers 5.24 all its imports
    # (transformers.models.qwen3.modeling_qwen3.*, DynamicCache.activate_past_recording, ...)
    # resolve, so no import adaptation was needed.
    spec = importlib.util.spec_from_file_location(name, str(path))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def build_target_layer_ids(num_target_layers: int, num_draft_layers: int) -> list[int]:
    """z-lab's default tap spacing (dflash/model.py before target_layer_ids became mandatory;
    dflash.md section 1.2)."""
    if num_draft_layers == 1:
        return [num_target_layers // 2]
    start, end = 1, num_target_layers - 3
    span = end - start
    return [int(round(start + (i * span) / (num_draft_layers - 1))) for i in range(num_draft_layers)]


# ----------------------------------------------------------------------------------------------
# drafter checkpoint
# ----------------------------------------------------------------------------------------------

def drafter_config_json(case: dict, tcfg) -> dict:
    """config.json in the real z-lab DFlash format (cf. Qwen3-8B-DFlash-b16 / Qwen3.6-27B-DFlash)."""
    dflash_config = {"mask_token_id": case["mask_token_id"]}
    if case["target_layer_ids"] is not None:
        dflash_config["target_layer_ids"] = list(case["target_layer_ids"])
    swa = case["sliding_window"] is not None
    cfg = {
        "architectures": ["DFlashDraftModel"],
        "auto_map": {"AutoModel": "dflash.DFlashDraftModel"},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "block_size": COMMON_DRAFT["block_size"],
        "dflash_config": dflash_config,
        "dtype": "bfloat16",
        "head_dim": case["head_dim"],
        "hidden_act": "silu",
        "hidden_size": tcfg.hidden_size,
        "intermediate_size": COMMON_DRAFT["intermediate_size"],
        "layer_types": list(case["layer_types"]),
        "max_position_embeddings": COMMON_DRAFT["max_position_embeddings"],
        "model_type": "qwen3",
        "num_attention_heads": COMMON_DRAFT["num_attention_heads"],
        "num_hidden_layers": COMMON_DRAFT["num_hidden_layers"],
        "num_key_value_heads": COMMON_DRAFT["num_key_value_heads"],
        "num_target_layers": tcfg.num_hidden_layers,
        "rms_norm_eps": COMMON_DRAFT["rms_norm_eps"],
        "rope_theta": float(tcfg.rope_parameters["rope_theta"]),
        "sliding_window": case["sliding_window"],
        "tie_word_embeddings": False,
        "use_sliding_window": swa,
        "vocab_size": tcfg.vocab_size,
    }
    assert len(cfg["layer_types"]) == cfg["num_hidden_layers"]
    return cfg


@torch.no_grad()
def randomise(model: torch.nn.Module, gen: torch.Generator) -> dict:
    rules: dict[str, int] = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        if p.dim() == 1 and name.endswith("norm.weight"):
            rule, v = "norm(plain w) ~ N(1,0.3)", torch.randn(shape, generator=gen) * NORM_STD + NORM_MEAN
        elif p.dim() == 2:
            rule, v = "linear ~ N(0,1/sqrt(fan_in))", torch.randn(shape, generator=gen) * (LINEAR_GAIN / math.sqrt(shape[1]))
        else:
            raise RuntimeError(f"no randomisation rule for {name} {shape}")
        p.copy_(v.to(torch.bfloat16).to(p.dtype))
        rules[rule] = rules.get(rule, 0) + 1
    return rules


# ----------------------------------------------------------------------------------------------
# independent plain-torch drafter (explicit mask) for cross-checking the reference
# ----------------------------------------------------------------------------------------------

def _rms(x, w, eps):
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x, pos, theta):
    # x [T, nh, hd], neox style (rotate_half), full head_dim
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    ang = pos.float()[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


@torch.no_grad()
def my_drafter(sd: dict, cfg: dict, ctx_feat: torch.Tensor, block_emb: torch.Tensor, start: int) -> torch.Tensor:
    """ctx_feat [start, K*H] (target taps of positions 0..start-1), block_emb [B, H] at positions
    start..start+B-1. Returns the drafter's final-normed hidden states [B, H]."""
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    S, B = ctx_feat.shape[0], block_emb.shape[0]
    assert S == start
    c = _rms(ctx_feat @ sd["fc.weight"].T, sd["hidden_norm.weight"], eps)
    kpos = torch.cat([torch.arange(S), start + torch.arange(B)])
    qpos = start + torch.arange(B)
    x = block_emb.float()
    for li, lt in enumerate(cfg["layer_types"]):
        p = f"layers.{li}."
        h = _rms(x, sd[p + "input_layernorm.weight"], eps)
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(B, nh, hd)
        q = _rms(q, sd[p + "self_attn.q_norm.weight"], eps)
        kv_in = torch.cat([c, h], dim=0)
        k = (kv_in @ sd[p + "self_attn.k_proj.weight"].T).view(S + B, nkv, hd)
        k = _rms(k, sd[p + "self_attn.k_norm.weight"], eps)
        v = (kv_in @ sd[p + "self_attn.v_proj.weight"].T).view(S + B, nkv, hd)
        q, k = _rope(q, qpos, theta), _rope(k, kpos, theta)
        if lt == "sliding_attention":
            w = cfg["sliding_window"]
            vis = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] > qpos[:, None] - w)
        else:
            vis = torch.ones(B, S + B, dtype=torch.bool)
        rep = nh // nkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        sc = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        sc = sc.masked_fill(~vis[None], float("-inf"))
        o = torch.einsum("hqk,khd->qhd", torch.softmax(sc, dim=-1), v).reshape(B, nh * hd)
        x = x + o @ sd[p + "self_attn.o_proj.weight"].T
        h = _rms(x, sd[p + "post_attention_layernorm.weight"], eps)
        g = h @ sd[p + "mlp.gate_proj.weight"].T
        u = h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ sd[p + "mlp.down_proj.weight"].T
    return _rms(x, sd["norm.weight"], eps)


# ----------------------------------------------------------------------------------------------
# short distillation so that drafts are sometimes accepted
# ----------------------------------------------------------------------------------------------

def _rope_b(x, pos, theta):
    # x [b, T, nh, hd], pos [b, T]
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    ang = pos.float()[..., None] * inv
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos()[:, :, None, :], emb.sin()[:, :, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def train_forward(P: dict, cfg: dict, ctx: torch.Tensor, emb: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Batched, differentiable version of my_drafter: ctx [b, T0, K*H] (row r uses ctx positions
    < s[r] only), emb [b, B, H] at positions s[r]..s[r]+B-1. Same semantics as my_drafter."""
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    b, T0, _ = ctx.shape
    B = emb.shape[1]
    c = _rms(ctx @ P["fc.weight"].T, P["hidden_norm.weight"], eps)
    ar = torch.arange(T0)[None].expand(b, T0)
    kpos = torch.cat([ar, s[:, None] + torch.arange(B)[None]], dim=1)          # [b, T0+B]
    qpos = s[:, None] + torch.arange(B)[None]                                  # [b, B]
    valid = torch.cat([ar < s[:, None], torch.ones(b, B, dtype=torch.bool)], dim=1)
    x = emb
    for li, lt in enumerate(cfg["layer_types"]):
        p = f"layers.{li}."
        h = _rms(x, P[p + "input_layernorm.weight"], eps)
        q = _rms((h @ P[p + "self_attn.q_proj.weight"].T).view(b, B, nh, hd), P[p + "self_attn.q_norm.weight"], eps)
        kv_in = torch.cat([c, h], dim=1)
        k = _rms((kv_in @ P[p + "self_attn.k_proj.weight"].T).view(b, T0 + B, nkv, hd), P[p + "self_attn.k_norm.weight"], eps)
        v = (kv_in @ P[p + "self_attn.v_proj.weight"].T).view(b, T0 + B, nkv, hd)
        q, k = _rope_b(q, qpos, theta), _rope_b(k, kpos, theta)
        vis = valid[:, None, :].expand(b, B, T0 + B)
        if lt == "sliding_attention":
            w = cfg["sliding_window"]
            vis = vis & (kpos[:, None, :] <= qpos[:, :, None]) & (kpos[:, None, :] > qpos[:, :, None] - w)
        rep = nh // nkv
        k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
        sc = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        sc = sc.masked_fill(~vis[:, None], float("-inf"))
        o = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(sc, dim=-1), v).reshape(b, B, nh * hd)
        x = x + o @ P[p + "self_attn.o_proj.weight"].T
        h = _rms(x, P[p + "post_attention_layernorm.weight"], eps)
        x = x + (torch.nn.functional.silu(h @ P[p + "mlp.gate_proj.weight"].T) * (h @ P[p + "mlp.up_proj.weight"].T)) \
            @ P[p + "mlp.down_proj.weight"].T
    return _rms(x, P["norm.weight"], eps)


def distill(draft, target, cfg_json: dict, layer_ids: list[int], prompts: list[list[int]], steps: int,
            lr: float, seed: int) -> dict:
    """A few Adam steps on the DFlash objective (CE of the target's greedy tokens at the B-1 mask
    positions) over the anchors of the given prompts' greedy continuations, starting from the
    random init. Only there to make the golden loop accept some drafts; the weights stay arbitrary."""
    if steps <= 0:
        return {}
    torch.manual_seed(seed)
    B = cfg_json["block_size"]
    E = target.get_input_embeddings().weight.detach()
    head = target.lm_head
    batches = []
    for p in prompts:
        S = list(p) + greedy_full_recompute(target, p, N_NEW + B)
        with torch.no_grad():
            _, hs = target_full(target, S)
            feats = torch.cat([hs[i + 1] for i in layer_ids], dim=-1)[0]           # [T, K*H]
        n = len(p)
        anchors = torch.arange(n, n + N_NEW + 1)
        T0 = int(anchors.max())
        blocks = torch.full((len(anchors), B), cfg_json["dflash_config"]["mask_token_id"], dtype=torch.long)
        blocks[:, 0] = torch.tensor([S[a] for a in anchors])
        labels = torch.tensor([S[a + 1: a + B] for a in anchors])
        batches.append((feats[:T0][None].expand(len(anchors), T0, -1).contiguous(), E[blocks], anchors, labels))
    P = dict(draft.named_parameters())
    opt = torch.optim.Adam(P.values(), lr=lr)
    hist = []
    for it in range(steps):
        opt.zero_grad()
        loss = 0.0
        for ctx, emb, anchors, labels in batches:
            hdn = train_forward(P, cfg_json, ctx, emb, anchors)[:, 1:]
            loss = loss + torch.nn.functional.cross_entropy(head(hdn).flatten(0, 1), labels.flatten())
        loss = loss / len(batches)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
    return dict(steps=steps, lr=lr, loss_first=round(hist[0], 4), loss_last=round(hist[-1], 4))


# ----------------------------------------------------------------------------------------------
# reference loop
# ----------------------------------------------------------------------------------------------

def topk_entries(logprobs_row: torch.Tensor, k: int) -> list[dict]:
    v, i = torch.topk(logprobs_row, k)
    return [{"id": int(ii), "logprob": round(float(vv), 6)} for vv, ii in zip(v, i)]


@torch.no_grad()
def target_full(target, ids: list[int]):
    """Uncached target forward over the whole sequence: (logits [T, V], hidden_states tuple)."""
    x = torch.tensor([ids], dtype=torch.long, device=DEV)
    out = target(input_ids=x, use_cache=False, output_hidden_states=True)
    return out.logits[0].float(), out.hidden_states


@torch.no_grad()
def greedy_full_recompute(target, ids: list[int], n: int) -> list[int]:
    seq = list(ids)
    for _ in range(n):
        x = torch.tensor([seq], dtype=torch.long, device=DEV)
        seq.append(int(torch.argmax(target(input_ids=x, use_cache=False).logits[0, -1])))
    return seq[len(ids):]


@torch.no_grad()
def dflash_reference_loop(ref, draft, target, sd_f32: dict, cfg_json: dict, prompt: list[int],
                          check: dict, old_draft=None) -> dict:
    """Greedy DFlash, semantics of z-lab dflash_generate (temperature 0), see module docstring."""
    B = draft.block_size
    mask_id = draft.mask_token_id
    layer_ids = draft.target_layer_ids
    n = len(prompt)
    pos_all = torch.arange(n + N_NEW + 2 * B, device=DEV).unsqueeze(0)
    emb_scale = float(ref._draft_value(draft.config, "input_embedding_scale", 1.0))
    head = ref._output_head(target)

    # 1) target prefill
    logits, hs = target_full(target, prompt)
    first = int(torch.argmax(logits[-1]))
    new_ctx = ref.extract_context_feature(hs, layer_ids)[:, :n, :]       # [1, n, K*H]
    ctx_all = new_ctx.clone()
    seq = list(prompt) + [first]                                          # committed tokens
    start = n                                                             # anchor position
    cache = ref._make_cache(draft.config)

    out = dict(ids=list(prompt), first_token=first, steps=[])
    if check.get("want_ctx_check"):
        feat = draft.hidden_norm(draft.fc(ctx_all))[0]                    # [n, H]
        out["ctx_feature_check"] = dict(
            note="hidden_norm(fc(concat_k hidden_states[target_layer_ids[k] + 1])) of the prompt, first 8 of H values",
            position0=[round(float(v), 6) for v in feat[0, :8]],
            last_position=n - 1,
            last=[round(float(v), 6) for v in feat[n - 1, :8]],
            raw_taps_position0=[
                {"layer_id": lid, "hf_hidden_states_index": lid + 1,
                 "first8": [round(float(v), 6) for v in hs[lid + 1][0, 0, :8]]} for lid in layer_ids
            ],
        )

    while len(seq) - n < N_NEW:
        assert seq[start] == seq[-1] and len(seq) == start + 1
        block = torch.full((1, B), mask_id, dtype=torch.long, device=DEV)
        block[0, 0] = seq[start]
        noise = ref._raw_input_embeddings(target, block, emb_scale)

        # 2) draft, reference cached path (exactly as dflash_generate)
        h_c = draft(target_hidden=new_ctx, noise_embedding=noise,
                    position_ids=pos_all[:, start - new_ctx.shape[1]: start + B],
                    past_key_values=cache, use_cache=True)[:, 1 - B:, :]
        ref._crop_to(cache, start)
        assert cache.get_seq_length() == start
        dl = draft.compute_logits(h_c, head)[0].float()                   # [B-1, V]
        drafts = torch.argmax(dl, dim=-1)

        # cross-checks: same module without cache on the whole context; independent impl
        h_u = draft(target_hidden=ctx_all, noise_embedding=noise,
                    position_ids=pos_all[:, 0: start + B], past_key_values=None, use_cache=False)[:, 1 - B:, :]
        dl_u = draft.compute_logits(h_u, head)[0].float()
        h_m = my_drafter(sd_f32, cfg_json, ctx_all[0], noise[0], start)[1:]
        dl_m = head(h_m[None])[0].float()
        d_u = (dl_u - dl).abs().max().item()
        d_m = (dl_m - dl).abs().max().item()
        check["max_dlogit_cached_vs_uncached"] = max(check.get("max_dlogit_cached_vs_uncached", 0.0), d_u)
        check["max_dlogit_ref_vs_independent"] = max(check.get("max_dlogit_ref_vs_independent", 0.0), d_m)
        assert d_u < 1e-4, f"reference cached vs uncached drafter differ: {d_u}"
        assert d_m < 1e-4, f"reference vs independent drafter differ: {d_m}"
        assert torch.equal(torch.argmax(dl_u, -1), drafts) and torch.equal(torch.argmax(dl_m, -1), drafts)
        if "sliding_attention" in cfg_json["layer_types"]:
            # how much the window itself bites (same causal mask, window removed)
            nowin = dict(cfg_json, sliding_window=10 ** 9)
            dl_w = head(my_drafter(sd_f32, nowin, ctx_all[0], noise[0], start)[1:][None])[0].float()
            check["max_dlogit_if_window_removed"] = max(check.get("max_dlogit_if_window_removed", 0.0),
                                                        (dl_w - dl).abs().max().item())
            check["window_removed_draft_tokens_differ_steps"] = check.get(
                "window_removed_draft_tokens_differ_steps", 0) + int(not torch.equal(torch.argmax(dl_w, -1), drafts))
        if old_draft is not None:
            h_o = old_draft(target_hidden=ctx_all, noise_embedding=noise,
                            position_ids=pos_all[:, 0: start + B], past_key_values=None,
                            use_cache=False, is_causal=False)[:, 1 - B:, :]
            dl_o = head(h_o)[0].float()
            check["max_dlogit_old_ref_vs_ref"] = max(check.get("max_dlogit_old_ref_vs_ref", 0.0),
                                                     (dl_o - dl).abs().max().item())
            check["old_ref_draft_tokens_differ_steps"] = check.get("old_ref_draft_tokens_differ_steps", 0) + int(
                not torch.equal(torch.argmax(dl_o, -1), drafts))

        block[0, 1:] = drafts
        dlp = torch.log_softmax(dl.double(), dim=-1)

        # 3) verify: target on the whole sequence (no cache), exact
        v_logits, v_hs = target_full(target, seq[:start] + block[0].tolist())
        posterior = torch.argmax(v_logits[start: start + B], dim=-1)       # [B]
        a = int((block[0, 1:] == posterior[:-1]).cumprod(dim=0).sum())
        t2 = torch.topk(torch.log_softmax(v_logits[start: start + a + 1].double(), -1), 2).values
        check["min_target_top1_top2_gap"] = min(check.get("min_target_top1_top2_gap", 1e9),
                                                float((t2[:, 0] - t2[:, 1]).min()))
        bonus = int(posterior[a])
        committed = block[0, 1: a + 1].tolist() + [bonus]
        out["steps"].append(dict(
            start=start,
            block_ids=block[0].tolist(),
            draft_top=[topk_entries(dlp[i], TOPK) for i in range(B - 1)],
            target_argmax=posterior.tolist(),
            accepted=a,
            committed=committed,
        ))
        seq += committed
        # context features of the anchor + accepted drafts (their target hidden states are now known)
        new_ctx = ref.extract_context_feature(v_hs, layer_ids)[:, start: start + a + 1, :]
        ctx_all = torch.cat([ctx_all, new_ctx], dim=1)
        start += a + 1
        assert ctx_all.shape[1] == start

    out["output_ids"] = seq[n:]
    return out


# ----------------------------------------------------------------------------------------------
# main per case
# ----------------------------------------------------------------------------------------------

def load_target(tdir: Path, moe: bool):
    Cls = Qwen3_5MoeForCausalLM if moe else Qwen3_5ForCausalLM
    kw = dict(attn_implementation="eager")
    if moe:
        kw["experts_implementation"] = "eager"
    m = Cls.from_pretrained(str(tdir), dtype=torch.float32, **kw).to(DEV).eval()
    return m


def make_case(name: str, case: dict, ref, old_ref, out_root: Path, prompts_regular: np.ndarray) -> dict:
    t0 = time.time()
    print(f"\n=== {name} (target {case['target']}) ===", flush=True)
    tdir = REPO / "tests" / "goldens" / case["target"]
    tcfg_json = json.loads((tdir / "config.json").read_text())
    moe = "moe" in tcfg_json["model_type"]
    target = load_target(tdir, moe)
    tcfg = target.config
    out_dir = out_root / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    cfg_json = drafter_config_json(case, tcfg)
    (out_dir / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    default_ids = build_target_layer_ids(tcfg.num_hidden_layers, cfg_json["num_hidden_layers"])
    layer_ids = case["target_layer_ids"] if case["target_layer_ids"] is not None else default_ids
    # taps must not include the last target layer: HF's hidden_states[-1] is the *final-normed*
    # output (transformers' capture_outputs ties it to last_hidden_state), not the raw layer output
    assert max(layer_ids) < tcfg.num_hidden_layers - 1, layer_ids

    def load_drafter_config():
        c = ref.Qwen3Config.from_pretrained(str(out_dir))
        if "target_layer_ids" not in c.dflash_config:
            # ADAPTATION: the newest reference raises when dflash_config.target_layer_ids is absent;
            # its older versions (and dflash.md 1.2) default to build_target_layer_ids(...).
            c.dflash_config = dict(c.dflash_config, target_layer_ids=default_ids)
        return c

    case_seed = SEED + sum(ord(ch) for ch in name)
    torch.manual_seed(case_seed)
    gen = torch.Generator().manual_seed(case_seed)
    draft0 = ref.DFlashDraftModel(load_drafter_config()).to(torch.float32).eval()
    rules = randomise(draft0, gen)
    print(f"  randomised: {rules}")
    rng = np.random.default_rng(PROMPT_SEED)
    prompts = [rng.choice(prompts_regular, size=L, replace=True).tolist() for L in PROMPT_LENGTHS]
    target.requires_grad_(False)
    tr = distill(draft0, target, cfg_json, layer_ids, [prompts[i] for i in TRAIN_PROMPTS],
                 case.get("train_steps", TRAIN_STEPS), case.get("train_lr", TRAIN_LR), case_seed)
    if tr:
        tr["trained_on_prompts"] = list(TRAIN_PROMPTS)
        print(f"  distilled: {tr}")
    with torch.no_grad():
        for prm in draft0.parameters():
            prm.copy_(prm.to(torch.bfloat16).float())
    sd_ref = {k: v.detach().clone() for k, v in draft0.state_dict().items()}
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in sorted(sd_ref.items())},
              str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out_dir / "model.safetensors", 0o644)
    del draft0

    # reload the checkpoint exactly as a user would
    draft, info = ref.DFlashDraftModel.from_pretrained(
        str(out_dir), config=load_drafter_config(), dtype=torch.float32, output_loading_info=True)
    draft = draft.to(DEV).eval()
    print(f"  reload: missing={info.get('missing_keys')} unexpected={info.get('unexpected_keys')} "
          f"mismatched={info.get('mismatched_keys')}")
    assert not info.get("missing_keys") and not info.get("unexpected_keys") and not info.get("mismatched_keys"), info
    sd = draft.state_dict()
    assert set(sd) == set(sd_ref), (set(sd) ^ set(sd_ref))
    for k, v in sd_ref.items():
        assert torch.equal(sd[k].float(), v.float()), f"weight mismatch after reload: {k}"
    disk = load_file(str(out_dir / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in disk.values())
    dc = draft.config
    assert draft.target_layer_ids == layer_ids, (draft.target_layer_ids, layer_ids)
    assert draft.block_size == cfg_json["block_size"] and draft.mask_token_id == case["mask_token_id"]
    assert float(dc.rope_parameters["rope_theta"]) == cfg_json["rope_theta"], dc.rope_parameters
    assert list(dc.layer_types) == cfg_json["layer_types"] and dc.sliding_window == cfg_json["sliding_window"]
    for li, lay in enumerate(draft.layers):
        sw = lay.self_attn.sliding_window
        assert lay.self_attn.is_causal == (cfg_json["layer_types"][li] == "sliding_attention")
        assert sw == (cfg_json["sliding_window"] if cfg_json["layer_types"][li] == "sliding_attention" else None)
    sd_f32 = {k: v.float() for k, v in sd.items()}

    old_draft = None
    if old_ref is not None:
        old_draft = old_ref.DFlashDraftModel.from_pretrained(
            str(out_dir), dtype=torch.float32, attn_implementation="sdpa").eval()
        assert old_draft.target_layer_ids == layer_ids

    check: dict = {}
    results = []
    for pi, p in enumerate(prompts):
        check["want_ctx_check"] = pi == 0
        r = dflash_reference_loop(ref, draft, target, sd_f32, cfg_json, p, check, old_draft)
        g = greedy_full_recompute(target, p, len(r["output_ids"]))
        r["greedy_output_ids"] = g
        acc = [s["accepted"] for s in r["steps"]]
        ndist = len({t for s in r["steps"] for t in s["block_ids"][1:]})
        print(f"  prompt {pi} len {len(p)}: {len(r['steps'])} steps, accepted {acc}, "
              f"{len(r['output_ids'])} tokens, distinct draft ids {ndist}/{7 * len(r['steps'])}, "
              f"lossless {r['output_ids'] == g}", flush=True)
        assert r["output_ids"] == g, f"lossless property violated:\n {r['output_ids']}\n {g}"
        results.append(r)
    check.pop("want_ctx_check")

    # diversity / degeneracy stats of the drafter
    all_drafts = [t for r in results for s in r["steps"] for t in s["block_ids"][1:]]
    gaps = [row[0]["logprob"] - row[1]["logprob"] for r in results for s in r["steps"] for row in s["draft_top"]]
    stats = dict(
        steps=sum(len(r["steps"]) for r in results),
        accepted_total=sum(s["accepted"] for r in results for s in r["steps"]),
        accepted_hist={str(a): sum(1 for r in results for s in r["steps"] if s["accepted"] == a) for a in range(8)},
        distinct_draft_ids=len(set(all_drafts)),
        draft_positions=len(all_drafts),
        min_draft_top1_top2_gap=round(min(gaps), 6),
        **{k: (round(v, 9) if isinstance(v, float) else v) for k, v in check.items()},
    )
    print(f"  stats: {stats}")

    golden = dict(
        format="blockflash-dflash-golden-v1",
        case=name,
        target=case["target"],
        block_size=cfg_json["block_size"],
        mask_token_id=case["mask_token_id"],
        target_layer_ids=layer_ids,
        target_layer_ids_in_config_json=case["target_layer_ids"] is not None,
        layer_types=cfg_json["layer_types"],
        sliding_window=cfg_json["sliding_window"],
        attention_semantics=dict(
            full_attention="non-causal: every block query sees all context positions 0..start-1 and all B block positions",
            sliding_attention="causal + window: query at absolute position p sees key positions j with p - window < j <= p "
                              "(context and block alike)",
        ),
        reference=dict(
            zlab_dflash_model_py=os.path.basename(os.path.dirname(str(ref.__file__))),
            transformers=transformers.__version__, torch=torch.__version__, device="cpu",
            compute_dtype="float32", weights_dtype_on_disk="bfloat16",
            target_attn_implementation="eager", drafter_attention="reference sdpa path with its explicit bool mask",
            target_side="no cache: full recompute over prompt+committed+block every verify",
            drafter_side="reference cached path (recorded) == uncached whole-context path == independent impl",
            weight_seed=case_seed, prompt_seed=PROMPT_SEED, distillation=tr or None, topk=TOPK, n_new_min=N_NEW,
            draft_top="top-5 of log_softmax(target lm_head(drafter output)) at the B-1 mask positions",
            logprob_rounding=6,
        ),
        stats=stats,
        prompts=results,
    )
    (out_dir / "golden.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    print(f"  wrote {out_dir} ({size / 1e3:.0f} KB) in {time.time() - t0:.1f}s")
    assert size < 400e3, f"golden dir too large: {size}"
    return dict(name=name, stats=stats, size=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=str(REPO / ".ref" / "zlab_dflash_10129599" / "model.py"),
                    help="local copy of z-lab/dflash dflash/model.py (not in the repo)")
    ap.add_argument("--old-ref", default=str(REPO / ".ref" / "zlab_dflash_e763f230" / "model.py"),
                    help="optional older z-lab dflash/model.py, only compared against (informative)")
    ap.add_argument("--out", default=str(REPO / "tests" / "goldens"))
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()

    ref = import_module_from(Path(args.ref), "zlab_dflash_model")
    old_ref = import_module_from(Path(args.old_ref), "zlab_dflash_model_old") if Path(args.old_ref).is_file() else None
    tj = json.loads((REPO / "tests" / "goldens" / "dense_flat" / "tokenizer.json").read_text())
    added = {t["id"] for t in tj.get("added_tokens", [])}
    regular = np.array(sorted(i for i in tj["model"]["vocab"].values() if i not in added))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; ref {args.ref}; "
          f"old ref {args.old_ref if old_ref else None}; {len(regular)} regular token ids")

    out_root = Path(args.out)
    summary = [make_case(n, CASES[n], ref, old_ref, out_root, regular) for n in args.cases.split(",")]
    print("\nsummary:")
    for s in summary:
        print(f"  {s['name']:13s} {s['size'] / 1e3:.0f} KB  {s['stats']}")


if __name__ == "__main__":
    main()
