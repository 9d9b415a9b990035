#!/usr/bin/env python3
"""Converts llama2.c's stories260K.bin into a safetensors file.

Usage:
    scripts/convert_stories260k.py STORIES260K.BIN [OUTPUT.safetensors]

(OUTPUT defaults to models/stories260K/model.safetensors beside this script's
repository root.) Needs python3 and numpy only.

Input: a llama2.c "legacy" checkpoint, little-endian: 7 int32 (dim,
hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a positive
vocab_size means the classifier shares the token embedding), then float32
arrays in this order: token_embedding [vocab, dim]; rms_att [layers, dim];
wq [layers, dim, dim]; wk [layers, kv_dim, dim]; wv [layers, kv_dim, dim];
wo [layers, dim, dim]; rms_ffn [layers, dim]; w1 [layers, hidden, dim];
w2 [layers, dim, hidden]; w3 [layers, hidden, dim]; rms_final [dim];
freq_cis_real and freq_cis_imag [seq_len, head_size / 2] (and, when the
classifier is not shared, wcls [vocab, dim]).

Output: one F32 tensor per matrix and norm, named as Hugging Face's Llama
models name them (model.embed_tokens.weight, model.layers.{i}.self_attn.
{q,k,v,o}_proj.weight, model.layers.{i}.mlp.{gate,down,up}_proj.weight for
w1/w2/w3, model.layers.{i}.input_layernorm.weight for rms_att,
model.layers.{i}.post_attention_layernorm.weight for rms_ffn,
model.norm.weight, and lm_head.weight only when not shared). Matrices keep
llama2.c's [out, in] row-major layout (y = W x), which is also Hugging
Face's. freq_cis is left out: it is recomputed from head_size and seq_len
(llama2.c's theta 10000). The metadata holds the configuration (dim,
hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
shared_classifier) as decimal strings, and "format": "pt".

The tensors are written in the order above with the header's keys sorted
and no padding beyond the 8-byte alignment of the data start, so the output
is the same bytes on every run.
"""

import json
import pathlib
import struct
import sys

import numpy as np


def convert(src: pathlib.Path, dst: pathlib.Path) -> None:
    raw = src.read_bytes()
    if len(raw) < 28:
        sys.exit(f"{src}: {len(raw)} bytes, too short for the 7-int32 header")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    if min(dim, hidden, layers, heads, kv_heads, vocab, seq_len) <= 0 or dim % heads or heads % kv_heads:
        sys.exit(f"{src}: header {dim, hidden, layers, heads, kv_heads, vocab, seq_len} is not a llama2.c configuration")
    head_size = dim // heads
    kv_dim = dim * kv_heads // heads
    floats = np.frombuffer(raw, dtype="<f4", offset=28)

    at = 0

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        if at + n > floats.size:
            sys.exit(f"{src}: ends at float {floats.size}, the checkpoint needs {at + n}")
        a = floats[at:at + n].reshape(shape)
        at += n
        return a

    embed = take(vocab, dim)
    rms_att = take(layers, dim)
    wq = take(layers, dim, dim)
    wk = take(layers, kv_dim, dim)
    wv = take(layers, kv_dim, dim)
    wo = take(layers, dim, dim)
    rms_ffn = take(layers, dim)
    w1 = take(layers, hidden, dim)
    w2 = take(layers, dim, hidden)
    w3 = take(layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, head_size // 2)  # freq_cis_real: recomputed by the runner
    take(seq_len, head_size // 2)  # freq_cis_imag
    wcls = None if shared else take(vocab, dim)
    if at != floats.size:
        sys.exit(f"{src}: {floats.size - at} floats after the checkpoint's last array")

    tensors = [("model.embed_tokens.weight", embed)]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [
            (p + "input_layernorm.weight", rms_att[i]),
            (p + "self_attn.q_proj.weight", wq[i]),
            (p + "self_attn.k_proj.weight", wk[i]),
            (p + "self_attn.v_proj.weight", wv[i]),
            (p + "self_attn.o_proj.weight", wo[i]),
            (p + "post_attention_layernorm.weight", rms_ffn[i]),
            (p + "mlp.gate_proj.weight", w1[i]),
            (p + "mlp.down_proj.weight", w2[i]),
            (p + "mlp.up_proj.weight", w3[i]),
        ]
    tensors.append(("model.norm.weight", rms_final))
    if wcls is not None:
        tensors.append(("lm_head.weight", wcls))

    header = {"__metadata__": {
        "format": "pt",
        "source": "karpathy/llama2.c stories260K.bin (MIT, Copyright (c) 2023 Andrej Karpathy)",
        "dim": str(dim), "hidden_dim": str(hidden), "n_layers": str(layers), "n_heads": str(heads),
        "n_kv_heads": str(kv_heads), "vocab_size": str(vocab), "seq_len": str(seq_len),
        "shared_classifier": "true" if shared else "false",
    }}
    data = bytearray()
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)  # data starts 8-byte aligned
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(text)) + text + bytes(data))
    tmp.replace(dst)
    print(f"{dst}: {len(tensors)} tensors, {at} of {floats.size} floats "
          f"(freq_cis left out: {2 * seq_len * (head_size // 2)}), {8 + len(text) + len(data)} bytes")


def main() -> None:
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    root = pathlib.Path(__file__).resolve().parent.parent
    dst = pathlib.Path(sys.argv[2]) if len(sys.argv) == 3 else root / "models" / "stories260K" / "model.safetensors"
    convert(pathlib.Path(sys.argv[1]), dst)


if __name__ == "__main__":
    main()
