"""Token counts for estimates: tiktoken's o200k_base offline, and the 4-characters rule without it."""

from __future__ import annotations

import pytest

from nano_magic import tokens
from nano_magic.config import Backend
from nano_magic.wire import Options, build_request
from tests.support.parts import missing


def test_o200k_base_counts_like_the_gpt_4_1_tokenizer(offline_tokenizer) -> None:
    if offline_tokenizer is None:
        missing("bpe-openai (the offline copy of o200k_base) is not installed; scripts/test installs it")
    assert tokens.exact_counts()
    assert tokens.count_tokens("Hello world, how are you?") == 7
    assert tokens.count_tokens("<|endoftext|>") > 1, "special tokens count as text"


def test_an_estimate_counts_messages_and_bounds_output(offline_tokenizer) -> None:
    backend = Backend("OpenAI", "https://api.example/v1", "gpt-4.1-nano")
    body = build_request(backend, "gpt-4.1-nano", "Be terse.", [{"role": "user", "content": "Hello world, how are you?"}], Options()).body
    estimate = tokens.estimate_request(body, "gpt-4.1-nano", 100)
    assert estimate.input_tokens == tokens.count_tokens("Be terse.") + 7 + 2 * tokens.MESSAGE_OVERHEAD
    assert estimate.dollars == pytest.approx((estimate.input_tokens * 0.10 + 100 * 0.40) / 1e6)
    assert "up to 100 output tokens" in estimate.describe()


def test_without_tiktoken_four_characters_make_a_token(monkeypatch) -> None:
    monkeypatch.setattr(tokens, "_encoder", lambda: None)
    assert tokens.count_tokens("x" * 9) == 3
    estimate = tokens.estimate_request({"messages": [{"role": "user", "content": "y" * 40}]}, "gpt-4.1-nano", 0)
    assert (estimate.input_tokens, estimate.exact) == (10 + tokens.MESSAGE_OVERHEAD, False)
    assert "4 characters a token" in estimate.describe()
