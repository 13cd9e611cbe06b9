"""A real kernel: saved outputs, re-runs by cell id, interrupt, and resuming after a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel

from tests.support.fake_server import Cut, Reply, Status
from tests.support.notebooks import CellIdClient, answers, notebook, run_notebook


def roles(post) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in post.body["messages"]]


def test_a_notebook_of_nano_cells_saves_portable_answers(fake, tmp_path: Path) -> None:
    fake.reply = "Energy is $E=mc^2$ and it costs $5. <img src=x onerror=alert(1)>"
    nb = notebook("%load_ext nano_magic", '%%nano -s "Be terse."\nFirst', "%%nano\nSecond", "%%nano --thread other\nThird")
    run_notebook(nb, tmp_path)
    first, second, third = (answers(c) for c in nb.cells[1:])
    assert [len(first), len(second), len(third)] == [1, 1, 1]
    output = first[0]
    shown = output.data["text/html"]
    assert "\\(E=mc^2\\)" in shown and "<span>$</span>5" in shown, "math left for MathJax, the currency kept out of its reach"
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown and "<img" not in shown
    assert output.data["text/plain"] == fake.reply
    saved = output.metadata["nano_magic"]
    assert (saved["prompt"], saved["thread"], saved["turn"], saved["system"], saved["status"]) == ("First", "default", 0, "Be terse.", "complete")
    assert saved["cell_id"] == nb.cells[1].id
    assert saved["execution_count"] == nb.cells[1].execution_count, "the cell's In[n]"
    assert third[0].metadata["nano_magic"]["thread"] == "other"
    for cell in nb.cells[1:]:
        assert not any(o.output_type == "stream" for o in cell.outputs), "nothing but the answer and its footer"
        assert [o.output_type for o in cell.outputs] == ["display_data"] * 3, "the header, the answer and its footer"
        assert "fake-model" in cell.outputs[0].data["text/plain"]
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.outputs)
        assert any("tokens" in o.get("data", {}).get("text/plain", "") for o in cell.outputs)
    assert roles(fake.posts()[1]) == [("system", "Be terse."), ("user", "First"), ("assistant", fake.reply), ("user", "Second")]
    assert roles(fake.posts()[2]) == [("user", "Third")]


def test_rerunning_a_cell_by_id_replaces_its_turn(fake, tmp_path: Path) -> None:
    nb = notebook("%load_ext nano_magic", "%%nano\nFirst", "%%nano\nSecond", "%nano history")
    client = CellIdClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index in range(3):
            client.execute_cell(nb.cells[index], index)
        nb.cells[1].source = "%%nano\nFirst, reworded"
        client.execute_cell(nb.cells[1], 1)
        client.execute_cell(nb.cells[3], 3)
    assert roles(fake.posts()[2]) == [("user", "First, reworded")]
    history = nb.cells[3].outputs[0].data["text/markdown"]
    assert history.count("## Turn") == 2 and history.index("First, reworded") < history.index("Second")


def test_interrupt_stops_the_stream_keeps_the_partial_answer_and_the_kernel_goes_on(fake) -> None:
    fake.reply = " ".join(f"word{i}" for i in range(200))
    fake.chunk_delay = 0.1
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext nano_magic", timeout=60)
        msg_id = kc.execute("%%nano\nCount slowly")
        outputs = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and fake.posts() == []:
            time.sleep(0.05)
        time.sleep(1.5)
        km.interrupt_kernel()
        interrupted = time.monotonic()
        reply = kc.get_shell_msg(timeout=10)
        stopped_after = time.monotonic() - interrupted
        while True:
            msg = kc.get_iopub_msg(timeout=5)
            if msg["parent_header"].get("msg_id") == msg_id:
                outputs.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" and msg["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        assert stopped_after < 0.5
        finals = [m for m in outputs if m["msg_type"] == "update_display_data" and "nano_magic" in m["content"]["metadata"]]
        assert finals, "the tail became the final answer"
        saved = finals[-1]["content"]["metadata"]["nano_magic"]
        partial = finals[-1]["content"]["data"]["text/plain"]
        assert partial.strip() in finals[-1]["content"]["data"]["text/html"]
        assert saved["status"] == "stopped" and partial.startswith("word0 word1") and "word199" not in partial
        errors = [m["content"] for m in outputs if m["msg_type"] == "error"]
        assert errors and errors[0]["traceback"] == ["Stopped by you; the partial answer is kept."]
        status = kc.execute_interactive("print(_nano.status, _nano.text == %r[:len(_nano.text)])" % fake.reply, timeout=30, output_hook=outputs.append)
        assert status["content"]["status"] == "ok"
        assert any(m["msg_type"] == "stream" and "stopped True" in m["content"]["text"] for m in outputs)
        connections = fake.connections
        fake.chunk_delay = 0.0
        fake.reply = "Back again."
        done = kc.execute_interactive("%%nano\nNext question", timeout=60)
        assert done["content"]["status"] == "ok"
        assert fake.connections == connections + 1, "the interrupted connection was closed, not reused"
        assert partial == saved["answer"]
        assert roles(fake.posts()[1])[:2] == [("user", "Count slowly"), ("assistant", saved["answer"])]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_restarted_kernel_resumes_from_the_saved_notebook(fake, tmp_path: Path) -> None:
    fake.reply = "Answer with $x^2$."
    first = notebook("%load_ext nano_magic", "%%nano -s Tutor\nFirst question", "%%nano\nSecond question")
    run_notebook(first, tmp_path)
    path = tmp_path / "lesson.ipynb"
    nbformat.write(first, path)
    before = len(fake.posts())
    resumed = notebook("%load_ext nano_magic", f"%nano load {path}", "%%nano\nThird question")
    run_notebook(resumed, tmp_path)
    assert "Loaded 2 turns in 1 threads" in resumed.cells[1].outputs[0].data["text/markdown"]
    posts = fake.posts()[before:]
    assert len(posts) == 1, "loading made no request"
    assert roles(posts[0]) == [
        ("system", "Tutor"), ("user", "First question"), ("assistant", fake.reply),
        ("user", "Second question"), ("assistant", fake.reply), ("user", "Third question"),
    ]


def test_a_failed_cell_stops_run_all_without_a_traceback(fake, tmp_path: Path) -> None:
    nb = notebook("%load_ext nano_magic", "%%nano -t 5\nHi", "print('not reached')")
    with pytest.raises(Exception) as info:
        run_notebook(nb, tmp_path)
    assert "--temperature 5 is out of range" in str(info.value)
    assert nb.cells[2].outputs == [] and fake.posts() == []


def test_a_saved_notebook_never_holds_the_key(fake, tmp_path: Path, monkeypatch) -> None:
    secret = "sk-saved-notebook-leak-4b8e1f0a9d"
    monkeypatch.setenv("NANO_API_KEY", secret)
    fake.queue(Status(401, {"error": {"message": f"Incorrect API key provided: {secret}"}}), Cut("Part "), Reply())
    nb = notebook("%load_ext nano_magic", "%nano config", "%%nano --dry-run\nHi", "%%nano\nA", "%%nano\nB", "%%nano\nC", "%nano history")
    run_notebook(nb, tmp_path, allow_errors=True)
    path = tmp_path / "leak.ipynb"
    nbformat.write(nb, path)
    saved = path.read_text()
    assert secret not in saved
    shown = json.dumps(json.loads(saved), ensure_ascii=False)
    assert "refused the key from NANO_API_KEY" in shown and "…0a9d" in shown
    assert all(p.headers["authorization"] == f"Bearer {secret}" for p in fake.posts())


def test_the_extension_loads_from_ipython_configuration(fake) -> None:
    km, kc = start_new_kernel(kernel_name="python3", extra_arguments=["--InteractiveShellApp.extensions=nano_magic"])
    try:
        outputs: list = []
        reply = kc.execute_interactive("%%nano --once\nHi", timeout=60, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok"
        assert any("nano_magic" in m["content"].get("metadata", {}) for m in outputs if m["msg_type"] == "update_display_data")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
