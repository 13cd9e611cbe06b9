"""Counting tokens before a request is sent, for cost estimates: tiktoken's o200k_base, or 4 characters a token."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

from .images import part_tokens
from .usage import Usage

__all__ = ["Estimate", "count_tokens", "cut_tokens", "exact_counts", "estimate_request"]

ENCODING = "o200k_base"  # the tokenizer of the GPT-4.1 family
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and separators around each message, as OpenAI's cookbook counts them


@dataclass(frozen=True)
class Estimate:
    """What a request would cost at most: its input tokens, its output bound, and the dollars."""

    input_tokens: int
    output_tokens: int
    dollars: float | None
    exact: bool
    unknown_images: int = 0  # pictures whose tokens no documented formula gives for this model: not in the count

    def describe(self) -> str:
        """One line such as `about 120 input tokens + up to 500 output tokens ≈ $0.000212`."""
        how = "" if self.exact else " (estimated at 4 characters a token: tiktoken's o200k_base is not available)"
        money = f" ≈ ${self.dollars:.6f}" if self.dollars is not None else " (price unknown for this model)"
        pictures = f" (plus {self.unknown_images} pictures whose tokens are unknown for this model)" if self.unknown_images else ""
        return f"about {self.input_tokens} input tokens + up to {self.output_tokens} output tokens{money}{how}{pictures}"


@lru_cache(maxsize=1)
def _encoding() -> Any:
    try:
        import tiktoken

        return tiktoken.get_encoding(ENCODING)
    except Exception:  # not installed, or its data cannot be fetched (offline): fall back to characters
        return None


@lru_cache(maxsize=1)
def _encoder() -> Callable[[str], list[int]] | None:
    encoding = _encoding()
    if encoding is None:
        return None
    return lambda text: encoding.encode(text, disallowed_special=())


def exact_counts() -> bool:
    """Whether counts come from tiktoken rather than the 4-characters rule."""
    return _encoder() is not None


def count_tokens(text: str) -> int:
    """Tokens in `text` by o200k_base, or its length over 4 when tiktoken is unavailable."""
    encode = _encoder()
    if encode is None:
        return -(-len(text) // CHARS_PER_TOKEN)
    return len(encode(text))


def cut_tokens(text: str, tokens: int) -> str:
    """The start of `text` that holds at most `tokens` tokens (o200k_base, or 4 characters a token)."""
    encode = _encoder()
    if encode is None:
        return text[: tokens * CHARS_PER_TOKEN]
    ids = encode(text)
    return text if len(ids) <= tokens else str(_encoding().decode(ids[:tokens])).rstrip("\ufffd")  # no half character


def _request_text(body: Mapping[str, Any], pictures: list[dict[str, Any]] | None = None) -> list[str]:
    """The strings of a request that the model reads: messages or input items, instructions, tools, schema.

    A message's picture parts go to `pictures` instead: their tokens come from their size, not their base64 text.
    """
    parts: list[str] = []
    for item in body.get("messages") or body.get("input") or []:
        content = item.get("content") if isinstance(item, Mapping) else item
        if isinstance(content, list) and pictures is not None:
            images = [p for p in content if isinstance(p, Mapping) and p.get("type") in ("image_url", "input_image")]
            pictures.extend(dict(p) for p in images)
            parts.append(json.dumps([p for p in content if p not in images], ensure_ascii=False))
            continue
        parts.append(content if isinstance(content, str) else json.dumps(item, ensure_ascii=False))
    for key in ("instructions",):
        if isinstance(body.get(key), str):
            parts.append(body[key])
    for key in ("tools", "response_format", "text"):
        if body.get(key):
            parts.append(json.dumps(body[key], ensure_ascii=False))
    return parts


def estimate_request(body: Mapping[str, Any], model: str, max_output: int) -> Estimate:
    """The most a request body can cost: counted input, its pictures by OpenAI's formula, plus `max_output` output tokens."""
    pictures: list[dict[str, Any]] = []
    parts = _request_text(body, pictures)
    tokens = sum(count_tokens(p) for p in parts) + MESSAGE_OVERHEAD * len(parts)
    counted = [part_tokens(picture, model) for picture in pictures]
    tokens += sum(n for n in counted if n is not None)
    unknown = sum(1 for n in counted if n is None)
    return Estimate(tokens, max_output, Usage(tokens, max_output).cost(model), exact_counts(), unknown)
