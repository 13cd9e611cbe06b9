"""Tools are the user's code, run as written (issue 20): async tools awaited, every exception but Ctrl-C back to the
model, and results bounded before they are serialised, whatever their size."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from nano_magic.tools import Toolbox, ToolCall
from tests.support.fake_server import Call, Reply, ToolCalls
from tests.support.notebooks import notebook, run_notebook


def tool_messages(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


async def lookup(city: str) -> str:
    """The population of a city, from a slow service."""
    await asyncio.sleep(0.01)
    return f"{city}: 709,000"


def test_an_async_tool_is_awaited_and_its_result_reaches_the_model(run, fake, ip) -> None:
    ip.user_ns["lookup"] = lookup
    fake.queue(ToolCalls([Call("lookup", '{"city": "Oslo"}')]), Reply("Oslo has 709,000 people."))
    cell = run("%%nano --tools lookup\nHow many people live in Oslo?")
    assert not cell.failed, cell.shown
    assert tool_messages(fake.posts()[1].body) == ["Oslo: 709,000"]
    assert "coroutine" not in cell.shown and ip.user_ns["_nano"].steps[0]["calls"][0]["error"] is None


def test_an_async_tool_runs_in_a_real_kernel_whose_loop_is_running(fake, tmp_path) -> None:
    fake.queue(ToolCalls([Call("lookup", '{"city": "Oslo"}', id="a1")]), Reply("Oslo has 709,000 people."))
    defs = textwrap.dedent('''
        import asyncio
        async def lookup(city: str) -> str:
            """The population of a city."""
            asyncio.get_running_loop()  # the awaited body runs on a loop
            await asyncio.sleep(0.01)
            return f"{city}: 709,000"
        running = asyncio.get_event_loop().is_running()
    ''')
    nb = notebook(f"%env NANO_BASE_URL={fake.base_url}\n%load_ext nano_magic", defs, "%%nano --tools lookup\nOslo?", "print(running)")
    run_notebook(nb, tmp_path)
    assert nb.cells[3].outputs[0].text == "True\n", "the kernel's own loop was running while the cell ran"
    assert tool_messages(fake.posts()[1].body) == ["Oslo: 709,000"]


@pytest.mark.parametrize("exc", ["SystemExit(2)", "GeneratorExit()", "asyncio.CancelledError()"])
def test_a_tool_raising_any_base_exception_but_ctrl_c_fails_its_own_call(run, fake, ip, exc: str) -> None:
    ip.run_cell(f"import asyncio\ndef parse(flag: str) -> str:\n    raise {exc}")
    fake.queue(ToolCalls([Call("parse", '{"flag": "-x"}')]), Reply("That flag is not valid."))
    cell = run("%%nano --tools parse\nParse -x")
    assert not cell.failed, cell.shown
    (sent,) = tool_messages(fake.posts()[1].body)
    assert sent.startswith(f"Error: {exc.split('(')[0].split('.')[-1]}")
    assert ip.user_ns["_nano"].text == "That flag is not valid." and len(ip.user_ns["_nano"].steps) == 1
    assert "That flag is not valid." in run("%nano history").shown, "the turn was recorded"
    assert ip.magics_manager.registry["NanoMagics"].chat.ledger, "the paid requests are in the ledger"


def test_a_hostile_repr_fails_its_own_call() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise SystemExit("no")

    def make() -> object:
        return Hostile()

    def fine() -> str:
        return "ok"

    box = Toolbox([make, fine])
    failed = box.run(ToolCall("1", "make", "{}"))
    assert failed.error == "SystemExit: no" and failed.result == "Error: SystemExit: no"
    assert box.run(ToolCall("2", "fine", "{}")).result == "ok"


def test_a_generator_result_is_read_only_up_to_the_cut() -> None:
    pulled = itertools.count()

    def numbers() -> Iterator[int]:
        for n in itertools.count():
            next(pulled)
            yield n

    async def ticks():
        for n in itertools.count():
            yield n

    box = Toolbox([numbers, ticks], result_chars=100)
    call = box.run(ToolCall("1", "numbers", "{}"))
    assert call.result.startswith("[0,1,2,3,") and call.result.endswith("\n[cut: only the first 100 characters of the result are shown]")
    assert next(pulled) < 60, "about 40 numbers fill 100 characters; no more were read"
    assert box.run(ToolCall("2", "ticks", "{}")).result.startswith("[0,1,2,3,")


def test_results_keep_their_shape_within_the_cut() -> None:
    import numpy as np
    import pandas as pd

    def grid() -> object:
        return np.arange(6).reshape(2, 3)

    def wide() -> object:
        return pd.DataFrame([range(500)] * 3)

    def nested() -> object:
        return {"when": pd.Timestamp("2026-01-02").to_pydatetime(), "rows": [(1, "a"), {"x": None}]}

    box = Toolbox([grid, wide, nested])
    assert box.run(ToolCall("1", "grid", "{}")).result == "[[0,1,2],[3,4,5]]"
    assert json.loads(box.run(ToolCall("3", "nested", "{}")).result) == {"when": "2026-01-02T00:00:00", "rows": [[1, "a"], {"x": None}]}
    table = box.run(ToolCall("2", "wide", "{}")).result
    assert table.splitlines()[0] == "," + ",".join(map(str, range(50))) and table.endswith("[first 3 of 3 rows × 500 columns]")


PROBE = '''
import itertools, json, resource, sys, time
import numpy as np, pandas as pd
from nano_magic.tools import Tool, Toolbox, ToolCall

values = {{
    "array": np.arange(16_000_000, dtype=np.float64),
    "frame": pd.DataFrame({{"a": np.arange(2_000_000), "b": np.arange(2_000_000) * 0.5}}),
    "list": list(range(16_000_000)),
}}
tools = [Tool.from_callable((lambda v: lambda: v)(value), name) for name, value in values.items()]
box = Toolbox([*tools, Tool.from_callable(lambda: itertools.count(), "endless")])
box.run(ToolCall("0", "array", "{{}}"))  # imports done, pages touched
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
headroom = {headroom}
resource.setrlimit(resource.RLIMIT_AS, (used + headroom, used + headroom))
out = {{}}
for name in ("array", "frame", "list", "endless"):
    start = time.perf_counter()
    call = box.run(ToolCall(name, name, "{{}}"))
    out[name] = [time.perf_counter() - start, call.result[-80:], len(call.result), call.error]
print(json.dumps(out))
'''


def test_huge_and_endless_results_take_little_time_and_memory_under_a_memory_limit() -> None:
    """Under 50 MB of headroom, each result becomes its 4,000 characters in under 0.5 s."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(headroom=50 * 2**20)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    for name, (seconds, tail, size, error) in figures.items():
        assert error is None and size <= 4100, (name, error, size)
        assert seconds < 0.5, (name, seconds)
        if name != "frame":
            assert tail.endswith("[cut: only the first 4000 characters of the result are shown]"), name
    assert figures["frame"][1].endswith("[first 50 of 2,000,000 rows]")
