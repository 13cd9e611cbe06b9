"""How an answer appears while it streams (HTML outputs, Markdown or text) and what stays in the notebook."""

from __future__ import annotations

import contextvars
import html
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from IPython.display import DisplayHandle, display

from .pacing import BrowserBudget, browser_ms
from .render import MarkdownStream, StreamRenderer, escape_markdown, to_html

__all__ = ["Final", "HtmlView", "MarkdownView", "SourceJoiner", "TextView", "Ticker", "View", "answer_source", "open_view", "pick_mode"]


class Final(NamedTuple):
    """What stays of an answer: its Markdown for a Markdown output, its source for HTML (None: plain text only), its text,
    the turn's metadata and the footer line."""

    markdown: str | None
    source: str | None
    text: str
    metadata: dict[str, Any]
    footer: str


class SourceJoiner:
    """Joins the model's text and tool-call lines into the Markdown the HTML view shows: each run of calls one tight list."""

    def __init__(self) -> None:
        self._after_item = False
        self._after_text = False

    def text(self, text: str) -> str:
        """The piece to add for model text: a line break first, to end a list of calls."""
        if not text:
            return text
        piece = "\n" + text if self._after_item else text
        self._after_item, self._after_text = False, True
        return piece

    def item(self, line: str) -> str:
        """The piece to add for a call's line: a list item, after a blank line if text came before."""
        piece = ("\n\n" if self._after_text else "") + f"- {escape_markdown(line)}\n"
        self._after_item, self._after_text = True, False
        return piece


def answer_source(rounds: list[tuple[str, list[str]]], body: str) -> str:
    """The Markdown of tool rounds (text, then call lines) and the answer, joined as the HTML view streamed them."""
    joiner = SourceJoiner()
    pieces = [piece for text, lines in rounds for piece in (joiner.text(text), *map(joiner.item, lines))]
    return "".join([*pieces, joiner.text(body)])


class View(Protocol):
    """What the magic tells a view while an answer streams."""

    def delta(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def step(self, line: str) -> None: ...
    def finish(self, final: Final) -> None: ...
    def abandon(self) -> None: ...
    def close(self) -> None: ...


class Ticker:
    """Calls `fn` from a background thread at most `rate` times a second, and only after a `poke`.

    `fn` may return a longer wait, in seconds, before the next call. An exception in `fn` does not end the thread:
    the first one is kept in `error` and passed to `on_error`, and the ticker goes on.
    """

    def __init__(self, rate: float, fn: Callable[[], float | None], on_error: Callable[[Exception], None]) -> None:
        self._interval = 1.0 / max(rate, 0.1)
        self._fn = fn
        self._on_error = on_error
        self.error: Exception | None = None
        self._dirty = threading.Event()
        self._stopped = threading.Event()
        context = contextvars.copy_context()  # the cell's parent header, so that outputs made here go to its cell
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="nano-refresh", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Ask for a refresh at the next tick."""
        if not self._dirty.is_set():  # cheaper than set(), which takes a lock, on every token
            self._dirty.set()

    def stop(self) -> None:
        """Stop ticking and join the thread; a refresh in progress finishes first. Safe to call twice."""
        self._stopped.set()
        self._dirty.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._dirty.wait()
            if self._stopped.is_set():
                return
            self._dirty.clear()
            wait = None
            try:
                wait = self._fn()
            except Exception as exc:  # a view bug must not end the thread unseen
                if self.error is None:
                    self.error = exc
                    self._report(exc)
            self._stopped.wait(max(self._interval, wait or 0.0))

    def _report(self, exc: Exception) -> None:
        try:
            self._on_error(exc)
        except Exception:  # the error itself stays in `error`, which the final footer shows
            pass


class _Progress:
    """Tokens, speed and time for the status line."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.tokens = 0
        self.notice = ""

    def line(self) -> str:
        if not self.tokens:
            return self.notice or "waiting for the first token…"
        elapsed = time.perf_counter() - self.started
        rate = self.tokens / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.tokens} tokens", f"{rate:.0f} tokens/s", f"{elapsed:.1f} s"]
        return " · ".join(parts + ([self.notice] if self.notice else []))


