"""The live view spends a budget of the browser's main thread: a short answer refreshes at the full rate, a long one
as often as the budget pays for, however long it grows, and every character still arrives."""

from __future__ import annotations

import time
from typing import Any

import pytest
from IPython.display import DisplayHandle

from nano_magic import display
from nano_magic.display import Final, HtmlView
from nano_magic.pacing import BrowserBudget, browser_ms

RATE = 150  # deltas a second, as a fast model streams


class Clock:
    """A clock that the test moves, standing in for the time module in `nano_magic.display`."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_budget_lets_a_burst_through_then_charges_its_share() -> None:
    clock = Clock()
    budget = BrowserBudget(0.1, 100.0, clock.perf_counter)
    assert budget.spend(60.0) == 0.0, "within the burst, no wait"
    assert budget.spend(60.0) == pytest.approx(0.2), "20 ms in debt, repaid at 100 ms a second"
    clock.now += 0.2
    assert budget.spend(0.0) == 0.0
    clock.now += 60.0
    assert budget.spend(150.0) == pytest.approx(0.5), "a long pause refills the bucket only up to the burst"


def test_the_estimate_grows_with_the_html() -> None:
    assert browser_ms("") > 0, "every message costs the browser a re-render"
    assert browser_ms("x" * 10_000) > 2 * browser_ms("x" * 1_000)


def _answer(parts: int) -> str:
    step = r"The sum $\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$ holds for every $n \ge 1$, and so does the next step. "
    return "\n\n".join(f"## Part {i}\n\n{step * 3}\n\n- a point on $x_{i}$\n- and another one" for i in range(parts))


# The page itself keeps Chromium's main thread about 3% busy, and the estimate is within a few percent of what
# `benchmarks/browser_cost.py` measures, so an estimated 11% keeps the real share under the 15% that
# `benchmarks/browser.py` checks.
SHARE = 0.11


@pytest.mark.parametrize(("parts", "share"), [(12, None), (120, SHARE), (480, SHARE), (720, None)],
                         ids=["1k tokens", "8k tokens", "32k tokens", "longer than the model writes"])
def test_a_streaming_answer_spends_its_budget_and_keeps_every_character(ip, monkeypatch, parts: int, share: float | None) -> None:
    """At 150 deltas a second: an answer of about 1k tokens refreshes at the full rate from start to end; an 8k or
    a 32k one costs the browser at most `share` of its main thread, by the estimate; refreshes never stop for longer
    than MAX_WAIT; what is sent stays linear in the answer, even past the longest answer the model writes; the
    outputs stay within JupyterLab's 50, and every character arrives."""
    clock = Clock()
    monkeypatch.setattr(display, "time", clock)
    sent: list[tuple[float, str | None, dict[str, str]]] = []
    update = DisplayHandle.update

    def record(handle: DisplayHandle, obj: dict[str, str], **kwargs: Any) -> None:
        sent.append((clock.now, handle.display_id, obj))
        update(handle, obj, **kwargs)

    monkeypatch.setattr(DisplayHandle, "update", record)
    text = _answer(parts)
    view = HtmlView("fake-model · default · turn 1", 10)
    view._ticker.stop()  # the test ticks in its place, on its clock, and waits as long as each refresh asks
    due = 0.0
    for at in range(0, len(text), 6):
        view.delta(text[at : at + 6])
        clock.now += 1 / RATE
        if clock.now >= due:
            due = clock.now + max(0.1, view._refresh())
    streamed = clock.now
    view.finish(Final(None, text, text, {"nano_magic": {"turn": 1}}, "fake-model · 5 in · 3 out tokens"))

    live = [(t, html["text/html"]) for t, _, html in sent if t <= streamed]
    ticks = sorted({t for t, _ in live})
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) <= (0.15 if parts < 100 else HtmlView.MAX_WAIT + 0.1), f"the view stood still for {max(gaps):.2f} s"
    spent = sum(browser_ms(html) for _, html in live) / 1000
    assert share is None or spent <= share * streamed, f"{spent / streamed:.1%} of the browser"
    sent_per_char = sum(len(html) for _, html in live) / len(text)
    assert parts < 100 or sent_per_char <= 8, f"{sent_per_char:.1f} characters of HTML sent per character of the answer"
    last: dict[str | None, dict[str, str]] = {}
    for _, display_id, data in sent:
        last[display_id] = data
    groups = [view._header, *view._closed, view._live, view._status]
    assert len(groups) <= 50, "JupyterLab shows 50 outputs a cell"
    assert "".join(last[h.display_id].get("text/plain", "") for h in groups[1:-1]) == text
