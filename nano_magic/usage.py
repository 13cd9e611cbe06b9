"""Token counts reported by the server, and what they cost."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "PRICES", "BATCH_PRICES", "MAX_OUTPUT_TOKENS", "DEFAULT_MAX_OUTPUT", "Usage", "Spend", "price_for", "batch_price_for",
    "batch_model", "max_output_for", "format_usage",
]

# US dollars per one million tokens: (input, cached input, output).
PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
}

# The Batch API's price where it is not half the live price (none known today); same columns.
BATCH_PRICES: dict[str, tuple[float, float, float]] = {}
BATCH_TIER = " (batch)"  # a model id so marked is priced as answered by the Batch API

# The longest answer each model can give, in tokens: the output bound of a budget estimate without --max-tokens.
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "gpt-4.1-nano": 32_768,
}
DEFAULT_MAX_OUTPUT = 32_768  # for models not in the table; they have no price either, so it only shows in counts

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Usage:
    """Tokens used by one answer, as the server reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def from_chat(cls, data: Mapping[str, Any]) -> Usage:
        """Read a Chat Completions `usage` object."""
        details = data.get("prompt_tokens_details") or {}
        return cls(
            int(data.get("prompt_tokens") or 0),
            int(data.get("completion_tokens") or 0),
            int(details.get("cached_tokens") or 0),
        )

    @classmethod
    def from_responses(cls, data: Mapping[str, Any]) -> Usage:
        """Read a Responses API `usage` object."""
        details = data.get("input_tokens_details") or {}
        return cls(
            int(data.get("input_tokens") or 0),
            int(data.get("output_tokens") or 0),
            int(details.get("cached_tokens") or 0),
        )

    @classmethod
    def from_dict(cls, data: Any) -> Usage | None:
        """Read `to_dict` output, such as a saved turn's usage; None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        values = [data.get(name, 0) for name in ("input_tokens", "output_tokens", "cached_tokens")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        return cls(*values)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
        )

    def cost(self, model: str) -> float | None:
        """Dollars for these tokens on `model`, or None when the model has no price."""
        price = price_for(model)
        if price is None:
            return None
        fresh, cached, output = price
        uncached = max(self.input_tokens - self.cached_tokens, 0)
        return (uncached * fresh + self.cached_tokens * cached + self.output_tokens * output) / 1e6

    def to_dict(self) -> dict[str, int]:
        """A JSON-ready copy."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens}


@dataclass
class Spend:
    """Requests, tokens and dollars added up; models without a known price count as $0 and set `unpriced`."""

    requests: int = 0
    tokens: Usage = field(default_factory=Usage)
    dollars: float = 0.0
    unpriced: bool = False

    @classmethod
    def of(cls, ledger: Iterable[tuple[str, str, Usage]]) -> Spend:
        """What a ledger of (thread, model, usage) rows cost."""
        total = cls()
        for _, model, used in ledger:
            total.add(model, used)
        return total

    def add(self, model: str, used: Usage) -> None:
        """Count one request."""
        cost = used.cost(model)
        self.requests += 1
        self.tokens = self.tokens + used
        self.dollars += cost or 0.0
        self.unpriced = self.unpriced or cost is None


def _base_name(model: str) -> str:
    """A model id without its provider prefix, snapshot date and batch mark."""
    return _SNAPSHOT.sub("", model.removesuffix(BATCH_TIER).rsplit("/", 1)[-1])


def price_for(model: str) -> tuple[float, float, float] | None:
    """The price row for a model id, ignoring a provider prefix and a snapshot date; a `batch_model` id gets the batch price."""
    if model.endswith(BATCH_TIER):
        return batch_price_for(model)
    return PRICES.get(_base_name(model))


def batch_model(model: str) -> str:
    """`model` marked as answered by the Batch API, so that usage, the ledger and the budget price it at the batch price."""
    return model if model.endswith(BATCH_TIER) else model + BATCH_TIER


def batch_price_for(model: str) -> tuple[float, float, float] | None:
    """The Batch API's price row: the price data's own batch price, or else half the live price."""
    name = _base_name(model)
    if name in BATCH_PRICES:
        return BATCH_PRICES[name]
    live = PRICES.get(name)
    return None if live is None else (live[0] / 2, live[1] / 2, live[2] / 2)


def max_output_for(model: str) -> int:
    """The most output tokens `model` can produce in one answer."""
    return MAX_OUTPUT_TOKENS.get(_base_name(model), DEFAULT_MAX_OUTPUT)


def format_usage(usage: Usage | None, model: str) -> str:
    """One line such as `21 in · 8 out tokens · $0.000005`."""
    if usage is None:
        return "usage not reported"
    cached = f" ({usage.cached_tokens} cached)" if usage.cached_tokens else ""
    line = f"{usage.input_tokens} in{cached} · {usage.output_tokens} out tokens"
    cost = usage.cost(model)
    return line + (f" · ${cost:.6f}" if cost is not None else " · no price for this model")
