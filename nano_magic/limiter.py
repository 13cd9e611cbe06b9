"""Pacing many requests: the provider's `x-ratelimit-*` budget, and AIMD concurrency on 429s."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Callable, Mapping

__all__ = ["Budget", "Limiter", "TooLarge", "parse_duration", "MAX_WAIT"]

MAX_WAIT = 120.0  # the longest one wait may last: a longer Retry-After or reset is looked at again then, never waited out blind

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """Seconds in a rate-limit reset such as `1s`, `6m0s`, `20ms` or `1h2m3.5s` (a bare number is seconds)."""
    if not text:
        return None
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


@dataclass
class Budget:
    """One provider budget (requests or tokens): what was left when last seen, and how fast it refills."""

    remaining: float | None = None
    limit: int | None = None
    seen_at: float = 0.0
    seen_sent: float = 0.0
    refill: float | None = None
    reset_at: float = 0.0

    def observe(self, remaining: int | None, limit: int | None, reset: float | None, sent_before: float, now: float) -> None:
        """Take the headers of an answer to a request sent when `sent_before` units had already gone out."""
        if remaining is None or sent_before < self.seen_sent:
            return  # no header, or older news than what we know
        self.remaining, self.seen_at, self.seen_sent = float(remaining), now, sent_before
        self.limit = limit if limit is not None else self.limit
        self.reset_at = now + (reset or 0.0)
        self.refill = None
        if reset and self.limit is not None and self.limit > remaining:
            self.refill = (self.limit - remaining) / reset  # the budget comes back to full by the reset

    def wait(self, cost: float, sent: float, now: float) -> float:
        """Seconds to wait before `cost` more fits, given `sent` units sent so far in all."""
        if self.remaining is None:
            return 0.0
        left = self.remaining - (sent - self.seen_sent)
        if self.refill:
            left = min(left + self.refill * (now - self.seen_at), float(self.limit or left))
            return 0.0 if left >= cost else (cost - left) / self.refill
        if left >= cost or now >= self.reset_at:
            return 0.0
        return self.reset_at - now


class TooLarge(Exception):
    """An item whose prompt alone is more than the provider's per-minute token limit: it can never be sent."""


class Limiter:
    """How many requests may be in flight and when the next may start.

    Concurrency is additive-increase, multiplicative-decrease: a 429 halves it (once per round of
    requests), and a run of successes as long as the current limit raises it by one, up to `ceiling`.
    Before any 429, the `x-ratelimit-remaining-*` headers pace requests so that the budget is not overrun.
    """

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic, *, output_bound: int = 0,
                 on_wait: Callable[[float], None] | None = None) -> None:
        self.ceiling = ceiling
        self.output_bound = output_bound  # the part of each item's tokens that is only the --max-tokens bound
        self.on_wait = on_wait
        self.limit = ceiling
        self.in_flight = 0
        self.throttled = 0
        self.requests = Budget()
        self.tokens = Budget()
        self._clock = clock
        self._sent_requests = 0.0
        self._sent_tokens = 0.0
        self._successes = 0
        self._paused_until = 0.0
        self._calm_after = 0.0
        # Waiting tasks, woken by `settle`. All state lives on one event loop, so no lock guards it: a lock held
        # across a wait is what a second cancel (Ctrl-C, then the run stopping its workers) could leave taken.
        self._waiters: set[asyncio.Future[None]] = set()

    async def acquire(self, tokens: int) -> tuple[float, float]:
        """Wait for a slot and the budget; return the (requests, tokens) already sent, to pass back to `settle`.

        An item larger than the per-minute token limit goes alone, once the whole window is free; TooLarge
        when its prompt alone exceeds the limit. Each wait lasts at most MAX_WAIT and is told to `on_wait`.
        """
        while True:
            now = self._clock()
            cost, alone = self._cost(tokens)
            wait = min(MAX_WAIT, max(self._paused_until - now,
                                     self.requests.wait(1, self._sent_requests, now),
                                     self.tokens.wait(cost, self._sent_tokens, now)))
            if self.in_flight < (1 if alone else self.limit) and wait <= 0:
                break
            if wait > 0 and self.on_wait is not None:
                self.on_wait(wait)
            await self._changed(wait if wait > 0 else None)
        self.in_flight += 1
        mark = (self._sent_requests, self._sent_tokens)
        self._sent_requests += 1
        self._sent_tokens += cost
        return mark

    async def _changed(self, timeout: float | None) -> None:
        """Until `settle` frees a slot or learns something, or `timeout` seconds pass."""
        changed = asyncio.get_running_loop().create_future()
        self._waiters.add(changed)
        try:
            await asyncio.wait((changed,), timeout=timeout)
        finally:
            self._waiters.discard(changed)

    def _cost(self, tokens: int) -> tuple[float, bool]:
        """What an item counts against the token budget, and whether it must go alone."""
        limit = self.tokens.limit
        if limit is None or tokens <= limit:
            return tokens, False
        if tokens - self.output_bound > limit:
            raise TooLarge(f"This item's prompt is about {tokens - self.output_bound:,} tokens, more than the provider's limit of "
                           f"{limit:,} tokens a minute, so it can never be sent; shorten it.")
        return limit, True  # only the --max-tokens bound overflows: sent alone, counted as the whole window

    async def settle(self, mark: tuple[float, float], headers: Mapping[str, str] | None, *,
                     throttled: bool = False, retry_after: float | None = None, ok: bool = True) -> None:
        """Free the slot and learn from the answer: its rate-limit headers, a 429 and its wait, or a success."""
        now = self._clock()
        self.in_flight -= 1
        if headers is not None:
            get = headers.get
            self.requests.observe(_int(get("x-ratelimit-remaining-requests")), _int(get("x-ratelimit-limit-requests")),
                                  parse_duration(get("x-ratelimit-reset-requests")), mark[0], now)
            self.tokens.observe(_int(get("x-ratelimit-remaining-tokens")), _int(get("x-ratelimit-limit-tokens")),
                                parse_duration(get("x-ratelimit-reset-tokens")), mark[1], now)
        if throttled:
            self.throttled += 1
            self._successes = 0
            if now >= self._calm_after:  # one halving per round: the other 429s of the same burst are the same news
                self.limit = max(1, self.limit // 2)
                self._calm_after = now + (retry_after or 0.0) + 0.05
            if retry_after:
                self._paused_until = max(self._paused_until, now + min(retry_after, MAX_WAIT))
        elif ok:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.ceiling:
                self.limit += 1
                self._successes = 0
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
