"""`%nano explain` explains the error you just saw (issue 20): nano_magic's own one-line errors, every form of a secret
masked, a bounded traceback, and the causes of a chained exception; each with the request body asserted."""

from __future__ import annotations

import base64
import sys
from urllib.parse import quote

import pytest

from tests.support.fake_server import Status


@pytest.fixture
def no_error(monkeypatch):
    monkeypatch.delattr(sys, "last_value", raising=False)


def sent(fake) -> str:
    return fake.posts()[-1].body["messages"][1]["content"]


def test_explain_after_a_failing_nano_cell_explains_that_cells_one_line_error(run, fake, ip, no_error) -> None:
    assert run("1 / 0").failed
    fake.queue(Status(400, {"error": {"message": "Unsupported value: 'temperature' does not support 1.5", "type": "invalid_request_error"}}))
    failed = run("%%nano -t 1.5\nHi")
    assert failed.failed
    line = [s for s in failed.shown.splitlines() if s.strip()][-1]  # the cell's one-line error, under its header
    run("%nano explain")
    question = sent(fake)
    assert "ZeroDivisionError" not in question, "not the older error"
    assert "CellFailed" in question and "-t" in line and line.strip() in question
    assert "Hi" in question.split("The failing cell")[1], "the failing cell"


SECRET = "tok/9f3+Qa=Zr7@Lm2xW8pV5kN1c"


@pytest.mark.parametrize("shown", [
    SECRET,
    quote(SECRET, safe=""),
    f"https://student:{quote(SECRET, safe='')}@data.example.org/set.csv",
    base64.b64encode(f"student:{SECRET}".encode()).decode(),
    repr(SECRET.encode()),
])
def test_explain_masks_a_known_secret_in_every_form(run, fake, no_error, monkeypatch, shown: str) -> None:
    monkeypatch.setenv("DATASET_TOKEN", SECRET)
    run(f"raise ConnectionError({shown!r})")
    run("%nano explain")
    body = str(fake.posts()[-1].body)
    encoded = [SECRET, quote(SECRET, safe=""), base64.b64encode(f"student:{SECRET}".encode()).decode()[8:-4]]
    assert not any(form in body for form in encoded), body
    assert "ConnectionError" in body and "…W8pV5kN1c"[-4:] in body


def test_a_recursion_error_sends_its_first_and_last_frames_and_says_how_many_were_left_out(run, fake, no_error) -> None:
    assert run("def down(n):\n    return down(n + 1)\n\ndown(0)").failed
    run("%nano explain")
    question = sent(fake)
    assert len(question) < 3000, len(question)
    assert "RecursionError: maximum recursion depth exceeded" in question
    assert question.count("in down: return down(n + 1)") == 7 and "in <module>: down(0)" in question
    left = [line for line in question.splitlines() if line.endswith("frames left out …")]
    assert len(left) == 1 and int(left[0].split()[1].replace(",", "")) > 900


def test_a_chained_exception_comes_with_its_causes(run, fake, no_error) -> None:
    assert run("def load(text):\n    try:\n        return int(text)\n    except ValueError as exc:\n"
               "        raise RuntimeError('the settings file is broken') from exc\n\nload('ten')").failed
    run("%nano explain")
    question = sent(fake)
    assert "RuntimeError: the settings file is broken" in question
    cause = question.index("ValueError: invalid literal for int() with base 10: 'ten'")
    assert question.index("caused by") < cause and "in load: return int(text)" in question
