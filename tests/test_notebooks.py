"""Every demo notebook runs top to bottom in a real kernel against the loopback server, and the requests
it sends carry what its prose promises: system messages per thread, history, context blocks, options."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.support.fake_server import FakeServer
from tests.support.fitting import fitting
from tests.support.notebooks import answers, run_notebook

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
SECRET = "sk-notebook-secret-4711"
CODE = "for t in (0, 0.5, 1.0):\n    print(t, 4.9 * t**2)"
REPLIES = {
    "quickstart.ipynb": "Energy is conserved: $\\Delta U = Q - W$.",
    "teaching.ipynb": f"Use $h = \\tfrac12 g t^2$:\n\n```python\n{CODE}\n```\n",
    "data_science.ipynb": '{"rows": [{"city": "Oslo", "growth_pct": 8.0}, {"city": "Lima", "growth_pct": 3.8}]}',
}


@dataclass
class Demo:
    """A demo notebook after a run: its cells with outputs, each cell's execute reply, the requests sent."""

    nb: nbformat.NotebookNode
    replies: dict[str, dict[str, Any]]
    requests: list[Any]

    def cell(self, start: str) -> nbformat.NotebookNode:
        """The one code cell whose source starts with `start`."""
        [found] = [c for c in self.nb.cells if c.cell_type == "code" and c.source.startswith(start)]
        return found

    def shown(self, start: str) -> str:
        """All the text a cell shows."""
        outputs = self.cell(start).outputs
        return "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)

    def dry_run(self, start: str) -> dict[str, Any]:
        """The request body that a `--dry-run` cell printed."""
        return json.loads(self.shown(start).split("\n\n", 1)[1])


def prompt(cell: nbformat.NotebookNode) -> str:
    """The text of a `%%nano` cell below its options line."""
    return cell.source.split("\n", 1)[1]


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