class HtmlView:
    """The answer as plain outputs that stay: no widget, nothing swapped at the end.

    Outputs, top to bottom: the header; the answer in groups of finished blocks (`text/html`); the live group, one
    output re-rendered in place at each refresh; the status line, which becomes the footer at the end. Rendering
    runs on the refresh thread, outside the lock that `delta` takes. Each message costs the browser a re-render, so
    refreshes spend a `BrowserBudget`: at most `refresh_rate` a second, and, once an answer is long, only as often
    as BROWSER_SHARE of the browser's main thread pays for.

    Text never moves from one output to another, since two messages can reach the page in two frames, and the frame
    between them would show the text twice or not at all. So the live group is closed only at a refresh where every
    character it showed so far is in finished blocks, and the block that follows first shows in a new output:
    a new status line is shown below, the old status output becomes the new live group, and the closed group is
    sent with its finished blocks alone. Each of those messages only adds text. Outputs can only be added at
    the end, hence the roles move down. JupyterLab hides outputs past 50 (`maxNumberOutputs`), so after
    MAX_GROUPS the last group takes the rest of the answer, and is sent only when it grew by a quarter.

    No widget: a widget's comm makes JupyterLab 4.6 ask the kernel for a subshell (`CommHandler._maybeStartSubshell`,
    services/src/kernel/comm.ts), and the idle status of that request, which `KernelConnection._handleMessage`
    applies whatever its parent, showed the kernel Idle for the whole answer.
    """

    GROUP_CHARS = 1_200  # Markdown characters a group holds before the next block may start a new one
    MAX_GROUPS = 40
    LONGEST_CHARS = 200_000  # about 32k tokens, the most that GPT-4.1 nano writes in one answer
    STATUS_INTERVAL = 2.0
    BROWSER_SHARE = 0.05  # of the browser's main thread, spent on refreshes once the burst is gone
    BURST_MS = 2_000.0  # of browser time, spent at the full rate before the share applies
    MAX_WAIT = 2.0  # seconds between refreshes at most, even when the last group grows past what the share pays for

    def __init__(self, header: str, refresh_rate: float) -> None:
        self._renderer = StreamRenderer()  # used by the refresh thread alone, until it stops
        self._pending: list[str] = []  # text not yet given to the renderer, guarded by the lock
        self._joiner = SourceJoiner()  # guarded by the lock
        self._streamed: list[str] = []  # all text given to the renderer
        self._progress = _Progress()
        self._lock = threading.Lock()
        self._status_due = 0.0
        self._closed: list[DisplayHandle] = []  # the groups before the live one
        self._group: list[tuple[str, str]] = []  # the live group's finished blocks: Markdown and HTML
        self._group_chars = 0  # Markdown characters in them
        self._closed_chars = 0  # Markdown characters in the groups before
        self._tail_chars = 0  # Markdown characters given to the renderer and not yet in a finished block
        self._sent_chars = 0  # the live group's characters when it was last sent
        self._sent_html = ""
        self._status_html = self._status_line()
        self._budget = BrowserBudget(self.BROWSER_SHARE, self.BURST_MS, time.perf_counter)
        self._ticker: Ticker | None = None
        self._header = _show({"text/html": f"<b>{html.escape(header)}</b>", "text/plain": header})
        self._live = _show({"text/html": ""})
        self._status = _show(self._status_data())
        self._ticker = Ticker(refresh_rate, self._refresh, self._refresh_failed)

    def delta(self, text: str) -> None:
        """Take new answer text; it shows at the next tick."""
        with self._lock:
            self._pending.append(self._joiner.text(text))
            self._progress.tokens += 1
        self._poke()

    def notice(self, text: str) -> None:
        """Show a retry or warning in the status line."""
        with self._lock:
            self._progress.notice = text
            self._status_due = 0.0
        self._poke()

    def step(self, line: str) -> None:
        """Show a tool call and its result in the answer, where the final output has it; it shows at the next tick."""
        with self._lock:
            self._pending.append(self._joiner.item(line))
        self._poke()

    def finish(self, final: Final) -> None:
        """Give the live group the rest of the answer and the turn's metadata, and turn the status line into the footer.

        When the saved answer continues what streamed (the usual case), only the live group changes, and only
        grows. When it does not (`--format text`, a schema's pretty JSON, the plain text after a failure), the live
        group takes the whole answer first, then the groups above it go.
        """
        error = self._stop()
        self._take_pending()
        streamed = "".join(self._streamed)
        if final.source is not None and final.source.startswith(streamed):
            self._renderer.feed(final.source[len(streamed):])
            self._group.append(self._renderer.flush())
            self._live.update(self._group_data(), metadata=final.metadata, raw=True)
        else:
            whole = {"text/plain": final.text} if final.source is None else {"text/html": to_html(final.source), "text/plain": final.text}
            self._live.update(whole, metadata=final.metadata, raw=True)
            for group in self._closed:
                group.update({"text/html": ""}, raw=True)
        footer = final.footer + (f" · {_refresh_note(error)}" if error is not None else "")
        self._status.update({"text/html": f"<small>{html.escape(footer)}</small>" if footer else "", "text/plain": footer}, raw=True)

    def abandon(self) -> None:
        """Empty every output: no answer arrived."""
        self._stop()
        for handle in (self._header, *self._closed, self._live, self._status):
            handle.update({"text/plain": ""}, raw=True)

    def close(self) -> None:
        """Join the refresh thread; safe to call twice."""
        self._stop()

    def _poke(self) -> None:
        if self._ticker is not None:
            self._ticker.poke()

    def _stop(self) -> Exception | None:
        """Stop refreshing; the refresh error, if one happened."""
        if self._ticker is None:
            return None
        self._ticker.stop()
        return self._ticker.error

    def _take_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        self._streamed.extend(pending)
        for text in pending:
            self._renderer.feed(text)
            self._tail_chars += len(text)

    def _refresh_failed(self, exc: Exception) -> None:
        """Say once, in the status line, that the live view broke; the answer still arrives."""
        with self._lock:
            self._progress.notice = f"{_refresh_note(exc)}; the full answer shows at the end"
            self._status_due = float("inf")
        self._status_html = self._status_line()
        self._status.update(self._status_data(), raw=True)

    def _refresh(self) -> float:
        """Take the new text under the lock and render outside it, so that `delta` never waits for a render; the
        seconds to wait before the next refresh, for the browser's sake."""
        self._take_pending()
        now = time.perf_counter()
        with self._lock:
            status = self._status_line() if now >= self._status_due else None
            if status is not None:
                self._status_due = now + self.STATUS_INTERVAL
        frozen, tail = self._renderer.render()
        if frozen is not None:
            finished = self._renderer.finished_text
            self._group.append((finished, frozen))
            self._group_chars += len(finished)
            self._tail_chars -= len(finished)
        spent = self._close_group(tail) if self._may_close(tail) else self._send_live(tail)
        if status is not None and status != self._status_html:
            self._status_html = status
            self._status.update(self._status_data(), raw=True)
            spent += browser_ms(status)
        return min(self._budget.spend(spent), self.MAX_WAIT)

    def _may_close(self, tail: str) -> bool:
        """Whether the live group is full and all it showed is in finished blocks, so that the tail can start a new output."""
        return (len(self._closed) < self.MAX_GROUPS - 1 and self._group_chars >= self._group_target()
                and self._group_chars >= self._sent_chars and bool(tail))

    def _group_target(self) -> float:
        """The Markdown characters that close a group: GROUP_CHARS, or more once the groups left, growing by one ratio,
        must stretch to hold an answer of LONGEST_CHARS; a live group that grew without end would cost ever longer frames."""
        left = self.MAX_GROUPS - 1 - len(self._closed)
        done = max(self._closed_chars, 1)
        return max(self.GROUP_CHARS, done * ((self.LONGEST_CHARS / done) ** (1 / left) - 1))

    def _send_live(self, tail: str) -> float:
        """Send the live group, if it changed; the browser's estimated ms for it. The last group, which takes the rest of
        an answer longer than LONGEST_CHARS, is sent only when it grew by a quarter, so that what is sent stays linear."""
        chars = self._group_chars + self._tail_chars
        if len(self._closed) >= self.MAX_GROUPS - 1 and chars < self._sent_chars * 5 // 4:
            return 0.0
        shown = "\n".join([*(h for _, h in self._group), tail])
        if shown == self._sent_html:
            return 0.0
        self._live.update({"text/html": shown}, raw=True)
        self._sent_html, self._sent_chars = shown, chars
        return browser_ms(shown)

    def _close_group(self, tail: str) -> float:
        """Keep the live group's finished blocks where they are, and show the tail as the next group, below them; the
        browser's estimated ms for the three messages."""
        status = _show(self._status_data())
        group = self._group_data()
        self._live.update(group, raw=True)
        self._status.update({"text/html": tail}, raw=True)
        self._closed.append(self._live)
        self._live, self._status = self._status, status
        self._closed_chars += self._group_chars
        self._group, self._group_chars = [], 0
        self._sent_html, self._sent_chars = tail, self._tail_chars
        return browser_ms(self._status_html) + browser_ms(group["text/html"]) + browser_ms(tail)

    def _group_data(self) -> dict[str, str]:
        return {"text/html": "\n".join(h for _, h in self._group), "text/plain": "".join(t for t, _ in self._group)}

    def _status_line(self) -> str:
        return f"<small>{html.escape(self._progress.line())}</small>"

    def _status_data(self) -> dict[str, str]:
        return {"text/html": self._status_html}


