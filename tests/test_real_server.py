"""The round trip against a real OpenAI-compatible server: `transformers serve` with a tiny model."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.server


@pytest.fixture
def real(ip, transformers_server, monkeypatch):
    base_url, model = transformers_server
    monkeypatch.setenv("NANO_BASE_URL", base_url)
    monkeypatch.setenv("NANO_MODEL", model)
    return ip


def test_a_nano_cell_streams_from_transformers_serve(real, run) -> None:
    cell = run("%%nano --max-tokens 8\nSay hello.")
    answer = real.user_ns["_nano"]
    assert not cell.failed, cell.shown
    assert answer.text and answer.text in cell.stdout
    assert answer.usage.output_tokens == 8 and answer.usage.input_tokens > 0
    assert f"{answer.usage.input_tokens} in · 8 out tokens" in cell.stdout
    assert answer.status == "length" and "token limit" in cell.stdout


def test_options_and_a_follow_up_reach_the_real_server(real, run) -> None:
    run('%%nano -s "Be brief." --max-tokens 6 -t 0 --seed 1\nFirst.')
    first = real.user_ns["_nano"]
    cell = run("%%nano --max-tokens 6 --top-p 0.9\nSecond.")
    second = real.user_ns["_nano"]
    assert not cell.failed, cell.shown
    assert second.usage.input_tokens > first.usage.input_tokens  # the history travelled
    turns = real.magics_manager.registry["NanoMagics"].chat.conversation.threads["default"].turns
    assert [t.prompt for t in turns] == ["First.", "Second."]


def test_non_streamed_request_to_the_real_server(real, run) -> None:
    cell = run("%%nano --no-stream --max-tokens 5\nHi")
    assert not cell.failed and real.user_ns["_nano"].usage.output_tokens == 5
