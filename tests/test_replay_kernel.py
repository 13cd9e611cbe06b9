"""Replay in a real kernel: run a lesson live, save it, restart, replay it with no request."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import nbformat
from jupyter_client.manager import start_new_kernel

from tests.support.fake_server import Reply
from tests.support.notebooks import answers, notebook, run_notebook

LESSON = ["%load_ext nano_magic", '%%nano -s "Be brief."\nWhat is heat?', "%%nano\nAnd work?", "%%nano --thread other\nEntropy?"]
REPLIES = ["Heat is energy in transit: $Q$.", "Work is force times distance: $W = Fd$.", "Entropy measures spread."]


def roles(post) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in post.body["messages"]]


def text(cell) -> str:
    return answers(cell)[0].data["text/plain"]


def footer(cell) -> str:
    return "\n".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs if "nano_magic" not in o.get("metadata", {}))


def prepared_lesson(fake, tmp_path: Path) -> Path:
    fake.queue(*(Reply(r) for r in REPLIES))
    live = notebook(*LESSON)
    run_notebook(live, tmp_path)
    assert [text(c) for c in live.cells[1:]] == REPLIES
    path = tmp_path / "lesson.ipynb"
    nbformat.write(live, path)
    return path


def rerun(path: Path, replay_line: str, edits: Mapping[int, str] = MappingProxyType({}), extra: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """The saved notebook as a restarted kernel sees it: outputs cleared, a replay cell after %load_ext."""
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        cell.outputs, cell.execution_count = [], None
        cell.source = edits.get(index, cell.source)
    nb.cells.insert(1, nbformat.v4.new_code_cell(replay_line))
    nb.cells.extend(nbformat.v4.new_code_cell(source) for source in extra)
    return nb


def test_a_saved_lesson_replays_with_no_request_and_history_carries_on(fake, tmp_path: Path) -> None:
    path = prepared_lesson(fake, tmp_path)
    before = len(fake.posts())
    replay = rerun(path, f"%nano replay {path} --speed 0", extra=("%nano history",))
    run_notebook(replay, tmp_path)
    assert "Replaying 3 saved answers" in replay.cells[1].outputs[0].data["text/plain"]
    assert [text(c) for c in replay.cells[2:5]] == REPLIES
    assert all("replayed" in footer(c) for c in replay.cells[2:5])
    assert fake.posts()[before:] == [], "Run All again made no request"
    history = replay.cells[5].outputs[0].data["text/markdown"]
    assert history.count("## Turn") == 3 and "Work is force" in history

    edited = rerun(path, f"%nano replay {path} --speed 0", edits={3: "%%nano --thread other\nEntropy, simply?"}, extra=("%%nano\nAnd power?",))
    fake.reply = "Power is work per time."
    run_notebook(edited, tmp_path)
    posts = fake.posts()[before:]
    assert [text(c) for c in edited.cells[2:4]] == REPLIES[:2] and text(edited.cells[4]) == fake.reply
    assert len(posts) == 2, "only the edited and the new prompt went live"
    assert roles(posts[0]) == [("user", "Entropy, simply?")]
    assert roles(posts[1]) == [
        ("system", "Be brief."), ("user", "What is heat?"), ("assistant", REPLIES[0]),
        ("user", "And work?"), ("assistant", REPLIES[1]), ("user", "And power?"),
    ]


def test_offline_replay_refuses_an_edited_prompt_with_no_request(fake, tmp_path: Path) -> None:
    path = prepared_lesson(fake, tmp_path)
    before = len(fake.posts())
    offline = rerun(path, f"%nano replay {path} --offline --speed 0", edits={3: "%%nano --thread other\nEntropy, simply?"})
    run_notebook(offline, tmp_path, allow_errors=True)
    assert [text(c) for c in offline.cells[2:4]] == REPLIES[:2]
    errors = [o for o in offline.cells[4].outputs if o.output_type == "error"]
    assert answers(offline.cells[4]) == [] and len(errors) == 1
    assert errors[0].traceback == [errors[0].traceback[0]] and "no saved answer matches this cell" in errors[0].traceback[0]
    assert fake.posts()[before:] == []


def test_a_replay_streams_through_the_live_view_at_its_speed(fake, tmp_path: Path) -> None:
    fake.queue(Reply(" ".join(f"step{i}" for i in range(60))))  # 60 output tokens: 1.5 s at 40 tokens/s
    live = notebook("%load_ext nano_magic", "%%nano\nCount to sixty")
    run_notebook(live, tmp_path)
    path = tmp_path / "count.ipynb"
    nbformat.write(live, path)
    before = len(fake.posts())
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext nano_magic", timeout=60)
        kc.execute_interactive(f"%nano replay {path} --speed 40", timeout=60)
        messages: list[dict] = []
        started = time.monotonic()
        reply = kc.execute_interactive("%%nano\nCount to sixty", timeout=60, output_hook=messages.append)
        elapsed = time.monotonic() - started
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok" and fake.posts()[before:] == []
    tails = [m["content"]["data"]["text/html"] for m in messages
             if m["msg_type"] == "update_display_data" and "<small>" not in m["content"]["data"].get("text/html", "<small>")]
    assert len(tails) >= 5 and len(set(tails)) >= 5, "the view updated several times while the answer streamed"
    assert 1.3 < elapsed < 10
    finals = [m for m in messages if m["msg_type"] == "update_display_data" and "nano_magic" in m["content"]["metadata"]]
    assert finals[-1]["content"]["data"]["text/plain"] == text(live.cells[1])
