"""The verbs against llama.cpp's server with a tiny random model: a real server's answers and refusals of its own."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.server


def test_a_reduce_that_fits_one_chunk_streams_its_answer_from_the_real_server(real, run) -> None:
    real.user_ns["notes"] = pd.DataFrame({"text": ["the lid leaks", "the lid cracked", "great handle"]})
    cell = run("%%nano --reduce notes --max-tokens 8\nWhat do these notes say?\n- {text}")
    assert not cell.failed, cell.shown
    result = real.user_ns["_nano"]
    assert result.text and result.text in cell.stdout and result.rounds == [[result.text]]
    assert result.answer.status == "length" and "token limit" in cell.stdout, "the tiny model never stops on its own"
    assert "1 request (one chunk)" in cell.stdout


def test_filter_rows_fail_each_alone_with_the_real_servers_own_reason(real, run) -> None:
    real.user_ns["notes"] = ["the lid leaks", "great handle"]
    cell = run("%%nano --filter notes --out kept --max-tokens 8\nIs this a complaint? {item}")
    assert not cell.failed, cell.shown
    result = real.user_ns["_nano"]
    assert result.failed.index.tolist() == [0, 1] and real.user_ns["kept"] == []
    assert all("json_object" in error for error in result.failed), "the server says it takes only text or json_object"
    assert "0 of 2 items answered · 2 failed" in cell.stdout
