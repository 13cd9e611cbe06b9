"""The gate in a real kernel: a stopped answer is charged, tool and schema cells replay, offline --map sends nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import start_new_kernel

from tests.conftest import BACKEND_VARIABLES
from tests.support.fake_server import Call, Reply, ToolCalls
from tests.support.notebooks import answers, notebook, run_notebook

PRICED = "gpt-4.1-nano"
DEFINITIONS = '''
from pydantic import BaseModel
RAN = []
def area(r: float) -> float:
    """Area of a circle of radius r."""
    RAN.append(r)
    return round(3.14159 * r * r, 2)
def volume(r: float) -> float:
    """Volume of a ball of radius r."""
    RAN.append(r)
    return r
class Planet(BaseModel):
    name: str
    moons: int
'''
LESSON = ["%load_ext nano_magic", DEFINITIONS, "%%nano --tools area\nArea of radius 3?", "%%nano --schema Planet --thread facts\nMars?"]


def test_a_real_interrupt_mid_answer_is_charged_as_estimated(fake) -> None:
    env = {k: v for k, v in os.environ.items() if k not in BACKEND_VARIABLES}
    km, kc = start_new_kernel(kernel_name="python3", env={**env, "NANO_BASE_URL": fake.base_url})
    try:
        kc.execute_interactive("%load_ext nano_magic\n%config NanoMagics.display = 'text'", timeout=60)
        fake.reply, fake.chunk_delay = " ".join(f"w{i}" for i in range(400)), 0.02
        msg_id = kc.execute(f"%%nano -m {PRICED}\nCount")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for the answer to be streaming
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream" and "w3" in msg["content"]["text"]:
                break
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "error"
        probe = ("c = get_ipython().magics_manager.registry['NanoMagics'].chat\n"
                 "print(_nano.status, [(e.label, e.estimated, e.usage.output_tokens > 0) for e in c.ledger])")
        seen: list[str] = []
        kc.execute_interactive(probe, timeout=60, output_hook=lambda m: seen.append(m["content"].get("text") or m["content"].get("evalue", "")))
        assert "stopped [('default', True, True)]" in "".join(seen)
        usage: list[str] = []
        kc.execute_interactive("%nano usage", timeout=60, output_hook=lambda m: usage.append(str(m["content"].get("data", ""))))
        assert "estimated" in "".join(usage)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def step_lines_and_text(cell) -> str:
    """The text the saved answer shows, one line per block."""
    import html
    import re

    (answer,) = answers(cell)
    return html.unescape(re.sub(r"<[^>]+>", "", answer.data["text/html"])).strip().replace("\n\n", "\n")


def test_tool_and_schema_cells_replay_after_a_restart_and_an_edited_tool_list_goes_live(fake, tmp_path: Path) -> None:
    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="call_1")]), Reply("The area is 28.27."),
               Reply('{"name": "Mars", "moons": 2}'))
    live = notebook(*LESSON)
    run_notebook(live, tmp_path)
    shown = [step_lines_and_text(c) for c in live.cells[2:4]]
    assert shown[0] == "→ area(r=3) = 28.27\nThe area is 28.27." and '"moons": 2' in shown[1]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(live, path)
    before = len(fake.posts())

    def restarted(tools_cell: str) -> nbformat.NotebookNode:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            cell.outputs, cell.execution_count = [], None
        nb.cells[2].source = tools_cell
        nb.cells.insert(1, nbformat.v4.new_code_cell(f"%nano replay {path} --speed 0"))
        nb.cells.append(nbformat.v4.new_code_cell("print(RAN, _nano.json)"))
        return run_notebook(nb, tmp_path)

    replayed = restarted(LESSON[2])
    assert fake.posts()[before:] == [], "zero requests"
    assert [step_lines_and_text(c) for c in replayed.cells[3:5]] == shown, "the same answers and step lines"
    assert replayed.cells[5].outputs[0].text == "[] name='Mars' moons=2\n", "no tool ran, the schema's value is back"

    fake.queue(Reply("Computed afresh."))
    edited = restarted("%%nano --tools area,volume\nArea of radius 3?")
    (post,) = fake.posts()[before:]
    assert [t["function"]["name"] for t in post.body["tools"]] == ["area", "volume"], "the edited tool list went live"
    assert step_lines_and_text(edited.cells[3]) == "Computed afresh."
    assert step_lines_and_text(edited.cells[4]) == shown[1], "the schema cell still replays"


def test_offline_map_with_a_partly_filled_cache_sends_nothing(fake, tmp_path: Path) -> None:
    empty = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), empty)
    nb = notebook(
        "%load_ext nano_magic", f"%config NanoMagics.cache_path = {str(tmp_path / 'answers.sqlite3')!r}",
        "rows = ['a', 'b']", "%%nano --map rows --out out\nSay {item}",
        f"rows = ['a', 'b', 'c', 'd', 'e']\n%nano replay {empty} --offline", "%%nano --map rows --out out\nSay {item}",
    )
    run_notebook(nb, tmp_path, allow_errors=True)
    assert len(fake.posts()) == 2
    (error,) = [o for o in nb.cells[5].outputs if o.output_type == "error"]
    assert error.traceback == ["Replay is offline and 3 of 5 items have no cached answer; nothing was sent. "
                               "`%nano replay` without --offline lets them go live."]
    assert [o for o in nb.cells[5].outputs if o.output_type != "error"] == [], "nothing else is shown"