@pytest.fixture
def demo(fake: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run a demo notebook in a real kernel (with an API key set) and check it ran clean."""

    def run(name: str) -> Demo:
        monkeypatch.setenv("NANO_API_KEY", SECRET)
        fake.reply, fake.script = REPLIES[name], fitting  # tools are called and schemas answered as a model would
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        shutil.copy(NOTEBOOKS / name, tmp_path / name)  # the notebook's own folder is the kernel's working directory
        assert all(not getattr(c, "outputs", []) for c in nb.cells), "notebooks are committed without outputs"
        replies: dict[str, dict[str, Any]] = {}
        run_notebook(nb, tmp_path, on_cell_executed=lambda cell, execute_reply, **_: replies.update({cell.id: execute_reply}))
        code = [c for c in nb.cells if c.cell_type == "code"]
        on_purpose = [c for c in code if "raises-exception" in c.metadata.get("tags", [])]  # a deliberate error, tagged
        assert not any(o.output_type == "error" for c in code if c not in on_purpose for o in c.outputs)
        assert all(any(o.output_type == "error" for o in c.outputs) for c in on_purpose)
        saved = [a for c in code for a in answers(c)]
        assert saved and all(a.data["text/plain"].endswith(fake.reply) for a in saved), "the answer's last output ends with its text"
        assert SECRET not in nbformat.writes(nb), "the API key reached the saved notebook"
        return Demo(nb, replies, [post.body for post in fake.posts()])

    return run


def test_quickstart_does_what_it_says(demo) -> None:
    run = demo("quickstart.ipynb")
    reply = REPLIES["quickstart.ipynb"]
    first, entropy, child, quadratic = (run.cell(s) for s in ("%%nano\nWhat are", "%%nano -t", "%%nano\nNow", "%%nano\nDerive"))
    haiku, once = run.cell("%%nano --thread poetry"), run.cell("%%nano --once")
    sent = run.requests
    assert len(sent) == 6, "every question but the dry run is sent, once"

    assert "OpenAI-compatible server" in run.shown("# %env")  # 1. %nano config names the backend in use
    assert "in · " in run.shown("%%nano\nWhat are") and "out tokens" in run.shown("%%nano\nWhat are")  # 2. the footer
    assert sent[0]["messages"] == [user(prompt(first))]
    assert sent[1]["temperature"] == 0.2 and sent[1]["max_completion_tokens"] == 200  # 3. options
    assert "temperature" not in sent[2] and "max_completion_tokens" not in sent[2]  # ... for that cell only
    assert sent[2]["messages"] == [  # 4. the follow-up carries the conversation
        user(prompt(first)), assistant(reply), user(prompt(entropy)), assistant(reply), user(prompt(child)),
    ]
    assert sent[3]["messages"][-1] == user(prompt(quadratic))
    saved = answers(quadratic)[0].data  # 5. the answer saved as HTML with its math left for MathJax, and as text
    assert "\\(\\Delta U = Q - W\\)" in saved["text/html"] and saved["text/plain"] == reply
    assert sent[4]["messages"] == [system("You answer in haiku."), user(prompt(haiku))]  # 6. a separate thread
    assert sent[5]["messages"] == [user(prompt(once))]  # ... and a one-shot question without history
    threads = run.shown("%nano threads")
    assert re.search(r"^default +4$", threads, re.M) and re.search(r"^poetry +1 +You answer in haiku\.$", threads, re.M)
    assert reply[:80] in run.shown("print(_nano")  # 7. _nano and the usage table
    assert "total" in run.shown("print(_nano")
    dry = run.dry_run("%%nano --dry-run")  # 8. the request that was not sent, key masked
    assert dry["temperature"] == 0.7
    assert dry["messages"][-1] == user("What would you send?")
    assert dry["messages"][:-1] == sent[3]["messages"] + [assistant(reply)]
    assert "Authorization: Bearer" in run.shown("%%nano --dry-run")


def test_teaching_gives_each_thread_its_persona(demo, tmp_path: Path) -> None:
    run = demo("teaching.ipynb")
    reply = REPLIES["teaching.ipynb"]
    persona = run.cell("%nano system --thread kinematics").source.split("kinematics ", 1)[1]
    fall, speed = run.cell("%%nano --thread kinematics\nHow far"), run.cell("%%nano --thread kinematics\nAnd")
    simulation = run.cell("%%nano --thread simulation")
    sent = run.requests
    assert len(sent) == 4, "three questions and one explain"

    assert sent[0]["messages"] == [system(persona), user(prompt(fall))]
    assert sent[1]["messages"] == [system(persona), user(prompt(fall)), assistant(reply), user(prompt(speed))]
    assert sent[2]["messages"] == [system("You write short, runnable Python."), user(prompt(simulation))]

    payload = run.replies[simulation.id]["content"]["payload"]
    assert [p["text"] for p in payload if p["source"] == "set_next_input"] == [CODE]  # the code lands in a new cell

    handout = (tmp_path / "kinematics_handout.md").read_text()
    assert "$h = \\tfrac12 g t^2$" in handout and prompt(speed) in handout
    assert prompt(simulation) not in handout  # one thread's handout
    assert prompt(fall) in run.shown("%nano export")

    assert "of the $0.500000 cap is spent" in run.shown("%config NanoMagics.budget")  # the budget and what was spent
    failing = run.cell("heights =")
    assert [o.ename for o in failing.outputs if o.output_type == "error"] == ["IndexError"]  # the deliberate error
    explained = json.dumps(sent[3]["messages"])
    assert "IndexError" in explained and "heights[3]" in explained, "explain sends the error and the failing line"
    assert persona not in explained, "one-shot: no thread's history"
    assert answers(run.cell("%nano explain"))[0].data["text/plain"] == reply


def test_teaching_replays_in_class_what_was_prepared(demo, fake: FakeServer, tmp_path: Path) -> None:
    prepared = demo("teaching.ipynb")
    assert "Replaying 0 saved answers" in prepared.shown("%nano replay")  # preparing: every question goes live
    nbformat.write(prepared.nb, tmp_path / "teaching.ipynb")
    sent = len(fake.posts())
    fake.reply = "Today the model would answer differently."
    in_class = nbformat.read(tmp_path / "teaching.ipynb", as_version=4)
    run_notebook(in_class, tmp_path)

    new = fake.posts()[sent:]
    assert len(new) == 1 and "IndexError" in json.dumps(new[0].body), "in class, only the live error's explain is sent"
    assert "Replaying 3 saved answers" in "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                                                   for o in in_class.cells[3].outputs)
    asked = [c for c in in_class.cells if c.cell_type == "code" and c.source.startswith("%%nano")]
    assert len(asked) == 3
    for cell in asked:
        [answer] = answers(cell)
        assert answer.data["text/plain"] == REPLIES["teaching.ipynb"], "the prepared answer, not today's"
        assert any("replayed" in o.get("data", {}).get("text/plain", "") for o in cell.outputs)
    assert "$h = \\tfrac12 g t^2$" in (tmp_path / "kinematics_handout.md").read_text()


def test_data_science_sends_the_frame_and_reads_json_back(demo) -> None:
    run = demo("data_science.ipynb")
    reply = REPLIES["data_science.ipynb"]
    asked, as_json, summary = run.cell("%%nano --context sales\n"), run.cell("%%nano --json"), run.cell("%%nano --out")
    sent = run.requests
    assert len(sent) == 3 + 2 + 5 + 5, "the dry run sends nothing; the tool cell sends two requests; each --map one per review"

    dry = run.dry_run("%%nano --context sales --dry-run")["messages"]
    context = sent[0]["messages"][-1]["content"].removeprefix(prompt(asked))
    assert dry == [user(prompt(run.cell("%%nano --context sales --dry-run")) + context)]  # the dry run shows it exactly
    assert "shape: 6 rows × 3 columns" in context and "revenue" in context and "float64" in context
    assert "101.7" in context and "150.9" not in context  # the first five rows, not the sixth
    assert sent[0]["messages"] == [user(prompt(asked) + context)]

    assert sent[1]["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in sent[1]["messages"]] == ["system", "user"]  # --once: no history
    assert sent[1]["messages"][-1] == user(prompt(as_json) + context)
    growth = run.shown("growth =")
    assert "Oslo" in growth and "3.8" in growth

    assert sent[2]["messages"] == [user(prompt(summary) + context)]
    assert run.shown("print(summary)") == reply + "\n"

    called, answered = sent[3], sent[4]  # --tools: the function computes over the review table in the kernel
    assert [t["function"]["name"] for t in called["tools"]] == ["star_stats"]
    assert called["tools"][0]["function"]["parameters"]["properties"]["product"]["enum"] == ["kettle", "toaster", "blender"]
    [result] = [m for m in answered["messages"] if m["role"] == "tool"]
    assert json.loads(result["content"]) == {"mean_stars": 4.5, "reviews": 2}  # the kettle's two reviews: 5 and 4 stars
    [tool_answer] = answers(run.cell("%%nano --tools star_stats"))
    assert '→ star_stats(product="kettle")' in tool_answer.data["text/html"] and "4.5" in tool_answer.data["text/html"]

    judged = sent[5:10]  # --schema: each row carries the strict schema, and the answers make a typed table
    assert all(r["response_format"]["type"] == "json_schema" for r in judged)
    assert sorted(r["messages"][-1]["content"] for r in judged)[0] == "Judge this review of a blender: Smooth soups, loud motor."
    dtypes = run.shown("judged.dtypes")
    assert re.search(r"sentiment +string", dtypes) and re.search(r"mentions_noise +boolean", dtypes) and re.search(r"score +Float64", dtypes)
    assert "Boils fast" in run.shown("reviews.join(judged)") and "positive" in run.shown("reviews.join(judged)")

    replies = sent[10:]  # --map: one one-shot request per row, answers in a Series on the table's index
    assert all(len(r["messages"]) == 1 and r["max_completion_tokens"] == 60 for r in replies)
    assert "Name: answer" in run.shown("replies") and len(re.findall(r"^[0-4] ", run.shown("replies"), re.M)) == 5


def test_every_demo_notebook_is_run_here() -> None:
    assert sorted(REPLIES) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")), "a new notebook needs its test above"
