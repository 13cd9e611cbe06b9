"""How an answer appears while it streams (widget, Markdown or text) and what stays in the notebook."""

from __future__ import annotations

import html
import os
import sys
import threading
import time
from typing import Any, Callable, Protocol

from IPython.display import DisplayHandle, display

from .render import MarkdownStream, StreamRenderer, escape_markdown

__all__ = ["View", "WidgetView", "MarkdownView", "TextView", "Ticker", "pick_mode", "open_view"]


class View(Protocol):
    """What the magic tells a view while an answer streams."""

    def delta(self, text: str) -> None: ...
    def notice(self, text: str) -> None: ...
    def step(self, line: str) -> None: ...
    def finish(self, markdown: str | None, text: str, metadata: dict[str, Any], footer: str) -> None: ...
    def abandon(self) -> None: ...
    def close(self) -> None: ...


class Ticker:
    """Calls `fn` from a background thread at most `rate` times a second, and only after a `poke`.

    An exception in `fn` does not end the thread: the first one is kept in `error` and passed to
    `on_error`, and the ticker goes on.
    """

    def __init__(self, rate: float, fn: Callable[[], None], on_error: Callable[[Exception], None]) -> None:
        self._interval = 1.0 / max(rate, 0.1)
        self._fn = fn
        self._on_error = on_error
        self.error: Exception | None = None
        self._dirty = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nano-refresh", daemon=True)
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
            try:
                self._fn()
            except Exception as exc:  # a view bug must not end the thread unseen
                if self.error is None:
                    self.error = exc
                    self._report(exc)
            self._stopped.wait(self._interval)

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


