#!/usr/bin/env python
"""Write a tiny llama-architecture GGUF model with random weights.

Enough for llama.cpp's ``llama-server`` to load it and stream (meaningless) tokens, so its
OpenAI-compatible API can be tried against backend_ai where no model can be downloaded:
2 layers, 64-wide, a 304-token SentencePiece-style vocabulary (control tokens, the 256 byte
tokens, a few words and letters), float32, about 0.5 MB. Needs ``pip install gguf numpy``
(the ``gguf`` package is llama.cpp's own GGUF writer).

    python scripts/tiny_gguf.py /tmp/tiny.gguf
"""

import sys

import gguf
import numpy as np

N_EMBD, N_FF, N_HEAD, N_LAYER, N_CTX = 64, 128, 4, 2, 512
WORDS = [
    "the",
    "a",
    "dream",
    "of",
    "glass",
    "city",
    "flying",
    "over",
    "light",
    "water",
    "night",
    "sea",
    "door",
    "house",
    "path",
]

tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
types += [gguf.TokenType.BYTE] * 256
for word in WORDS:
    tokens.append("\u2581" + word)
    types.append(gguf.TokenType.NORMAL)
for ch in "abcdefghijklmnopqrstuvwxyz.,!?":
    tokens.append(ch)
    types.append(gguf.TokenType.NORMAL)
scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(tokens) - 259)]
n_vocab = len(tokens)

if len(sys.argv) != 2:
    sys.exit("usage: tiny_gguf.py OUTPUT.gguf")
writer = gguf.GGUFWriter(sys.argv[1], "llama")
writer.add_name("tiny-random-llama")
writer.add_context_length(N_CTX)
writer.add_embedding_length(N_EMBD)
writer.add_block_count(N_LAYER)
writer.add_feed_forward_length(N_FF)
writer.add_head_count(N_HEAD)
writer.add_head_count_kv(N_HEAD)
writer.add_layer_norm_rms_eps(1e-5)
writer.add_rope_dimension_count(N_EMBD // N_HEAD)
writer.add_vocab_size(n_vocab)
writer.add_file_type(gguf.LlamaFileType.ALL_F32)
writer.add_tokenizer_model("llama")
writer.add_token_list(tokens)
writer.add_token_scores(scores)
writer.add_token_types(types)
writer.add_bos_token_id(1)
writer.add_eos_token_id(2)
writer.add_unk_token_id(0)
writer.add_add_bos_token(True)
writer.add_add_eos_token(False)
writer.add_chat_template(
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

rng = np.random.default_rng(0)


def w(*shape):
    return (rng.standard_normal(shape) * 0.2).astype(np.float32)


# Keep the byte and control tokens unlikely, so the output is mostly words.
out = w(n_vocab, N_EMBD)
out[:259] *= 0.0
writer.add_tensor("token_embd.weight", w(n_vocab, N_EMBD))
writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
writer.add_tensor("output.weight", out)
for i in range(N_LAYER):
    writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.{i}.{name}.weight", w(N_EMBD, N_EMBD))
    writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(N_FF, N_EMBD))
    writer.add_tensor(f"blk.{i}.ffn_up.weight", w(N_FF, N_EMBD))
    writer.add_tensor(f"blk.{i}.ffn_down.weight", w(N_EMBD, N_FF))

writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print(sys.argv[1], n_vocab, "tokens")
