"""The guide works as written: every example in README.md and docs/ runs, in order, page by page, in a real
kernel against the loopback server, and every relative link and #anchor in them resolves.

An example is a fence whose info string is `python`, or a fence without one whose first line is a magic
(`%nano`, `%%nano`, `%config`, ...). An HTML comment just before the fence, which GitHub does not show, marks
an example that fails on purpose (`<!-- expect: the line it shows -->`) or that cannot run here
(`<!-- skip: why -->`); `<!-- examples: none -->` marks a page that has no example.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import nbformat
import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.support.fake_server import Behaviour, FakeServer, Reply
from tests.support.fitting import fitting
from tests.support.notebooks import run_notebook
from tests.support.parts import missing

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*(expect|skip|examples):\s*(.*?)\s*-->", re.S)
ANSWER = "The short answer: $E = mc^2$, so\n\n- energy and mass are one quantity;\n- $c^2$ converts between them.\n"


@dataclass
class Example:
    """One runnable fence of a page, with what its marker asks."""

    line: int
    source: str
    expect: str | None = None
    skip: str | None = None


@dataclass
class Page:
    """A page's examples, and whether it says it has none."""

    examples: list[Example]
    none: bool


def _tokens(path: Path) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))


def _runs(fence: Token) -> bool:
    info = fence.info.strip().split(" ")[0]
    return info == "python" or (info in ("", "ipython") and fence.content.lstrip().startswith("%"))


def read_page(path: Path) -> Page:
    """The page's examples in order; a marker must sit right before an example."""
    tokens = _tokens(path)
    examples: list[Example] = []
    none = False
    for index, token in enumerate(tokens):
        found = MARKER.search(token.content) if token.type == "html_block" else None
        if found and found[1] == "examples":
            assert found[2] == "none", f"{path.name}:{token.map[0] + 1}: only <!-- examples: none --> is known"
            none = True
        elif found:
            after = tokens[index + 1] if index + 1 < len(tokens) else None
            assert after is not None and after.type == "fence" and _runs(after), (
                f"{path.name}:{token.map[0] + 1}: a {found[1]} marker must come right before an example"
            )
        elif token.type == "fence" and _runs(token):
            before = MARKER.search(tokens[index - 1].content) if index and tokens[index - 1].type == "html_block" else None
            kind, value = (before[1], before[2]) if before else ("", "")
            examples.append(Example(token.map[0] + 1, token.content, value if kind == "expect" else None,
                                    value if kind == "skip" else None))
    return Page(examples, none)


# Running a page

def model(body: dict[str, Any]) -> Behaviour | None:
    """The loopback model of the guide: tools called, schemas fitted, and a JSON object when `--json` asks for one."""
    wanted = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return fitting(body) or (Reply('{"answer": 42}') if wanted.get("type") == "json_object" else None)


def shown(output: Any) -> str:
    """The text one output shows."""
    if output.output_type == "error":
        return "\n".join([f"{output.ename}: {output.evalue}", *output.traceback])
    data = output.get("data", {})
    return output.get("text", "") + data.get("text/plain", "") + "\n" + data.get("text/markdown", "")


def failure(output: Any) -> bool:
    return output.output_type == "error" or (output.output_type == "stream" and output.name == "stderr")


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_every_example_runs(path: Path, fake: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = read_page(path)
    runnable = [e for e in page.examples if e.skip is None]
    if not runnable:
        assert not page.none or not page.examples, f"{path.name} says it has no example, but has some"
        if not page.none:
            missing(f"{path.name} has no example that runs; mark it <!-- examples: none --> if that is right")
        return
    assert not page.none, f"{path.name} is marked as having no example, but has {len(runnable)}"
    saved = tmp_path / f"{path.stem}.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", str(saved))  # the open notebook, as JupyterLab names it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NANO_BUDGET", raising=False)
    monkeypatch.delenv("NANO_MAGIC_DISABLED", raising=False)
    fake.reply, fake.script = ANSWER, model
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nano_magic")] + [nbformat.v4.new_code_cell(e.source) for e in runnable]

    def autosave(**_: Any) -> None:  # JupyterLab saves as it goes, so that `%nano replay` and `load` find earlier answers
        nbformat.write(nb, saved)

    run_notebook(nb, tmp_path, allow_errors=True, on_cell_executed=autosave)

    assert not any(failure(o) for o in nb.cells[0].outputs), "".join(map(shown, nb.cells[0].outputs))
    for example, cell in zip(runnable, nb.cells[1:]):
        where = f"{path.name}:{example.line}"
        text = "\n".join(map(shown, cell.outputs))
        if example.expect is not None:
            assert example.expect in text, f"{where} should show {example.expect!r}, but shows:\n{text}"
        else:
            assert not any(failure(o) for o in cell.outputs), f"{where} failed:\n{text}"


def test_the_front_page_is_short_and_every_page_has_one_title() -> None:
    assert (ROOT / "README.md").stat().st_size <= 10 * 1024, "README.md is the front page: at most 10 KB"
    for path in PAGES:
        titles = [t for t in _tokens(path) if t.type == "heading_open" and t.tag == "h1"]
        assert len(titles) == 1, f"{path.name} has {len(titles)} H1 titles"


# Links

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in heading.lower() if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every #anchor of a page's headings, numbered as GitHub numbers repeats."""
    tokens = _tokens(path)
    seen: dict[str, int] = {}
    found = set()
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            inline = tokens[index + 1]
            text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
            base = slug(text)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Every link and image target of a page."""
    targets = []
    for token in _tokens(path):
        for child in token.children or []:
            if child.type in ("link_open", "image"):
                targets.append(str(child.attrs.get("href") or child.attrs.get("src")))
    return targets


def test_every_relative_link_and_anchor_resolves() -> None:
    checked = 0
    for path in PAGES:
        for target in links(path):
            assert not target.startswith("/"), f"{path.name}: {target} must be relative"
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http(s) and mailto: not followed, so that the test needs no network
            file, _, anchor = target.partition("#")
            goal = (path.parent / unquote(file)).resolve() if file else path
            assert goal.exists(), f"{path.name}: {target} points at nothing"
            if anchor:
                assert goal.suffix == ".md" and anchor in anchors(goal), f"{path.name}: no heading for #{anchor} in {goal.name}"
            checked += 1
    assert checked > 20


def test_slugs_follow_github() -> None:
    assert slug("Many rows: `%%nano --map VAR`") == "many-rows-nano---map-var"
    assert slug("Getting started and backends") == "getting-started-and-backends"
    assert slug("What's new in 0.2.0?") == "whats-new-in-020"


def test_help_points_to_every_page_of_the_guide(run) -> None:
    shown = run("%nano help").shown
    pages = sorted(f"docs/{p.name}" for p in PAGES[1:])
    assert [p for p in pages if p not in shown] == [], "%nano help names every page of the guide"
    manual = run("%%nano?\n").shown
    named = re.findall(r"docs/[a-z-]+\.md", manual)
    assert named and all((ROOT / p).is_file() for p in named), f"%%nano? names pages that exist: {named}"
