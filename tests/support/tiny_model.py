"""Build a tiny random-weight Llama as a GGUF file offline, for tests against llama.cpp's server."""

from __future__ import annotations

import string
import sys
from pathlib import Path

__all__ = ["build_tiny_model"]

VERSION = "1"
EMBED, HEADS, KV_HEADS, FFN, LAYERS, CONTEXT = 64, 4, 2, 128, 2, 2048
SPECIAL = ["<unk>", "<s>", "</s>"]  # unknown, begin, end (ids 0, 1, 2)
# Byte tokens for the printable ASCII bytes, newline and tab only: whatever the model says is readable.
BYTES = [f"<0x{b:02X}>" for b in (0x09, 0x0A, *range(0x20, 0x7F))]
PIECES = ["\u2581" + word for word in ("the", "a", "is", "and", "to", "of")] + ["\u2581"] + list(
    string.ascii_letters + string.digits + string.punctuation
)


def _weights(rng, *shape: int):
    """Small random float32 weights."""
    import numpy as np

    return (rng.standard_normal(shape) * 0.02).astype(np.float32)


def build_tiny_model(path: Path) -> Path:
    """Write the tiny model to `path` (a .gguf file) unless this version is already there; return `path`."""
    path = Path(path)
    marker = path.with_suffix(".version")
    if path.is_file() and marker.is_file() and marker.read_text() == VERSION:
        return path

    import gguf
    import numpy as np

    tokens = SPECIAL + BYTES + PIECES
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * len(BYTES) + [gguf.TokenType.NORMAL] * len(PIECES)
    scores = [0.0] * (len(SPECIAL) + len(BYTES)) + [-float(i) for i in range(len(PIECES))]
    head_dim = EMBED // HEADS
    rng = np.random.default_rng(0)

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("nano-magic-tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)

    # Dimension 0 of the residual stream is a constant: every embedding sets it and no layer writes to it.
    # The output layer reads it as a bias against the special tokens, so the model never ends an answer
    # early and never says <unk>: answers run to the token limit unless a grammar ends them.
    embeddings = _weights(rng, len(tokens), EMBED)
    embeddings[:, 0] = 1.0
    output = _weights(rng, len(tokens), EMBED)
    output[:, 0] = 1.0
    output[: len(SPECIAL), 0] = -1.0
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(EMBED, np.float32))
    writer.add_tensor("output.weight", output)
    for layer in range(LAYERS):
        block = f"blk.{layer}."
        attention_out, ffn_down = _weights(rng, EMBED, EMBED), _weights(rng, EMBED, FFN)
        attention_out[0], ffn_down[0] = 0.0, 0.0
        writer.add_tensor(block + "attn_norm.weight", np.ones(EMBED, np.float32))
        writer.add_tensor(block + "attn_q.weight", _weights(rng, EMBED, EMBED))
        writer.add_tensor(block + "attn_k.weight", _weights(rng, KV_HEADS * head_dim, EMBED))
        writer.add_tensor(block + "attn_v.weight", _weights(rng, KV_HEADS * head_dim, EMBED))
        writer.add_tensor(block + "attn_output.weight", attention_out)
        writer.add_tensor(block + "ffn_norm.weight", np.ones(EMBED, np.float32))
        writer.add_tensor(block + "ffn_gate.weight", _weights(rng, FFN, EMBED))
        writer.add_tensor(block + "ffn_up.weight", _weights(rng, FFN, EMBED))
        writer.add_tensor(block + "ffn_down.weight", ffn_down)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    marker.write_text(VERSION)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.tiny_model PATH.gguf")
    print(build_tiny_model(Path(sys.argv[1])))
