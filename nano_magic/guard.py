"""The budget that caps what a kernel spends: the estimate before a request, the running cost while it streams."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import OverBudget
from .tokens import Estimate, count_tokens
from .usage import Spend, Usage, price_for

__all__ = ["Meter", "check_budget", "budget_line"]

RAISE_HINT = "raise it with %config NanoMagics.budget = <dollars> (or NANO_BUDGET before the kernel starts)"


def _unpriced(any_unpriced: bool) -> str:
    return "; models without a known price count as $0" if any_unpriced else ""


def budget_line(cap: float, so_far: Spend) -> str:
    """What was spent against the cap, for `%nano usage`."""
    return f"Budget: ${so_far.dollars:.6f} of the ${cap:.6f} cap is spent{_unpriced(so_far.unpriced)}."


def check_budget(cap: float | None, so_far: Spend, estimate: Estimate) -> None:
    """Raise OverBudget, in one line, when the estimated request would take spending past `cap`."""
    if cap is None or so_far.dollars + (estimate.dollars or 0.0) <= cap:
        return
    cost = f"up to ${estimate.dollars:.6f}" if estimate.dollars is not None else "$0 (its model has no known price)"
    unpriced = _unpriced(so_far.unpriced or estimate.dollars is None)
    raise OverBudget(
        f"Budget: this request could cost {cost}, and ${so_far.dollars:.6f} of the ${cap:.6f} cap is spent{unpriced}; "
        f"{RAISE_HINT}, or lower --max-tokens."
    )


@dataclass
class Meter:
    """The running cost of an answer as its text streams in, against what is left of the cap.

    The stream asks it only once `headroom()` characters have arrived since it last counted: a character is at
    most four tokens, so below that the cap cannot have been reached and no chunk pays for the tokenizer.
    """

    cap: float
    so_far: float
    model: str
    input_tokens: int
    output_tokens: int = 0

    def __post_init__(self) -> None:
        price = price_for(self.model)
        spent = self.so_far + (Usage(self.input_tokens).cost(self.model) or 0.0)
        output_price = price[2] / 1e6 if price and price[2] else None
        self._room = (self.cap - spent) / output_price if output_price else math.inf  # output tokens left

    def headroom(self) -> float:
        """Characters that may still arrive before the cap could be reached."""
        return (self._room - self.output_tokens) / 4

    def add(self, text: str) -> bool:
        """Count streamed text; True once spending has reached the cap."""
        self.output_tokens += count_tokens(text)
        return self.output_tokens >= self._room

    def usage(self) -> Usage:
        """The tokens counted so far, for the ledger when the server's own count never came."""
        return Usage(self.input_tokens, self.output_tokens)

    def message(self) -> str:
        """Why the answer stopped, in one line."""
        return f"The ${self.cap:.6f} budget was reached mid-answer: the stream was closed and the partial answer is kept; {RAISE_HINT}."