class MarkdownView:
    """A `text/markdown` output updated in place, for frontends whose widgets cannot typeset math.

    Each update sends the whole output, so deltas and tool steps alike update it at most `refresh_rate` times a
    second: a model that calls a thousand tools must not make the frontend redraw a thousand growing outputs.
    """

    def __init__(self, header: str, refresh_rate: float) -> None:
        self._interval = 1.0 / max(refresh_rate, 0.1)
        self._stream = MarkdownStream()
        self._title = f"**{escape_markdown(header)}**\n\n"
        self._steps: list[str] = []
        self._last = 0.0
        self._handle: DisplayHandle = display({"text/markdown": self._title + "…"}, raw=True, display_id=True)

    def delta(self, text: str) -> None:
        """Take new answer text; refresh at most `refresh_rate` times a second."""
        self._stream.feed(text)
        self._refresh()

    def step(self, line: str) -> None:
        """Show a tool call and its result above the answer; refresh at most `refresh_rate` times a second."""
        self._steps.append(f"- {escape_markdown(line)}\n")
        self._refresh()

    def notice(self, text: str) -> None:
        """Show a retry or warning under the answer so far."""
        self._handle.update({"text/markdown": self._shown() + f"\n\n*{escape_markdown(text)}*"}, raw=True)

    def _refresh(self) -> None:
        now = time.perf_counter()
        if now - self._last >= self._interval:
            self._last = now
            self._handle.update({"text/markdown": self._shown()}, raw=True)

    def _shown(self) -> str:
        steps = "".join(self._steps) + "\n" if self._steps else ""
        return self._title + steps + self._stream.render()

    def finish(self, final: Final) -> None:
        """Replace the live output with the final Markdown, then show the footer."""
        _swap(self._handle, final.markdown, final.text, final.metadata)
        _footer(final.footer)

    def abandon(self) -> None:
        """Remove the live output: no answer arrived."""
        self._handle.update({"text/plain": ""}, raw=True)

    def close(self) -> None:
        """Nothing runs in the background."""