class WidgetView:
    """A live ipywidgets view: header, frozen blocks plus a live tail, and a status line.

    Each refresh sends one message (the tail), and the status line goes at most once a second. Frozen
    blocks share one layout and one style, and go into pages of PAGE_SIZE, so that no update
    grows with the length of the answer.
    """

    PAGE_SIZE = 16
    MIN_BLOCK_CHARS = 400
    STATUS_INTERVAL = 1.0

    def __init__(self, header: str, refresh_rate: float) -> None:
        import ipywidgets as widgets
        from ipywidgets.widgets.widget_string import HTMLMathStyle, HTMLStyle

        self._widgets = widgets
        self._renderer = StreamRenderer(self.MIN_BLOCK_CHARS)  # used by the refresh thread alone
        self._pending: list[str] = []  # deltas not yet given to the renderer, guarded by the lock
        self._progress = _Progress()
        self._lock = threading.Lock()
        self._layout = widgets.Layout()
        self._style = HTMLMathStyle()
        self._text_style = HTMLStyle()
        self._tail = widgets.HTMLMath("", style=self._style, layout=self._layout)
        self._header = widgets.HTML(f"<b>{html.escape(header)}</b>", style=self._text_style, layout=self._layout)
        self._steps = widgets.HTML("", style=self._text_style, layout=self._layout)
        self._step_lines: list[str] = []
        self._steps_shown = 0
        self._status = widgets.HTML(self._status_html(), style=self._text_style, layout=self._layout)
        self._body = widgets.VBox([self._tail], layout=self._layout)
        self._box = widgets.VBox([self._header, self._steps, self._body, self._status], layout=self._layout)
        self._pages: list[Any] = []
        self._status_due = 0.0
        self._ticker: Ticker | None = None
        try:
            self._handle: DisplayHandle = display(self._box, display_id=True)
            self._ticker = Ticker(refresh_rate, self._refresh, self._refresh_failed)
        except BaseException:
            self.close()
            raise

    def delta(self, text: str) -> None:
        """Take new answer text; it shows at the next tick."""
        with self._lock:
            self._pending.append(text)
            self._progress.tokens += 1
        if self._ticker is not None:
            self._ticker.poke()

    def notice(self, text: str) -> None:
        """Show a retry or warning in the status line."""
        with self._lock:
            self._progress.notice = text
            self._status_due = 0.0
        if self._ticker is not None:
            self._ticker.poke()

    def step(self, line: str) -> None:
        """Show a tool call and its result; it shows at the next tick."""
        with self._lock:
            self._step_lines.append(html.escape(line))
        if self._ticker is not None:
            self._ticker.poke()

    def finish(self, markdown: str | None, text: str, metadata: dict[str, Any], footer: str) -> None:
        """Swap the widget for portable Markdown in place, then show the footer."""
        error = self._stop()
        _swap(self._handle, markdown, text, metadata)
        _footer(footer + (f" · {_refresh_note(error)}" if error is not None else ""))

    def abandon(self) -> None:
        """Remove the view: no answer arrived."""
        self._stop()
        self._handle.update({"text/plain": ""}, raw=True)

    def close(self) -> None:
        """Join the refresh thread and close every model, the shared layout and style included; safe to call twice."""
        self._stop()
        blocks = [block for page in self._pages for block in page.children]
        models = (*blocks, *self._pages, self._tail, self._header, self._steps, self._status, self._body, self._box,
                  self._style, self._text_style, self._layout)
        failed: Exception | None = None
        for model in models:
            try:
                model.close()
            except Exception as exc:  # close the rest first, then report the first failure
                failed = failed or exc
        if failed is not None:
            raise failed

    def _stop(self) -> Exception | None:
        """Stop refreshing; the refresh error, if one happened."""
        if self._ticker is None:
            return None
        self._ticker.stop()
        return self._ticker.error

    def _refresh_failed(self, exc: Exception) -> None:
        """Say once, in the status line, that the live view broke; the answer still arrives."""
        with self._lock:
            self._progress.notice = f"{_refresh_note(exc)}; the full answer shows at the end"
            self._status_due = float("inf")
        self._status.value = self._status_html()

    def _refresh(self) -> None:
        """Take the new deltas under the lock and render outside it, so that `delta` never waits for a render."""
        with self._lock:
            pending, self._pending = self._pending, []
            status = self._status_html()
            steps = None if len(self._step_lines) == self._steps_shown else self._step_lines[:]
        for text in pending:
            self._renderer.feed(text)
        frozen, tail = self._renderer.render()
        if steps is not None:  # joined only when a call came in, not on every refresh
            self._steps_shown = len(steps)
            self._steps.value = "<br>".join(f"<code>{line}</code>" for line in steps)
        if frozen is not None:
            self._freeze(frozen)
        if tail != self._tail.value:
            self._tail.value = tail
        now = time.perf_counter()
        if now >= self._status_due:
            self._status_due = now + self.STATUS_INTERVAL
            self._status.value = status

    def _freeze(self, block_html: str) -> None:
        """Add finished blocks as a widget of their own, never to be sent again."""
        block = self._widgets.HTMLMath(block_html, style=self._style, layout=self._layout)
        if self._pages and len(self._pages[-1].children) < self.PAGE_SIZE:
            self._pages[-1].children = (*self._pages[-1].children, block)
        else:
            self._pages.append(self._widgets.VBox([block], layout=self._layout))
            self._body.children = (*self._pages, self._tail)

    def _status_html(self) -> str:
        return f"<small>{html.escape(self._progress.line())}</small>"


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

    def finish(self, markdown: str | None, text: str, metadata: dict[str, Any], footer: str) -> None:
        """Replace the live output with the final Markdown, then show the footer."""
        _swap(self._handle, markdown, text, metadata)
        _footer(footer)

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

    def finish(self, markdown: str | None, text: str, metadata: dict[str, Any], footer: str) -> None:
        """End the answer's line and print the footer."""
        print()
        if footer:
            print(_printable(footer))

    def abandon(self) -> None:
        """Nothing was printed but the header."""

    def close(self) -> None:
        """Nothing runs in the background."""


def _swap(handle: DisplayHandle, markdown: str | None, text: str, metadata: dict[str, Any]) -> None:
    data = {"text/plain": text} if markdown is None else {"text/markdown": markdown, "text/plain": text}
    handle.update(data, metadata=metadata, raw=True)


def _refresh_note(exc: Exception) -> str:
    return f"the live view failed to refresh ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"


def _footer(footer: str) -> None:
    if not footer:
        return
    display({"text/markdown": f"<sub>{escape_markdown(footer)}</sub>", "text/plain": footer}, raw=True)


def pick_mode(setting: str, shell: Any) -> str:
    """`widget`, `markdown` or `text`: the setting, or what the frontend can show."""
    if setting != "auto":
        return setting
    if getattr(shell, "kernel", None) is None:
        return "text"
    if "__vsc_ipynb_file__" in shell.user_ns or "VSCODE_PID" in os.environ or "google.colab" in sys.modules:
        return "markdown"
    return "widget"


def open_view(mode: str, header: str, refresh_rate: float) -> View:
    """Start showing an answer."""
    if mode == "widget":
        return WidgetView(header, refresh_rate)
    if mode == "markdown":
        return MarkdownView(header, refresh_rate)
    return TextView(header)
