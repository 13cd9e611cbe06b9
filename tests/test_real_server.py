"""Against a real OpenAI-compatible server: llama.cpp's (llama-cpp-python) with a tiny random model.

The model never ends an answer on its own (see tests/support/tiny_model.py), so every answer runs to
its token limit unless a grammar built from a JSON Schema ends it.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import pytest

pytestmark = pytest.mark.server

AREA = {
    "type": "function",
    "function": {
        "name": "area",
        "description": "Area of a shape.",
        "parameters": {
            "type": "object",
            "properties": {"shape": {"enum": ["circle", "square"]}, "big": {"type": "boolean"}},
            "required": ["shape", "big"],
        },
    },
}
VERDICT = {
    "type": "object",
    "properties": {"verdict": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["verdict", "sure"],
}


def _stream(base_url: str, body: dict) -> list[dict]:
    """POST a streamed chat request; return its chunks."""
    chunks = []
    with httpx.stream("POST", f"{base_url}/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks


def test_a_nano_cell_streams_from_the_real_server(real, run) -> None:
    cell = run("%%nano --max-tokens 8\nSay hello.")
    answer = real.user_ns["_nano"]
    assert not cell.failed, cell.shown
    assert answer.text and answer.text in cell.stdout
    assert answer.usage is None and "usage not reported" in cell.stdout  # this server streams no usage
    assert answer.status == "length" and "token limit" in cell.stdout


def test_options_and_a_follow_up_reach_the_real_server(real, run) -> None:
    run('%%nano --no-stream -s "Be brief." --max-tokens 6 -t 0 --seed 1\nFirst.')
    first = real.user_ns["_nano"]
    cell = run("%%nano --no-stream --max-tokens 6 --top-p 0.9\nSecond.")
    second = real.user_ns["_nano"]
    assert not cell.failed, cell.shown
    assert second.usage.input_tokens > first.usage.input_tokens + 6  # the history travelled
    turns = real.magics_manager.registry["NanoMagics"].chat.conversation.threads["default"].turns
    assert [t.prompt for t in turns] == ["First.", "Second."]


def test_non_streamed_request_to_the_real_server(real, run) -> None:
    cell = run("%%nano --no-stream --max-tokens 5\nHi")
    answer = real.user_ns["_nano"]
    assert not cell.failed and answer.usage.output_tokens == 5
    assert f"{answer.usage.input_tokens} in · 5 out tokens" in cell.stdout


def test_a_json_schema_becomes_a_grammar(llama_server) -> None:
    """The random model answers in the schema; unconstrained, it would not stop before the token limit."""
    base_url, model = llama_server
    body = {"model": model, "messages": [{"role": "user", "content": "Sure?"}], "max_tokens": 60}
    chunks = _stream(base_url, {**body, "response_format": {"type": "json_object", "schema": VERDICT}})
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    value = json.loads(text)
    assert set(value) == {"verdict", "sure"} and value["verdict"] in ("yes", "no") and isinstance(value["sure"], bool)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # OpenAI's own shape, which `--schema` sends, is refused by this server's request validation.
    openai_shape = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT, "strict": True}}
    refused = httpx.post(f"{base_url}/chat/completions", json={**body, "response_format": openai_shape}, timeout=60)
    assert refused.status_code >= 400 and "json_object" in refused.text


def test_a_forced_tool_call_streams_arguments_that_fit_the_schema(llama_server) -> None:
    base_url, model = llama_server
    body = {
        "model": model, "messages": [{"role": "user", "content": "How big?"}], "max_tokens": 60,
        "tools": [AREA], "tool_choice": {"type": "function", "function": {"name": "area"}},
    }
    calls = [c for chunk in _stream(base_url, body) if chunk["choices"] for c in chunk["choices"][0]["delta"].get("tool_calls") or []]
    assert calls and {c["index"] for c in calls} == {0}
    # This server repeats the id and name in every fragment; only the arguments are pieces.
    assert {c["function"]["name"] for c in calls} == {"area"} and len({c["id"] for c in calls}) == 1
    arguments = json.loads("".join(c["function"]["arguments"] for c in calls))
    assert arguments["shape"] in ("circle", "square") and isinstance(arguments["big"], bool)


def test_a_forced_tool_runs_through_the_magic(real, run) -> None:
    """The grammar makes the random model call the tool with fitting arguments, and the call runs in the kernel.

    The follow-up request (tool_choice back to auto, with the call and its result) gets an empty
    200 from llama-cpp-python's chatml-function-calling format, so the answer after the call is cut.
    """
    seen = []

    def area(shape: Literal["circle", "square"], big: bool) -> float:
        """Area of a shape."""
        seen.append((shape, big))
        return 3.14 if shape == "circle" else 1.0

    real.user_ns["area"] = area
    cell = run("%%nano --tools area --tool-choice area --max-tokens 40\nHow big?")
    real.user_ns.pop("area")
    answer = real.user_ns["_nano"]
    assert len(seen) == 1 and seen[0][0] in ("circle", "square") and isinstance(seen[0][1], bool), cell.shown
    assert answer.steps[0]["calls"][0]["error"] is None and answer.requests == 2
    assert "→ area(shape=" in cell.stdout
    assert answer.status == "cut" and "The stream ended before the answer was finished." in cell.stdout
