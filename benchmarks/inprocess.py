"""A real kernel without a frontend: an in-process ipykernel whose IOPub frames are counted.

`MeteredKernel` starts ipykernel's `InProcessKernel` as the kernel singleton, so ipywidgets,
`display` and `DisplayHandle.update` go through ipykernel's own `Comm` and `Session`: every
message is JSON-packed, HMAC-signed and handed by the IOPub thread to a socket, exactly as in a
kernel process. Only the socket is replaced: the meter takes the place of `send_multipart` on
ipykernel's in-memory `DummySocket`, adds up the frames and drops them (nothing reads them back,
so no frontend work lands in the figures). "Bytes" means the ZMQ frames a kernel would send.

Two ways of showing an answer are driven here: `HtmlView` (ours) and the naive view that
re-renders the whole answer with `to_html` on every token into one `HTMLMath`.

Reaching into the view: a paced run stops the view's ticker thread and calls its `_refresh`
itself, with `nano_magic.display` reading a virtual clock; `Probe` wraps the view's renderer to
see what each refresh took in. If those internals change, these helpers fail loudly.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # ipykernel's debugger warns about frozen modules

from ipykernel.inprocess.constants import INPROCESS_KEY  # noqa: E402
from ipykernel.inprocess.ipkernel import InProcessKernel  # noqa: E402
from jupyter_client.session import Session  # noqa: E402

__all__ = ["MeteredKernel", "Probe", "Run", "run_view", "run_naive", "virtual_time", "PER_REFRESH", "REFRESH_RATE", "HEADER"]

PER_REFRESH = 15  # deltas per refresh when paced: a ~150 deltas/s model at 10 refreshes/s
REFRESH_RATE = 10.0  # nano_magic's default
HEADER = "fake-model · default · turn 1"
FOOTER = "21 in · 8000 out tokens · $0.003202 · 53.8 s"
FLUSH = b"bench-flush"


@dataclass
class Run:
    """What one streamed answer cost: process CPU seconds, IOPub bytes and messages, refreshes."""

    cpu: float
    bytes: int
    messages: int
    refreshes: int


class MeteredKernel:
    """The in-process kernel, with its IOPub traffic counted."""

    def __init__(self) -> None:
        self.kernel = InProcessKernel.instance(session=Session(key=INPROCESS_KEY))
        self.session = self.kernel.session
        # A parent request, as a cell's execute_request would be: every message carries its header.
        self.kernel.set_parent([b"bench"], self.session.msg("execute_request", {"code": "%%nano\nExplain.", "silent": False}))
        self.bytes = self.messages = 0
        self.log: list[float] | None = None  # when each frame set was sent, if asked for
        self._flushed = threading.Event()
        self.kernel._underlying_iopub_socket.send_multipart = self._count  # type: ignore[assignment]  # counts every frame the kernel sends

    def reset(self, log: bool = False) -> None:
        """Zero the counters; with `log`, note the send time of every message."""
        self.flush()
        self.bytes = self.messages = 0
        self.log = [] if log else None

    def flush(self) -> None:
        """Block until everything sent so far has passed through the IOPub thread."""
        self._flushed.clear()
        self.session.send(self.kernel.iopub_socket, "stream", {"name": "stdout", "text": FLUSH.decode()})  # type: ignore[arg-type]  # the in-process kernel's socket stands in for a ZMQ one
        self._flushed.wait()

    def _count(self, frames: list[bytes], *args: Any, **kwargs: Any) -> None:
        """The socket's send: count the frames and drop them; runs on the IOPub thread."""
        if FLUSH in frames[-1]:
            self._flushed.set()
            return
        self.bytes += sum(len(frame) for frame in frames)
        self.messages += 1
        if self.log is not None:
            self.log.append(time.perf_counter())


class Probe:
    """Watches a view's renderer: deltas fed, and for each render its time and the deltas it took in.

    Only the view's refresh calls `feed` and `render`, one thread at a time, so the counts are exact.
    """

    def __init__(self, view: Any) -> None:
        renderer = view._renderer
        feed, render = renderer.feed, renderer.render
        self.fed = 0
        self.renders: list[tuple[float, int]] = []

        def counted_feed(delta: str) -> None:
            self.fed += 1
            feed(delta)

        def noted_render() -> Any:
            self.renders.append((time.perf_counter(), self.fed))
            return render()

        renderer.feed, renderer.render = counted_feed, noted_render


class VirtualTime:
    """Stands in for the `time` module inside `nano_magic.display`; the harness moves `now`."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        """The virtual time in seconds."""
        return self.now

    monotonic = perf_counter

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def virtual_time() -> Iterator[VirtualTime]:
    """Make `nano_magic.display` read a virtual clock for the duration."""
    from nano_magic import display

    if getattr(display, "time", None) is not time:
        raise RuntimeError("nano_magic.display no longer reads the time module: update benchmarks.inprocess.virtual_time")
    clock = VirtualTime()
    display.time = clock  # type: ignore[assignment]
    try:
        yield clock
    finally:
        display.time = time


def run_view(meter: MeteredKernel, deltas: list[str], paced: bool = True) -> Run:
    """Stream `deltas` into a `HtmlView` and finish it as a cell would.

    Paced: deltas come in groups of PER_REFRESH every 0.1 s, as with a model streaming PER_REFRESH × 10
    deltas/s, and the view refreshes after a group when its ticker would: 0.1 s after the last refresh, or
    later when the refresh asked for a longer wait (its browser budget). The harness calls the view's refresh
    itself instead of its ticker thread and moves a virtual clock, so anything the view does by the clock
    (status-line pacing, tokens/s, the budget) sees the time a real stream would take, while the run takes only
    as long as the work.
    Not paced: every delta as fast as possible, with the real ticker at 10/s and the real clock.
    """
    from nano_magic.display import Final, HtmlView
    from nano_magic.render import to_markdown

    gc.collect()
    meter.reset()
    text = "".join(deltas)
    started = time.process_time()
    if paced:
        with virtual_time() as clock:
            view = HtmlView(HEADER, REFRESH_RATE)
            view._ticker.stop()  # the harness refreshes in its place
            refreshes, due = 0, 0.0
            for at in range(0, len(deltas), PER_REFRESH):
                for delta in deltas[at : at + PER_REFRESH]:
                    view.delta(delta)
                clock.now += 1 / REFRESH_RATE
                if clock.now >= due - 1e-9:
                    due = clock.now + max(1 / REFRESH_RATE, view._refresh())
                    refreshes += 1
            view.finish(Final(to_markdown(text), text, text, {"nano_magic": {"turn": 1}}, FOOTER))
            view.close()
    else:
        view = HtmlView(HEADER, REFRESH_RATE)
        probe = Probe(view)
        for delta in deltas:
            view.delta(delta)
        view.finish(Final(to_markdown(text), text, text, {"nano_magic": {"turn": 1}}, FOOTER))
        view.close()
        refreshes = len(probe.renders)
    meter.flush()
    return Run(time.process_time() - started, meter.bytes, meter.messages, refreshes)


def run_naive(meter: MeteredKernel, deltas: list[str]) -> Run:
    """The naive view: on every delta, `to_html` of the whole text so far into one `HTMLMath`."""
    import ipywidgets
    from IPython.display import display

    from nano_magic.render import to_html

    gc.collect()
    meter.reset()
    started = time.process_time()
    widget = ipywidgets.HTMLMath("")
    display(widget)
    text = ""
    for delta in deltas:
        text += delta
        widget.value = to_html(text)
    meter.flush()
    return Run(time.process_time() - started, meter.bytes, meter.messages, len(deltas))
