"""A `%%nano --classify` cell in JupyterLab and Chromium: the count per label renders as a table with a bar per label."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.support.fake_server import FakeServer, Reply
from tests.support.jupyter_lab import jupyter_lab, tree_url
from tests.test_browser import CHROMIUM_ARGS, KERNEL_IDLE, chromium  # noqa: F401 (the fixture), and the page's set-up

pytestmark = pytest.mark.browser
NOTEBOOK = "labels.ipynb"
SETUP = "%load_ext nano_magic\nimport pandas as pd\ntickets = pd.DataFrame({'text': [f'ticket {i}' for i in range(9)]})"
CELL = "%%nano --classify tickets --labels billing,bug,question\nLabel this ticket: {text}"
LABELS = ["billing", "bug", "question"]


def answer(body: dict[str, Any]) -> Reply:
    """Tickets 0-4 are billing, 5-7 bugs, 8 a question whose label is written <b>unsafely</b>."""
    n = int(re.search(r"ticket (\d+)", body["messages"][-1]["content"]).group(1))
    return Reply(json.dumps({"label": "billing" if n < 5 else "bug" if n < 8 else "<b>question</b>"}))


def test_a_classify_cell_shows_its_counts_as_a_table_with_bars(tmp_path: Path, chromium: Any) -> None:  # noqa: F811
    root = tmp_path / "lab"
    root.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(CELL)],
                                        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, root / NOTEBOOK)
    page = chromium
    with FakeServer() as server:
        server.script = answer
        with jupyter_lab(root, {"NANO_BASE_URL": server.base_url}) as lab_url:
            page.goto(tree_url(lab_url, NOTEBOOK))
            page.wait_for_function(KERNEL_IDLE, arg=NOTEBOOK, timeout=60_000)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            table = page.locator(".jp-Notebook .jp-Cell").nth(1).locator("table.nano-counts")
            table.wait_for(timeout=60_000)
            rows = table.locator("tbody tr")
            cells = [rows.nth(i).locator("td").all_inner_texts()[:2] for i in range(rows.count())]
            bars = table.evaluate("t => [...t.querySelectorAll('.nano-bar')].map(bar => bar.getBoundingClientRect().width)")
            bold = table.locator("b").count()
    assert cells == [["billing", "5"], ["bug", "3"], ["question", "0"], ["failed", "1"]]
    assert bars[0] > bars[1] > 0 and bars[2] == 0 and bars[0] == pytest.approx(120, abs=1), "a bar per label, to scale"
    assert bold == 0, "an out-of-label answer fails its row; it never reaches the table"
