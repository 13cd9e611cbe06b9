"""A plot sent to the model from a real kernel with the inline backend, resent, restored after a restart, and missed."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from tests.support.notebooks import answers, notebook, run_notebook
from tests.support.parts import missing

try:
    from PIL import Image
except ImportError:
    missing("Pillow (the images extra, which scripts/test installs)", module=True)

PLOT = "%matplotlib inline\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2), dpi=50)\nax.plot([1, 4, 9])"


def pictures(post) -> list[bytes | str]:
    """Every picture in a Chat request, in order: PNG bytes, or the text that stands for a missing one."""
    found: list[bytes | str] = []
    for message in post.body["messages"]:
        if message["role"] != "user" or isinstance(message["content"], str):
            continue
        for part in message["content"][1:]:
            if part["type"] == "image_url":
                found.append(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
            else:
                found.append(part["text"])
    return found


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the kernels inherit it: their store is here
    return tmp_path / "cache" / "nano_magic" / "images"


def test_a_plot_goes_out_comes_back_after_a_restart_and_is_missed_without_the_store(fake, tmp_path, store) -> None:
    live = notebook("%load_ext nano_magic", PLOT, "%%nano --image fig\nWhat trend is this?", "%%nano\nAnd its slope?",
                    "%%nano --once --image _\nThe last figure shown?")
    run_notebook(live, tmp_path)
    first, second, last = fake.posts()
    plot = pictures(first)[0]
    assert isinstance(plot, bytes), "the plot itself, not a placeholder"
    image = Image.open(io.BytesIO(plot))
    assert image.format == "PNG" and image.size == (150, 100)  # 3 x 2 inches at 50 dpi
    assert pictures(second) == [plot], "the next cell of the thread resends the plot"
    assert [Image.open(io.BytesIO(p)).size for p in pictures(last) if isinstance(p, bytes)] == [(150, 100)], "_ is the figure the inline backend closed"
    saved = answers(live.cells[2])[0].metadata["nano_magic"]
    assert saved["images"][0]["media_type"] == "image/png" and "base64" not in json.dumps(live.cells[2].outputs)
    path = tmp_path / "plot.ipynb"
    nbformat.write(live, path)

    restarted = notebook("%load_ext nano_magic", f"%nano load {path}", "%%nano\nOnce more?")
    run_notebook(restarted, tmp_path)
    assert "Loaded 2 turns" in restarted.cells[1].outputs[0].data["text/plain"]
    assert pictures(fake.posts()[-1]) == [plot], "%nano load restored the turn with its plot from the store"

    shutil.rmtree(store)
    elsewhere = notebook("%load_ext nano_magic", f"%nano load {path}", "%%nano\nOnce more?")
    run_notebook(elsewhere, tmp_path)
    assert pictures(fake.posts()[-1]) == ["[image not available]"]
    assert len(fake.posts()) == 5
