#!/usr/bin/env python3
"""Writes a Hugging Face-style Qwen3.5 checkpoint with random bf16 weights (numpy only), for
timing the safetensors loader on real file sizes where no real checkpoint can be downloaded.

  python3 tools/make_synthetic_checkpoint.py CONFIG.json OUT_DIR [--layers N] [--shard-gb G]
      [--tokenizer-from DIR]

CONFIG.json is a text config (bench/configs/*.json, dense only); --layers keeps the first N
layers (layer_types trimmed to match) so the checkpoint fits the disk at hand. The values are a
random block repeated (content does not matter for load speed; it is never all zeros). Shards
are named as transformers names them, with model.safetensors.index.json. --tokenizer-from copies
a tokenizer (tokenizer.json, tokenizer_config.json) so that `blockflash generate` can run it.
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np


def tensor_specs(c):
    """(name, shape) of every tensor our loader takes, in checkpoint order."""
    H, V = c["hidden_size"], c["vocab_size"]
    hk, hv = c["linear_num_key_heads"], c["linear_num_value_heads"]
    dk, dv = c["linear_key_head_dim"], c["linear_value_head_dim"]
    conv_dim = 2 * hk * dk + hv * dv
    hq, hkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    inter = c["intermediate_size"]
    specs = [("model.embed_tokens.weight", (V, H))]
    for i, kind in enumerate(c["layer_types"]):
        p = f"model.layers.{i}."
        specs += [(p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,))]
        if kind == "linear_attention":
            a = p + "linear_attn."
            specs += [(a + "in_proj_qkv.weight", (conv_dim, H)), (a + "in_proj_z.weight", (hv * dv, H)),
                      (a + "in_proj_b.weight", (hv, H)), (a + "in_proj_a.weight", (hv, H)),
                      (a + "conv1d.weight", (conv_dim, 1, c["linear_conv_kernel_dim"])),
                      (a + "dt_bias", (hv,)), (a + "A_log", (hv,)), (a + "norm.weight", (dv,)),
                      (a + "out_proj.weight", (H, hv * dv))]
        else:
            a = p + "self_attn."
            specs += [(a + "q_proj.weight", (hq * hd * 2, H)), (a + "k_proj.weight", (hkv * hd, H)),
                      (a + "v_proj.weight", (hkv * hd, H)), (a + "o_proj.weight", (H, hq * hd)),
                      (a + "q_norm.weight", (hd,)), (a + "k_norm.weight", (hd,))]
        m = p + "mlp."
        specs += [(m + "gate_proj.weight", (inter, H)), (m + "up_proj.weight", (inter, H)),
                  (m + "down_proj.weight", (H, inter))]
    specs += [("model.norm.weight", (H,))]
    if not c.get("tie_word_embeddings", False):
        specs += [("lm_head.weight", (V, H))]
    return specs


def random_block(n_bytes, seed=1):
    """bf16 values in about [-0.03, 0.03], as raw bytes."""
    x = np.random.default_rng(seed).uniform(-0.03, 0.03, n_bytes // 2).astype(np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def write_shard(path, names_shapes, block):
    header, offset = {}, 0
    for name, shape in names_shapes:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in names_shapes:
            n = 2 * int(np.prod(shape))
            while n > 0:
                k = min(n, len(block))
                f.write(block[:k])
                n -= k
    return offset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=5.0)
    ap.add_argument("--tokenizer-from", default="")
    args = ap.parse_args()
    c = json.load(open(args.config))
    if args.layers:
        c["num_hidden_layers"] = args.layers
        c["layer_types"] = c["layer_types"][: args.layers]
    os.makedirs(args.out, exist_ok=True)
    json.dump(c, open(os.path.join(args.out, "config.json"), "w"), indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json") if args.tokenizer_from else ():
        shutil.copy(os.path.join(args.tokenizer_from, name), args.out)
    specs = tensor_specs(c)
    shards, current, size = [], [], 0
    for name, shape in specs:
        n = 2 * int(np.prod(shape))
        if current and size + n > args.shard_gb * 1e9:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += n
    shards.append(current)
    block = random_block(64 << 20)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(args.out, fname), shard, block)
        weight_map.update({name: fname for name, _ in shard})
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(args.out, "model.safetensors.index.json"), "w"), indent=1)
    print(f"wrote {len(specs)} tensors, {total / 1e9:.2f} GB in {len(shards)} shards to {args.out}")


if __name__ == "__main__":
    main()