# Control characters other than tab and newline, which a terminal would obey (escape sequences can retitle the
# window, clear the screen or write the clipboard); model output may carry them.
_TERMINAL_CONTROLS = dict.fromkeys([*range(0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)], "\ufffd")


def _printable(text: str) -> str:
    return text.translate(_TERMINAL_CONTROLS)


class TextView:
    """Plain text to stdout, for terminal IPython; control characters from the model or server show as U+FFFD."""

    def __init__(self, header: str) -> None:
        print(f"[{_printable(header)}]")

    def delta(self, text: str) -> None:
        """Print new text as it arrives."""
        sys.stdout.write(_printable(text))
        sys.stdout.flush()

    def notice(self, text: str) -> None:
        """Print a retry or warning on its own line."""
        print(f"[{_printable(text)}]", file=sys.stderr, flush=True)

    def step(self, line: str) -> None:
        """Print a tool call and its result on its own line."""
        print(_printable(line), flush=True)

    def finish(self, final: Final) -> None:
        """End the answer's line and print the footer."""
        print()
        if final.footer:
            print(_printable(final.footer))

    def abandon(self) -> None:
        """Nothing was printed but the header."""

    def close(self) -> None:
        """Nothing runs in the background."""


def _swap(handle: DisplayHandle, markdown: str | None, text: str, metadata: dict[str, Any]) -> None:
    data = {"text/plain": text} if markdown is None else {"text/markdown": markdown, "text/plain": text}
    handle.update(data, metadata=metadata, raw=True)


def _show(data: dict[str, str]) -> DisplayHandle:
    """A new output that can be updated in place."""
    return display(data, raw=True, display_id=True)


def _refresh_note(exc: Exception) -> str:
    return f"the live view failed to refresh ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def _footer(footer: str) -> None:
    if not footer:
        return
    display({"text/markdown": f"<sub>{escape_markdown(footer)}</sub>", "text/plain": footer}, raw=True)


def pick_mode(setting: str, shell: Any) -> str:
    """`html`, `markdown` or `text`: the setting, or what the frontend can show (`widget` is the old name of `html`)."""
    if setting != "auto":
        return "html" if setting == "widget" else setting
    if getattr(shell, "kernel", None) is None:
        return "text"
    if "__vsc_ipynb_file__" in shell.user_ns or "VSCODE_PID" in os.environ or "google.colab" in sys.modules:
        return "markdown"
    return "html"


def open_view(mode: str, header: str, refresh_rate: float) -> View:
    """Start showing an answer."""
    if mode == "html":
        return HtmlView(header, refresh_rate)
    if mode == "markdown":
        return MarkdownView(header, refresh_rate)
    return TextView(header)
