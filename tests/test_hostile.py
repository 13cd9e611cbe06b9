"""An attacker's inputs after issues 11-15: a shared notebook's metadata, a server that echoes the key, JSON nested
too deep for Python's parser. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tests.support.fake_server import Call, MidStreamError, Reply, ToolCalls
from tests.test_render import IMG, assert_inert_markdown

SECRET = "sk-nano-redteam-4b7e1d9a0c3f"
DEEP = "[" * 20_000  # deeper than CPython's json parser can recurse


def _saved_notebook(path: Path, **saved: object) -> Path:
    meta = {"nano_magic": {"thread": "default", "turn": 0, "prompt": "Hi", "answer": "Hello", "model": "m", **saved}}
    output = nbformat.v4.new_output("display_data", data={"text/plain": "Hello"}, metadata=meta)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%%nano\nHi", outputs=[output])]), path)
    return path


def test_a_shared_notebooks_turn_status_stays_text_in_history_and_export(run, tmp_path: Path) -> None:
    path = _saved_notebook(tmp_path / "shared.ipynb", status=f"done {IMG}")
    assert "Loaded 1 turns" in run(f"%nano load {path}").shown
    history = run("%nano history")
    markdown = history.outputs[-1].data["text/markdown"]
    assert_inert_markdown(markdown)
    assert f"(done {IMG})" in history.outputs[-1].data["text/plain"]
    run(f"%nano export {tmp_path / 'out.md'}")
    assert_inert_markdown((tmp_path / "out.md").read_text())


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_server_error_mid_answer_never_shows_the_key(run, fake, monkeypatch, api: str) -> None:
    monkeypatch.setenv("NANO_API_KEY", SECRET)
    fake.queue(MidStreamError("Part of it ", f"invalid key {SECRET}"))
    cell = run(f"%%nano --api {api}\nHi")
    error = str(cell.result.error_in_exec)
    assert cell.failed and "reported an error mid-answer: invalid key" in error
    assert SECRET not in cell.shown + error and SECRET[-4:] in error


@pytest.mark.parametrize("command", ["%%nano\nHi", "%nano models"])
def test_a_key_with_a_stray_newline_never_shows(run, fake, monkeypatch, command: str) -> None:
    monkeypatch.setenv("NANO_API_KEY", SECRET + "\n")  # as `open("key.txt").read()` gives it
    cell = run(command)
    assert not cell.failed and SECRET not in cell.shown, "the newline is dropped, and the key works but never shows"
    assert all(p.headers["authorization"] == f"Bearer {SECRET}" for p in fake.requests)


def test_a_map_row_answering_json_nested_too_deep_fails_alone(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["deep", "flat"]
    fake.script = lambda body: Reply(DEEP if "deep" in str(body["messages"][-1]["content"]) else '{"ok": true}')
    cell = run("%%nano --map rows --json --out labels\nAnswer in JSON about {item}")
    assert not cell.failed, cell.shown
    assert ip.user_ns["labels"].tolist() == [None, {"ok": True}]
    assert "not valid JSON" in ip.user_ns["_nano"].failed[0]


def test_tool_arguments_nested_too_deep_go_back_to_the_model_as_invalid(run, fake, ip) -> None:
    ip.user_ns["area"] = lambda r: r  # never called
    ip.user_ns["area"].__annotations__ = {"r": float}
    fake.queue(ToolCalls([Call("area", DEEP)]), Reply("Sorry, let me stop."))
    cell = run("%%nano --tools area\nArea of radius 3?")
    assert not cell.failed, cell.shown
    call = ip.user_ns["_nano"].steps[0]["calls"][0]
    assert "not valid JSON" in call["error"] and "Sorry, let me stop." in cell.shown


def test_a_json_answer_nested_too_deep_is_reported_as_invalid_json(run, fake, ip) -> None:
    fake.reply = DEEP
    cell = run("%%nano --json\nGive JSON")
    assert cell.failed and "not valid JSON" in str(cell.result.error_in_exec)
    assert ip.user_ns["_nano"].text == DEEP  # the raw text is kept


@pytest.mark.parametrize("odd", [
    {"prompt": [{"type": "image_url", "image_url": {"url": "https://evil.example/track"}}]}, {"answer": 3},
    {"thread": {"a": 1}}, {"thread": 5}, {"system": {"role": "developer"}}, {"model": 7}, {"status": 3}, {"options": "x"},
])
def test_a_turn_of_the_wrong_shape_in_a_shared_notebook_is_skipped(run, fake, tmp_path: Path, odd: dict) -> None:
    path = _saved_notebook(tmp_path / "shared.ipynb", **odd)
    assert "Loaded 0 turns" in run(f"%nano load {path}").shown
    for command in ("%nano history", "%nano threads", "%%nano\nHello there"):
        assert not run(command).failed
    messages = fake.posts()[-1].body["messages"]
    assert all(isinstance(m["content"], str) for m in messages), messages


@pytest.mark.parametrize("thread", [
    {"name": 5, "turns": []}, {"name": "t", "system": ["x"], "turns": []}, {"name": "t", "turns": [{"prompt": ["x"], "answer": "a"}]},
    {"name": "t", "turns": 3}, "junk",
])
def test_an_export_of_the_wrong_shape_is_refused_in_one_line(run, fake, tmp_path: Path, thread: object) -> None:
    path = tmp_path / "shared.json"
    path.write_text(json.dumps({"format": "nano_magic", "version": 1, "threads": [thread]}))
    cell = run(f"%nano load {path}")
    assert cell.failed and "is not a notebook or a nano_magic export" in str(cell.result.error_in_exec)


def test_a_thousand_tool_steps_do_not_make_the_markdown_view_resend_a_growing_output_each_time(ip) -> None:
    from IPython.utils.capture import capture_output

    from nano_magic.display import Final, MarkdownView

    with capture_output() as captured:
        view = MarkdownView("fake-model · default · turn 1", refresh_rate=10)
        for i in range(2_000):
            view.step(f"→ area(r={i}) = {i * i}")
        view.finish(Final("Done.", "Done.", "Done.", {}, ""))
    sent = sum(len(o.data.get("text/markdown", "")) for o in captured.outputs)
    assert captured.outputs[-1].data["text/markdown"] == "Done."
    assert sent < 2_000_000  # each step re-sending every line before it: about 50 MB


def test_the_terminal_never_receives_control_sequences_from_the_model(run, fake) -> None:
    fake.reply = "Title \x1b]0;pwned\x07 cleared \x1b[2J and \x9b31m red, tabs\tand lines\nkept."
    cell = run("%%nano\nHi")
    assert not cell.failed
    assert not any(ch in cell.stdout for ch in "\x1b\x07\x9b")
    assert "tabs\tand lines\nkept." in cell.stdout



def test_a_password_in_the_base_url_never_shows(run, fake, monkeypatch) -> None:
    password = "url-password-9c2e7a4b1d"
    monkeypatch.setenv("NANO_BASE_URL", fake.base_url.replace("http://", f"http://student:{password}@"))
    shown = [run(cell) for cell in ("%nano config", "%%nano --dry-run\nHi", "%%nano\nHi")]
    assert not any(cell.failed for cell in shown)
    assert not any(password in cell.shown for cell in shown)
    assert "student:…4b1d&#64;127.0.0.1" in shown[0].shown, "%nano config shows the URL with the password masked"
    monkeypatch.setenv("NANO_BASE_URL", f"http://student:{password}@127.0.0.1:9/v1")  # nothing listens there
    dead = run("%%nano\nHi")
    assert dead.failed and "Could not reach" in dead.shown and password not in dead.shown
