"""Progress of a `--map` run: the running tally, a widget bar in notebooks and a text bar in terminals."""

from __future__ import annotations

import html
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

from .display import Ticker
from .usage import Usage

__all__ = ["Tally", "Bar", "WidgetBar", "TextBar", "open_bar"]


@dataclass
class Tally:
    """What a run has done so far; the runner writes it, the bar reads it."""

    total: int
    model: str = ""
    done: int = 0
    cached: int = 0
    failed: int = 0
    throttled: int = 0
    concurrency: int = 0
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.perf_counter)
    waiting_until: float = 0.0  # time.monotonic() until which the rate limit holds requests back

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    @property
    def cost(self) -> float | None:
        """Dollars so far, or None when the model has no price."""
        return self.usage.cost(self.model)

    def line(self) -> str:
        """One status line: done/total, failed, speed, ETA, tokens, cost, 429s and concurrency."""
        sent = self.done - self.cached
        rate = sent / self.elapsed if self.elapsed > 0 else 0.0
        left = self.total - self.done - self.failed
        eta = f"ETA {_duration(left / rate)}" if rate > 0 and left else "ETA …" if left else "done"
        tokens = self.usage.input_tokens + self.usage.output_tokens
        parts = [f"{self.done:,}/{self.total:,}", f"{self.failed:,} failed", f"{rate:.1f} items/s", eta, f"{tokens:,} tokens"]
        if (cost := self.cost) is not None:
            parts.append(f"${cost:.4f}")
        parts += [f"{self.throttled:,} × 429", f"concurrency {self.concurrency}"]
        if (wait := self.waiting_until - time.monotonic()) > 0 and left:
            parts.append(f"waiting {_duration(wait)} for the rate limit")
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def _report(exc: Exception) -> None:
    """A failed refresh of the bar: said once; the run goes on."""
    print(f"The progress bar stopped updating ({type(exc).__name__}: {exc}); the run goes on.", file=sys.stderr)


class Bar(Protocol):
    """What a run tells its progress display."""

    def poke(self) -> None: ...
    def finish(self, summary: str) -> None: ...


class WidgetBar:
    """An ipywidgets bar, replaced at the end by the one-line summary so that no widget state is saved."""

    def __init__(self, tally: Tally, refresh_rate: float) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self._tally = tally
        self._bar = widgets.IntProgress(value=0, min=0, max=tally.total)
        self._label = widgets.HTML()
        self._box = widgets.HBox([self._bar, self._label])
        self._handle = display(self._box, display_id=True)
        self._ticker = Ticker(min(refresh_rate, 10.0), self._refresh, _report)

    def poke(self) -> None:
        """Ask for a refresh at the next tick."""
        self._ticker.poke()

    def finish(self, summary: str) -> None:
        """Swap the bar for the summary line, then close every widget."""
        self._ticker.stop()
        self._handle.update({"text/plain": summary}, raw=True)
        for widget in (self._bar, self._label, self._box):
            widget.close()
        for model in (self._bar.layout, self._bar.style, self._label.layout, self._label.style, self._box.layout):
            model.close()

    def _refresh(self) -> None:
        self._bar.value = self._tally.done + self._tally.failed
        self._label.value = f"<small>{html.escape(self._tally.line())}</small>"


class TextBar:
    """A tqdm bar on stderr for terminals; the summary goes to stdout at the end."""

    def __init__(self, tally: Tally, refresh_rate: float) -> None:
        from tqdm import tqdm

        self._tally = tally
        self._bar = tqdm(total=tally.total, file=sys.stderr, mininterval=1.0 / min(refresh_rate, 10.0), dynamic_ncols=True,
                         bar_format="{bar:20} {desc}", leave=False)
        self._ticker = Ticker(min(refresh_rate, 10.0), self._refresh, _report)

    def poke(self) -> None:
        """Ask for a refresh at the next tick."""
        self._ticker.poke()

    def finish(self, summary: str) -> None:
        """Take the bar away and print the summary."""
        self._ticker.stop()
        self._bar.close()
        print(summary)

    def _refresh(self) -> None:
        self._bar.n = self._tally.done + self._tally.failed
        self._bar.set_description_str(self._tally.line(), refresh=True)


class _Silent:
    """No display (tests, `progress=False`): the caller has the result and its summary."""

    def poke(self) -> None:
        """Nothing to refresh."""

    def finish(self, summary: str) -> None:
        """Nothing to show; the caller has the result."""


def open_bar(mode: str, tally: Tally, refresh_rate: float = 10.0) -> Bar:
    """`widget`, `text` or `none`."""
    if mode == "widget":
        return WidgetBar(tally, refresh_rate)
    if mode == "text":
        return TextBar(tally, refresh_rate)
    return _Silent()
