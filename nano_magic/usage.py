"""Token counts reported by the server, and what they cost."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

__all__ = [
    "PRICES", "MAX_OUTPUT_TOKENS", "DEFAULT_MAX_OUTPUT", "PRICE_FIELDS", "Usage", "Spend", "price_for", "max_output_for",
    "format_usage", "price_entry", "set_price_overrides", "check_price_entry", "batch_model", "batch_price_for",
]

PRICE_FIELDS = ("input", "cached_input", "output")


def _shipped() -> dict[str, dict[str, Any]]:
    """The price entries of the data file shipped with the package (`prices.json`)."""
    data = json.loads(resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8"))
    return dict(data["models"])


_ENTRIES = _shipped()
_OVERRIDES: dict[str, dict[str, Any]] = {}

# US dollars per one million tokens: (input, cached input, output), from the data file.
PRICES: dict[str, tuple[float, float, float]] = {
    name: (e["input"], e["cached_input"], e["output"]) for name, e in _ENTRIES.items()
}

BATCH_TIER = " (batch)"  # a model id so marked is priced as answered by the Batch API

# The longest answer each model can give, in tokens: the output bound of a budget estimate without --max-tokens.
MAX_OUTPUT_TOKENS: dict[str, int] = {name: e["longest_output"] for name, e in _ENTRIES.items() if e.get("longest_output")}
DEFAULT_MAX_OUTPUT = 32_768  # for models not in the table; they have no price either, so it only shows in counts

_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Usage:
    """Tokens used by one answer, as the server reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # already inside output_tokens: shown, never added again

    @classmethod
    def from_chat(cls, data: Mapping[str, Any]) -> Usage:
        """Read a Chat Completions `usage` object."""
        details = data.get("prompt_tokens_details") or {}
        out = data.get("completion_tokens_details") or {}
        return cls(
            int(data.get("prompt_tokens") or 0),
            int(data.get("completion_tokens") or 0),
            int(details.get("cached_tokens") or 0),
            int(out.get("reasoning_tokens") or 0),
        )

    @classmethod
    def from_responses(cls, data: Mapping[str, Any]) -> Usage:
        """Read a Responses API `usage` object."""
        details = data.get("input_tokens_details") or {}
        out = data.get("output_tokens_details") or {}
        return cls(
            int(data.get("input_tokens") or 0),
            int(data.get("output_tokens") or 0),
            int(details.get("cached_tokens") or 0),
            int(out.get("reasoning_tokens") or 0),
        )

    @classmethod
    def from_dict(cls, data: Any) -> Usage | None:
        """Read `to_dict` output, such as a saved turn's usage; None when it is not one."""
        if not isinstance(data, Mapping):
            return None
        values = [data.get(name, 0) for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        return cls(*values)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
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
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
                "reasoning_tokens": self.reasoning_tokens}


@dataclass
class Spend:
    """Requests, tokens and dollars added up; models without a known price count as $0 and set `unpriced`."""

    requests: int = 0
    tokens: Usage = field(default_factory=Usage)
    dollars: float = 0.0
    unpriced: bool = False

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


def set_price_overrides(entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Entries that add to or replace the shipped ones (`NanoMagics.prices`), checked by `check_price_entry`."""
    _OVERRIDES.clear()
    _OVERRIDES.update({_base_name(name): dict(entry) for name, entry in entries.items()})


def _dollars(value: Any) -> bool:
    """Whether `value` is a price: a number of dollars, 0 or more."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 0


def check_price_entry(name: str, entry: Any) -> str | None:
    """What is wrong with one `NanoMagics.prices` entry, in a few words; None when it is usable."""
    if not isinstance(entry, Mapping):
        return f"{name!r} must map to a dict with {', '.join(PRICE_FIELDS)}"
    for key in PRICE_FIELDS:
        value = entry.get(key)
        if not _dollars(value):
            return f"{name!r} needs {key} as dollars per 1M tokens (0 or more), not {value!r}"
    own = entry.get("batch")
    if own is not None and (not isinstance(own, Mapping) or not all(_dollars(own.get(key)) for key in PRICE_FIELDS)):
        return f"{name!r}: batch must give {', '.join(PRICE_FIELDS)} as dollars per 1M tokens, or be left out (half the live price)"
    longest = entry.get("longest_output")
    if longest is not None and (isinstance(longest, bool) or not isinstance(longest, int) or longest < 1):
        return f"{name!r}: longest_output must be a whole number of tokens above 0, not {longest!r}"
    return None


def price_entry(model: str) -> Mapping[str, Any] | None:
    """The price entry for a model id (an override first), ignoring a provider prefix and a snapshot date."""
    base = _base_name(model)
    return _OVERRIDES.get(base) or _ENTRIES.get(base)


def price_for(model: str) -> tuple[float, float, float] | None:
    """The price row for a model id, ignoring a provider prefix and a snapshot date; a `batch_model` id gets the batch price."""
    if model.endswith(BATCH_TIER):
        return batch_price_for(model)
    entry = price_entry(model)
    return None if entry is None else (float(entry["input"]), float(entry["cached_input"]), float(entry["output"]))


def batch_model(model: str) -> str:
    """`model` marked as answered by the Batch API, so that usage, the ledger and the budget price it at the batch price."""
    return model if model.endswith(BATCH_TIER) else model + BATCH_TIER


def batch_price_for(model: str) -> tuple[float, float, float] | None:
    """The Batch API's price row: the entry's own `batch` prices where the price data gives them, else half the live price."""
    entry = price_entry(model)
    if entry is None:
        return None
    own = entry.get("batch")
    prices = own if isinstance(own, Mapping) and all(key in own for key in PRICE_FIELDS) else {k: entry[k] / 2 for k in PRICE_FIELDS}
    return float(prices["input"]), float(prices["cached_input"]), float(prices["output"])


def max_output_for(model: str) -> int:
    """The most output tokens `model` can produce in one answer."""
    entry = price_entry(model)
    return int((entry or {}).get("longest_output") or DEFAULT_MAX_OUTPUT)


def format_usage(usage: Usage | None, model: str) -> str:
    """One line such as `21 in · 8 out tokens, of which 5 reasoning · $0.000005`."""
    if usage is None:
        return "usage not reported"
    cached = f" ({usage.cached_tokens} cached)" if usage.cached_tokens else ""
    reasoning = f", of which {usage.reasoning_tokens} reasoning" if usage.reasoning_tokens else ""
    line = f"{usage.input_tokens} in{cached} · {usage.output_tokens} out tokens{reasoning}"
    cost = usage.cost(model)
    return line + (f" · ${cost:.6f}" if cost is not None else " · price unknown")
