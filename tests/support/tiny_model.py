"""Build a tiny random-weight Llama chat model offline, for tests against a real server."""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = ".tiny_model_complete"
VERSION = "2"

CORPUS = [
    "Hello there! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "A notebook cell holds code, markdown, or a chat with a language model.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 and symbols such as ( ) [ ] { } : ; , . ! ? are common.",
    "def add(a, b):\n    return a + b\n",
    "The assistant answers the user's question briefly and politely.",
]

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _build_tokenizer():
    """Train a small byte-level BPE tokenizer on the built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _unprintable_ids(tokenizer) -> list[int]:
    """Ids of tokens that decode to nothing printable (partial UTF-8, control bytes, bos/pad)."""
    bad = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        special = i in tokenizer.all_special_ids and i != tokenizer.eos_token_id
        if special or not text or "\ufffd" in text or not text.replace("\n", "").isprintable():
            bad.append(i)
    return bad


def build_tiny_model(path: Path) -> Path:
    """Build the tiny model and tokenizer into `path` unless already there; return `path`."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file() and marker.read_text() == VERSION:
        return path

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        max_new_tokens=32,
        do_sample=False,
        suppress_tokens=_unprintable_ids(tokenizer),  # random weights, but readable text
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    marker.write_text(VERSION)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.tiny_model PATH")
    print(build_tiny_model(Path(sys.argv[1])))
