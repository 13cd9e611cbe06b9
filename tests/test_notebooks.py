"""Every demo notebook runs top to bottom in a real kernel against the loopback server."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.support.notebooks import answers, run_notebook

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
REPLIES = {
    "quickstart.ipynb": "Energy is conserved: $\\Delta U = Q - W$.",
    "teaching.ipynb": "Use $h = \\tfrac12 g t^2$:\n\n```python\nfor t in (0, 0.5, 1.0):\n    print(t, 4.9 * t**2)\n```\n",
    "data_science.ipynb": '{"rows": [{"city": "Oslo", "growth_pct": 8.0}, {"city": "Lima", "growth_pct": 3.8}]}',
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_demo_notebook_runs_clean(name: str, fake, tmp_path: Path) -> None:
    fake.reply = REPLIES[name]
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not getattr(c, "outputs", []) for c in nb.cells), "notebooks are committed without outputs"
    run_notebook(nb, tmp_path)
    saved = [a for c in nb.cells if c.cell_type == "code" for a in answers(c)]
    assert saved and all(a.data["text/plain"] == fake.reply for a in saved)
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if name == "teaching.ipynb":
        assert "$h = \\tfrac12 g t^2$" in (tmp_path / "kinematics_handout.md").read_text()
    if name == "data_science.ipynb":
        table = next(c for c in nb.cells if c.source.startswith("growth ="))
        assert "Oslo" in table.outputs[0].data["text/plain"]
        assert "shape: 6 rows × 3 columns" in fake.posts()[0].body["messages"][-1]["content"]
