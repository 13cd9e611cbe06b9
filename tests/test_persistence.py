"""Export and load: JSON round trips losslessly, Markdown is a readable handout with math kept."""

from __future__ import annotations

from pathlib import Path

import nbformat

from tests.support.notebooks import notebook


def engine(ip):
    return ip.magics_manager.registry["NanoMagics"].chat


def test_json_export_round_trips(run, fake, ip, tmp_path: Path) -> None:
    fake.reply = "Use $a^2+b^2=c^2$."
    run('%%nano -s "Tutor" -t 0.5\nPythagoras?')
    run("%%nano --thread other\nSomething else")
    path = tmp_path / "talk.json"
    assert "Saved to" in run(f"%nano export {path}").shown
    before = engine(ip).conversation.to_dict()
    run("%nano reset --all")
    assert engine(ip).conversation.threads == {}
    assert "Loaded 2 turns in 2 threads" in run(f"%nano load {path}").shown
    assert engine(ip).conversation.to_dict() == before
    assert before["threads"][0]["turns"][0]["options"] == {"temperature": 0.5}
    assert "sk-" not in path.read_text()


def test_markdown_export_keeps_math_and_code(run, fake, tmp_path: Path) -> None:
    fake.reply = "The formula \\(x^2\\) and\n\n```python\nprint(1)\n```\n"
    run("%%nano\nShow me")
    path = tmp_path / "handout.md"
    run(f"%nano export {path} --thread default")
    text = path.read_text()
    assert "# Thread: default" in text and "**You:**" in text and "Show me" in text
    assert "$x^2$" in text and "<pre><code>print&#40;1&#41;</code></pre>" in text


def test_load_rebuilds_threads_from_notebook_metadata(run, fake, ip, tmp_path: Path) -> None:
    nb = notebook("%%nano\nQ1", "%%nano --thread t2\nQ2")
    for cell, (prompt, thread) in zip(nb.cells, [("Q1", "default"), ("Q2", "t2")]):
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": "A"}, metadata={"nano_magic": {
            "prompt": prompt, "answer": "A", "thread": thread, "turn": 0, "system": "S", "status": "complete", "model": "m"}})]
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    run(f"%nano load {path}")
    threads = engine(ip).conversation.threads
    assert [t.prompt for t in threads["default"].turns] == ["Q1"] and threads["t2"].turns[0].cell_id == nb.cells[1].id
    assert fake.posts() == []


def test_load_without_a_path_asks_for_one(run, fake, monkeypatch) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    cell = run("%nano load")
    assert cell.failed and "give a path" in cell.shown


def test_load_finds_the_current_notebook_from_the_frontend(run, fake, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "current.ipynb"
    nbformat.write(notebook("%%nano\nHi"), path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    assert "Loaded 0 turns" in run("%nano load").shown


def test_export_of_an_unknown_thread_or_bad_suffix_is_refused(run, fake, tmp_path: Path) -> None:
    assert "no thread named 'nope'" in run(f"%nano export {tmp_path / 'x.json'} --thread nope").shown
    assert "PATH.json|PATH.md" in run(f"%nano export {tmp_path / 'x.txt'}").shown
    assert not (tmp_path / "x.json").exists()
