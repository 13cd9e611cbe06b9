"""Row 11: the kernel-side cost of one tool round trip, next to the HTTP round trip it rides on.

Kernel side: the streamed Chat Completions frames of one call (its arguments in 20 fragments, as
`tests/support/fake_server.py` sends them) are read by `Client.stream` from an `httpx.MockTransport`,
so that no socket is involved; the call runs a no-op tool through `Toolbox.run` (argument JSON,
pydantic validation, result to text); and the next request is built with the call and its result
appended. The baseline is one request and answer over loopback HTTP to the `FakeServer` on a
kept-alive connection: the least a round trip costs before any model thinks. Wall time, medians
of 200 (kernel side) and 50 (loopback), after a warm-up; the tool's schema is derived once per
cell, so it is shown apart.

Row 11b: a huge or endless tool result turned into the 4,000 characters the model reads (`Toolbox.run`),
each in a fresh interpreter so that its peak memory is its own: the larger of tracemalloc's peak (Python and
numpy allocations) and the rise of `ru_maxrss` over the value itself (what tracemalloc cannot see, such as Rust's).
The baseline serialises the whole value first, as the tools did before issue 20 (`pydantic_core.to_json`,
`tolist()` for an array, the first 50 rows as CSV for a table); an endless iterator has no baseline: it never ends.

    python -m benchmarks.tools
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from benchmarks.table import Row, emit, median, ms, size
from nano_magic.client import Client
from nano_magic.config import Backend
from nano_magic.conversation import step_messages
from nano_magic.tools import Tool, Toolbox
from nano_magic.wire import Options, ToolCall, build_request
from tests.support.fake_server import Call, ChatApi, FakeServer, ToolCalls

ROUNDS = 200
LOOPBACK = 50


def noop(city: str, days: int) -> str:
    """Do nothing.

    Args:
        city: a city
        days: how many days
    """
    return "ok"


def stream_bytes(body: dict) -> bytes:
    """The SSE body of one call whose arguments arrive in 20 fragments."""
    api = ChatApi(body)
    script = ToolCalls([Call("noop", '{"city": "Zürich", "days": 3}', id="call_1")], pieces=20)
    return "".join(api.opening() + api.calls(script)).encode()


def one_round(client: Client, backend: Backend, toolbox: Toolbox, opening: list[dict], options: Options) -> None:
    """Parse the streamed call, run it, build the next request."""
    request = build_request(backend, "fake-model", None, opening, options, toolbox)
    calls = [event for event in client.stream(request) if isinstance(event, ToolCall)]
    steps = [{"text": "", "calls": [toolbox.run(call).to_dict() for call in calls]}]
    build_request(backend, "fake-model", None, opening + step_messages(steps, "chat"), options, toolbox)


def kernel_side() -> tuple[list[float], float]:
    """Seconds per round, and the seconds it took to describe the tool once."""
    backend = Backend("bench", "http://bench.invalid/v1", "fake-model")
    options = Options(model="fake-model")
    opening = [{"role": "user", "content": "What is the weather?"}]
    payload = stream_bytes({"model": "fake-model", "stream_options": {"include_usage": True}})
    transport = httpx.MockTransport(lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=payload))
    client = Client(backend, transport=transport, max_retries=0)
    started = time.perf_counter()
    toolbox = Toolbox([Tool.from_callable(noop)])
    describe = time.perf_counter() - started
    for _ in range(20):
        one_round(client, backend, toolbox, opening, options)
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        one_round(client, backend, toolbox, opening, options)
        times.append(time.perf_counter() - began)
    client.close()
    return times, describe


def loopback() -> list[float]:
    """Seconds per request and short answer to the loopback server, on a kept-alive connection."""
    with FakeServer() as fake:
        fake.reply = "ok"
        backend = Backend("bench", fake.base_url, "fake-model")
        client = Client(backend, max_retries=0)
        request = build_request(backend, "fake-model", None, [{"role": "user", "content": "Hi"}], Options())
        times = []
        for index in range(LOOPBACK + 5):
            began = time.perf_counter()
            for _ in client.stream(request):
                pass
            if index >= 5:
                times.append(time.perf_counter() - began)
        client.close()
    return times


RESULTS = {
    "a 16-million-element float array": "np.arange(16_000_000, dtype=np.float64)",
    "a 2-million-row DataFrame": "pd.DataFrame({'a': np.arange(2_000_000), 'b': np.arange(2_000_000) * 0.5})",
    "a 16-million-item list": "list(range(16_000_000))",
    "an endless iterator": "itertools.count()",
}
ONE_RESULT = """
import itertools, json, resource, sys, time, tracemalloc
import numpy as np, pandas as pd
from pydantic_core import to_json
from nano_magic.tools import Tool, Toolbox, ToolCall
value = {make}
box = Toolbox([Tool.from_callable(lambda: value, "result"), Tool.from_callable(lambda: np.arange(3), "warm")])
box.run(ToolCall("0", "warm", "{{}}"))  # first-call imports are not the result's cost
to_json([1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
started = time.perf_counter()
if {ours}:
    text = box.run(ToolCall("1", "result", "{{}}")).result
    seconds = time.perf_counter() - started
    tracemalloc.start()  # a second, traced run for the memory: tracing slows the first
    box.run(ToolCall("2", "result", "{{}}"))
else:
    if isinstance(value, pd.DataFrame):
        text = value.head(50).to_csv()[:4000]
    else:
        text = to_json(value.tolist() if hasattr(value, "tolist") else value).decode()[:4000]
    seconds = time.perf_counter() - started
traced = tracemalloc.get_traced_memory()[1]
rise = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps([seconds, max(traced, rise), len(text)]))
"""


def one_result(make: str, ours: bool) -> tuple[float, float]:
    """Seconds and peak bytes to turn one value into the model's text, in a fresh interpreter."""
    code = ONE_RESULT.format(make=make, ours=ours)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    seconds, peak, _ = json.loads(done.stdout.splitlines()[-1])
    return seconds, peak


def bounded_results() -> list[Row]:
    """Row 11b: each huge or endless result under 0.5 s and 50 MB, against serialising it whole."""
    rows = []
    for what, make in RESULTS.items():
        seconds, peak = one_result(make, True)
        if make.startswith("itertools"):
            baseline, ratio = "never ends (allocates until the kernel dies)", "—"
        else:
            base_seconds, base_peak = one_result(make, False)
            baseline, ratio = f"{ms(base_seconds)}, {size(base_peak)}", f"{seconds / base_seconds:.3f}"
        rows.append(Row(f"11b. tool result: {what} to 4,000 characters (time, peak memory)", f"{ms(seconds)}, {size(peak)}",
                        baseline, ratio, "< 500 ms, < 50 MB", seconds < 0.5 and peak < 50e6))
    return rows


def measure() -> list[Row]:
    """Kernel-side overhead of a tool round trip against one loopback HTTP round trip, and bounded results."""
    ours, describe = kernel_side()
    base = loopback()
    overhead, trip = median(ours), median(base)
    return [Row(
        f"11. tool round trip, kernel side (parse a call in 20 fragments, run a no-op tool, build the next request), median of {ROUNDS}; "
        f"describing the first tool of the process, pydantic import included: {ms(describe)}",
        ms(overhead), f"loopback HTTP round trip: {ms(trip)}", f"{overhead / trip:.2f}", "< 5 ms", overhead < 0.005,
    ), *bounded_results()]


if __name__ == "__main__":
    emit(measure())
