"""Tools: JSON Schema from callables, and the tool loop over the loopback server in the exact wire shapes of both APIs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypedDict

import pandas as pd
import pytest
from pydantic import BaseModel

from nano_magic.chat import Chat, Interrupted
from nano_magic.tools import Tool, Toolbox, ToolCall, ToolError, tools_from_names
from tests.support.fake_server import Call, Refuse, Reply, ToolCalls

CALLS: list[tuple[str, dict]] = []


def area(r: float) -> float:
    """Area of a circle of radius r."""
    CALLS.append(("area", {"r": r}))
    return round(3.14159 * r * r, 2)


def weather(city: str, unit: Literal["C", "F"] = "C") -> dict:
    """The weather in a city.

    Args:
        city: the city's name
        unit: degrees Celsius or Fahrenheit
    """
    CALLS.append(("weather", {"city": city, "unit": unit}))
    return {"city": city, "temperature": 21, "unit": unit}


def broken(x: int) -> int:
    """Always fails."""
    return x // 0


@pytest.fixture(autouse=True)
def forget_calls():
    CALLS.clear()


@pytest.fixture
def chat(fake):
    engine = Chat(base_url=fake.base_url, max_retries=0)
    yield engine
    engine.close()


def bodies(fake) -> list[dict]:
    return [p.body for p in fake.posts()]


# Schema derivation


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: float
    y: float


@dataclass
class Box:
    width: int
    height: int


class Span(TypedDict):
    start: int
    end: int


def everything(count: int, ratio: float, name: str, flag: bool, tags: list[str], scores: dict[str, int],
               mode: Literal["fast", "slow"], color: Color, maybe: int | None, point: Point, box: Box, span: Span,
               limit: int = 10) -> None:
    """Every kind of parameter.

    Parameters
    ----------
    count : int
        how many
    limit : int
        at most this many
    """


def test_every_parameter_type_is_described() -> None:
    tool = Tool.from_callable(everything)
    params = tool.parameters
    props = params["properties"]
    assert tool.description == "Every kind of parameter."
    assert [props[n]["type"] for n in ("count", "ratio", "name", "flag", "tags", "scores")] == [
        "integer", "number", "string", "boolean", "array", "object"]
    assert props["tags"]["items"] == {"type": "string"}
    assert props["scores"]["additionalProperties"] == {"type": "integer"}
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert params["$defs"]["Color"]["enum"] == ["red", "blue"]
    assert {"type": "null"} in props["maybe"]["anyOf"]
    assert set(params["$defs"]["Point"]["properties"]) == {"x", "y"}
    assert set(params["$defs"]["Box"]["properties"]) == {"width", "height"}
    assert set(params["$defs"]["Span"]["properties"]) == {"start", "end"}
    assert props["count"]["description"] == "how many" and props["limit"]["description"] == "at most this many"
    assert "limit" not in params["required"] and "count" in params["required"]
    assert props["limit"]["default"] == 10
    assert not tool.strict, "a default (and a free-form dict) rule out strict mode"


def test_a_fully_typed_tool_is_strict_and_shaped() -> None:
    def move(point: Point, box: Box, steps: int) -> str:
        """Move a point.

        Args:
            steps: how far
        """
        return "ok"

    tool = Tool.from_callable(move)
    assert tool.strict
    assert tool.chat_spec() == {"type": "function", "function": {
        "name": "move", "description": "Move a point.", "parameters": tool.parameters, "strict": True}}
    assert tool.responses_spec() == {"type": "function", "name": "move", "description": "Move a point.",
                                     "parameters": tool.parameters, "strict": True}
    for schema in (tool.parameters, *tool.parameters["$defs"].values()):
        assert schema["additionalProperties"] is False and sorted(schema["required"]) == sorted(schema["properties"])
    assert tool.parameters["properties"]["steps"]["description"] == "how far"


def test_unannotated_parameters_accept_anything_and_make_the_tool_non_strict() -> None:
    def loose(value, times: int):
        return value

    tool = Tool.from_callable(loose)
    assert not tool.strict
    assert "type" not in tool.parameters["properties"]["value"]
    box = Toolbox([tool])
    assert box.run(ToolCall("1", "loose", '{"value": [1, {"a": null}], "times": 2}')).result == '[1,{"a":null}]'


def test_names_are_looked_up_in_the_namespace_with_dots() -> None:
    class Helpers:
        @staticmethod
        def stats(xs: list[float]) -> float:
            """Mean."""
            return sum(xs) / len(xs)

    found = tools_from_names("area, helpers.stats", {"area": area, "helpers": Helpers})
    assert [t.name for t in found] == ["area", "helpers_stats"]
    for bad, message in (("nothing", "no function named 'nothing'"), ("helpers.nope", "no function named 'helpers.nope'"),
                         ("number", "number is not a function")):
        with pytest.raises(ToolError, match=message):
            tools_from_names(bad, {"helpers": Helpers, "number": 3})

    def star(*args: int) -> int:
        return 0

    with pytest.raises(ToolError, match="named parameters only"):
        Tool.from_callable(star)


def test_any_kind_of_callable_runs_with_the_arguments_the_model_sends() -> None:
    class Counter:
        def __init__(self, start: int) -> None:
            self.start = start

        def add(self, n: int) -> int:
            """Add n to the start."""
            return self.start + n

    box = Toolbox([Tool.from_callable(lambda x: x * 2, "double"), Counter(40).add, Tool.from_callable(divmod, "divmod"),
                   Tool.from_callable(sorted, "sorted"), Counter])
    assert box.run(ToolCall("1", "double", '{"x": 21}')).result == "42"
    assert box.run(ToolCall("2", "add", '{"n": 2}')).result == "42"
    assert box.run(ToolCall("3", "divmod", '{"x": 85, "y": 2}')).result == "[42,1]", "builtins take positional-only arguments"
    assert box.run(ToolCall("4", "sorted", '{"iterable": [3, 1, 2]}')).result == "[1,2,3]"
    made = box.run(ToolCall("5", "Counter", '{"start": 1}'))
    assert made.error is None and made.result.startswith("<") and "Counter object" in made.result


def test_results_are_json_or_repr_tables_compact_and_long_results_cut() -> None:
    def table() -> pd.DataFrame:
        return pd.DataFrame({"a": range(200), "b": ["x"] * 200})

    def obj() -> object:
        return threading.Lock

    def long() -> str:
        return "y" * 5000

    box = Toolbox([table, obj, long, weather], result_chars=300)
    shown = box.run(ToolCall("1", "table", "{}")).result
    assert shown.startswith(",a,b\n0,0,x\n1,1,x\n") and shown.endswith("\n[cut: only the first 300 characters of the result are shown]")
    full = Toolbox([table]).run(ToolCall("1", "table", "")).result
    assert full.endswith("49,49,x\n[first 50 of 200 rows]")
    assert box.run(ToolCall("2", "obj", "{}")).result == repr(threading.Lock)
    assert box.run(ToolCall("3", "weather", '{"city": "Oslo"}')).result == '{"city":"Oslo","temperature":21,"unit":"C"}'
    cut = box.run(ToolCall("4", "long", "{}")).result
    assert cut == "y" * 300 + "\n[cut: only the first 300 characters of the result are shown]"


# The tool loop over the wire


def test_one_call_chat(chat, fake) -> None:
    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="call_abc")]), Reply("The area is 28.27."))
    steps: list = []
    answer = chat.ask("Area of radius 3?", tools=[area], on_step=steps.append)
    assert answer.text == "The area is 28.27." and answer.status == "complete"
    assert CALLS == [("area", {"r": 3.0})]
    assert [s.result for s in steps] == ["28.27"]
    first, second = bodies(fake)
    assert first["tools"] == [Tool.from_callable(area).chat_spec()] and "tool_choice" not in first
    assert second["messages"] == [
        {"role": "user", "content": "Area of radius 3?"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_abc", "type": "function", "function": {"name": "area", "arguments": '{"r": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "28.27"},
    ]
    assert second["tools"] == first["tools"]
    assert answer.requests == 2 and len(chat.ledger) == 2, "every request is counted"
    one, two = (entry.usage for entry in chat.ledger)
    assert answer.usage == one + two and two.input_tokens > one.input_tokens


def test_one_call_responses(chat, fake) -> None:
    chat.api = "responses"
    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="call_abc")]), Reply("The area is 28.27."))
    answer = chat.ask("Area of radius 3?", tools=[area])
    assert answer.text == "The area is 28.27."
    first, second = bodies(fake)
    assert first["tools"] == [Tool.from_callable(area).responses_spec()] and first["store"] is False
    assert second["input"] == [
        {"role": "user", "content": "Area of radius 3?"},
        {"type": "function_call", "call_id": "call_abc", "name": "area", "arguments": '{"r": 3}'},
        {"type": "function_call_output", "call_id": "call_abc", "output": "28.27"},
    ]
    assert "previous_response_id" not in second and second["store"] is False


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_two_parallel_calls_interleaved_in_many_pieces(chat, fake, api) -> None:
    chat.api = api
    calls = [Call("weather", '{"city": "Paris", "unit": "F"}', id="c1"), Call("area", '{"r": 1.5}', id="c2")]
    fake.queue(ToolCalls(calls, pieces=6, interleave=True), Reply("Done."))
    answer = chat.ask("Weather and area?", tools=[area, weather])
    assert CALLS == [("weather", {"city": "Paris", "unit": "F"}), ("area", {"r": 1.5})]
    assert [(c["id"], c["name"], c["arguments"]) for c in answer.steps[0]["calls"]] == [(c.id, c.name, c.arguments) for c in calls]
    second = bodies(fake)[1]
    if api == "chat":
        assistant, *tools = second["messages"][1:]
        assert [t["function"]["arguments"] for t in assistant["tool_calls"]] == [c.arguments for c in calls]
        assert tools == [{"role": "tool", "tool_call_id": "c1", "content": '{"city":"Paris","temperature":21,"unit":"F"}'},
                         {"role": "tool", "tool_call_id": "c2", "content": "7.07"}]
    else:
        items = second["input"][1:]
        assert [i["type"] for i in items] == ["function_call", "function_call", "function_call_output", "function_call_output"]
        assert [i["call_id"] for i in items] == ["c1", "c2", "c1", "c2"] and items[3]["output"] == "7.07"


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_arguments_split_across_chunks_and_utf8_bytes(chat, fake, api) -> None:
    chat.api = api
    arguments = json.dumps({"city": "Zürich – 東京 🌧", "unit": "C"}, ensure_ascii=False)
    fake.queue(ToolCalls([Call("weather", arguments)], pieces=len(arguments), byte_size=3), Reply("Rainy."))
    answer = chat.ask("Weather?", tools=[weather])
    assert CALLS == [("weather", {"city": "Zürich – 東京 🌧", "unit": "C"})]
    assert answer.steps[0]["calls"][0]["arguments"] == arguments


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_text_alongside_a_call_then_the_answer(chat, fake, api) -> None:
    chat.api = api
    seen: list[str] = []
    fake.queue(ToolCalls([Call("area", '{"r": 2}')], text="Let me compute that."), Reply("It is 12.57."))
    answer = chat.ask("Area?", seen.append, tools=[area])
    assert "".join(seen) == "Let me compute that.It is 12.57."
    assert answer.text == "It is 12.57." and answer.steps[0]["text"] == "Let me compute that."
    second = bodies(fake)[1]
    if api == "chat":
        assert second["messages"][1]["content"] == "Let me compute that."
    else:
        assert second["input"][1] == {"role": "assistant", "content": "Let me compute that."}
    assert chat.ask("And now?").text
    third = bodies(fake)[2]
    turn = third["messages" if api == "chat" else "input"]
    assert turn[:-1] == (second["messages" if api == "chat" else "input"] + [{"role": "assistant", "content": "It is 12.57."}])


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_failures_go_back_to_the_model(chat, fake, api) -> None:
    chat.api = api
    fake.queue(ToolCalls([Call("broken", '{"x": 1}'), Call("area", '{"r": '), Call("area", '{"r": "wide"}'),
                          Call("os_system", '{"cmd": "rm -rf /"}')]), Reply("Sorry."))
    answer = chat.ask("Try everything", tools=[broken, area])
    assert CALLS == [], "no function runs unless the cell named it and the arguments fit"
    errors = [c["error"] for c in answer.steps[0]["calls"]]
    assert errors == [
        "ZeroDivisionError: integer division or modulo by zero",
        "the arguments are not valid JSON (Expecting value at column 7)",
        "the arguments do not fit the schema (r: Input should be a valid number, unable to parse string as a number)",
        "there is no tool named 'os_system'; the tools are: broken, area",
    ]
    second = bodies(fake)[1]
    if api == "chat":
        results = [m["content"] for m in second["messages"] if m["role"] == "tool"]
    else:
        results = [i["output"] for i in second["input"] if i.get("type") == "function_call_output"]
    assert results == [f"Error: {e}" for e in errors]
    assert answer.text == "Sorry." and answer.status == "complete"


def test_the_step_limit_ends_the_turn_and_keeps_a_valid_history(chat, fake) -> None:
    fake.queue(*[ToolCalls([Call("area", '{"r": 1}', id=f"c{i}")]) for i in range(3)])
    answer = chat.ask("Loop", tools=[area], max_steps=2)
    assert len(fake.posts()) == 2 and answer.status == "max_steps"
    assert len(CALLS) == 1, "the calls of the last allowed request are not run"
    assert answer.steps[1]["calls"][0]["error"] == "not run: the step limit (--max-steps 2) was reached"
    chat.ask("Next")
    messages = bodies(fake)[2]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "user"]
    assert messages[4] == {"role": "tool", "tool_call_id": "c1", "content": "Error: not run: the step limit (--max-steps 2) was reached"}


def test_an_interrupt_during_a_slow_tool_stops_the_turn(chat, fake) -> None:
    def slow(seconds: float) -> str:
        """Sleep."""
        CALLS.append(("slow", {}))
        time.sleep(seconds)
        return "rested"

    fake.queue(ToolCalls([Call("slow", '{"seconds": 10}', id="s1"), Call("area", '{"r": 1}', id="s2")]))
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(Interrupted) as stop:
        chat.ask("Rest", tools=[slow, area])
    assert time.monotonic() - started < 3
    answer = stop.value.answer
    assert answer.status == "stopped" and len(fake.posts()) == 1 and CALLS == [("slow", {})]
    assert [c["error"] for c in answer.steps[0]["calls"]] == ["not run: the answer was stopped"] * 2
    chat.ask("Again")
    tools = [m for m in bodies(fake)[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tools] == ["s1", "s2"]


def test_forced_tool_choice_in_both_shapes(chat, fake) -> None:
    fake.queue(ToolCalls([Call("area", '{"r": 1}')]), Reply("ok"))
    chat.ask("Go", tools=[area, weather], tool_choice="area")
    assert bodies(fake)[0]["tool_choice"] == {"type": "function", "function": {"name": "area"}}
    assert bodies(fake)[1]["tool_choice"] == "auto", "once the forced call is made, the model may answer"
    chat.api = "responses"
    fake.queue(Reply("ok"))
    chat.ask("Go", tools=[area], tool_choice="required", once=True)
    assert bodies(fake)[2]["tool_choice"] == "required"
    with pytest.raises(ValueError, match="--tool-choice volume: the cell offers no such tool"):
        chat.ask("Go", tools=[area], tool_choice="volume")
    with pytest.raises(ValueError, match="needs functions to choose from"):
        chat.ask("Go", tool_choice="required")
    assert len(fake.posts()) == 3


def test_non_streamed_calls(chat, fake) -> None:
    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="n1")]), Reply("28.27"))
    answer = chat.ask("Area?", tools=[area], stream=False)
    assert answer.text == "28.27" and CALLS == [("area", {"r": 3.0})]
    assert bodies(fake)[1]["messages"][2] == {"role": "tool", "tool_call_id": "n1", "content": "28.27"}


# Structured output over the wire


class Planet(BaseModel):
    name: str
    moons: int
    rings: bool | None = None


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_schema_answer_is_validated_into_the_model(chat, fake, api) -> None:
    chat.api = api
    fake.queue(Reply('{"name": "Saturn", "moons": 146, "rings": true}'))
    answer = chat.ask("Saturn?", schema=Planet)
    assert answer.json == Planet(name="Saturn", moons=146, rings=True) and answer.error is None
    body = bodies(fake)[0]
    field = body["response_format"] if api == "chat" else body["text"]["format"]
    assert field["type"] == "json_schema" and field.get("json_schema", field)["strict"] is True
    assert field.get("json_schema", field)["schema"]["required"] == ["name", "moons", "rings"]


def test_schema_mismatch_names_the_first_error_and_keeps_the_text(chat, fake) -> None:
    fake.queue(Reply('{"name": "Mars", "moons": "two", "rings": null}'))
    answer = chat.ask("Mars?", schema=Planet)
    assert answer.json is None and answer.text == '{"name": "Mars", "moons": "two", "rings": null}'
    assert answer.error.startswith("The answer does not fit the schema Planet: moons: Input should be a valid integer")


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_refusal_is_the_answer_with_status_refused(chat, fake, api) -> None:
    chat.api = api
    fake.queue(Refuse("I can't help with that."))
    answer = chat.ask("Something bad", schema=Planet)
    assert (answer.status, answer.refusal, answer.text, answer.json) == ("refused", "I can't help with that.", "I can't help with that.", None)


# The magic


@pytest.fixture
def shown_as_markdown(ip):
    ip.magics_manager.registry["NanoMagics"].display = "markdown"
    ip.user_ns.update(area=area, weather=weather, Planet=Planet)
    yield ip
    for name in ("area", "weather", "Planet"):
        ip.user_ns.pop(name, None)


def shown_text(html: str) -> str:
    """The text an HTML output shows, one line per line break or block."""
    import html as entities
    import re

    return entities.unescape(re.sub(r"<[^>]+>", "", html)).strip().replace("\n\n", "\n")


def final(cell) -> tuple[str, dict]:
    """The saved answer of a cell: its Markdown and metadata."""
    saved = [o for o in cell.outputs if "nano_magic" in (o.metadata or {})]
    assert len(saved) == 1
    return saved[0].data["text/markdown"], saved[0].metadata["nano_magic"]


def test_a_tools_cell_shows_steps_then_the_answer_and_saves_them(shown_as_markdown, run, fake) -> None:
    fake.queue(ToolCalls([Call("area", '{"r": 3}'), Call("weather", '{"city": "<b>Oslo</b> $5"}')]), Reply("Area 28.27, and mild."))
    cell = run("%%nano --tools area,weather\nArea of radius 3 and the weather?")
    assert not cell.failed, cell.shown
    markdown, saved = final(cell)
    lines = markdown.splitlines()
    assert lines[0] == "- → area(r=3) = 28.27"
    assert lines[1].startswith('- → weather(city="&lt;b&gt;Oslo&lt;/b&gt; &#36;<span></span>5") = {"city":"&lt;b&gt;Oslo&lt;/b&gt; &#36;<span></span>5"')
    assert markdown.endswith("Area 28.27, and mild.")
    assert [c["name"] for c in saved["steps"][0]["calls"]] == ["area", "weather"]
    assert saved["options"]["tools"] == ["area", "weather"]
    assert "2 requests" in cell.shown
    assert shown_as_markdown.user_ns["_nano"].steps == saved["steps"]


def test_tools_cells_refuse_bad_input_before_sending(shown_as_markdown, run, fake) -> None:
    for line, message in (("--tools nothing", "--tools: there is no function named 'nothing'."),
                          ("--tools area --tool-choice volume", "--tool-choice volume: the cell offers no such tool"),
                          ("--tool-choice required", "needs functions to choose from"),
                          ("--tools area --max-steps 0", "--max-steps 0 must be at least 1."),
                          ("--schema Nowhere", "--schema: there is no variable named 'Nowhere'."),
                          ("--schema area", "--schema area: area is not a pydantic model"),
                          ("--schema Planet --json", "--json and --schema ask for different things")):
        cell = run(f"%%nano {line}\nHello")
        assert cell.failed and message in cell.shown and "Traceback" not in cell.shown, line
    assert fake.posts() == []


def test_dry_run_shows_the_tools_json(shown_as_markdown, run, fake) -> None:
    cell = run("%%nano --tools area --tool-choice area --dry-run\nArea?")
    body = json.loads(cell.stdout[cell.stdout.index("{"):])
    assert body["tools"] == [Tool.from_callable(area).chat_spec()]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "area"}}
    assert fake.posts() == []


def test_a_schema_cell_shows_pretty_json_and_keeps_the_value(shown_as_markdown, run, fake) -> None:
    fake.queue(Reply('{"name": "Saturn", "moons": 146, "rings": true}'))
    cell = run("%%nano --schema Planet\nSaturn?")
    assert not cell.failed
    markdown, _ = final(cell)
    assert markdown == '```json\n{\n  "name": "Saturn",\n  "moons": 146,\n  "rings": true\n}\n```'
    assert shown_as_markdown.user_ns["_nano"].json == Planet(name="Saturn", moons=146, rings=True)
    assert fake.posts()[0].body["response_format"]["json_schema"]["name"] == "Planet"


def test_a_schema_mismatch_is_one_line_and_the_raw_text_stays(shown_as_markdown, run, fake) -> None:
    fake.queue(Reply('{"name": "Mars", "moons": "two", "rings": null}'))
    cell = run("%%nano --schema Planet\nMars?")
    assert cell.failed and "Traceback" not in cell.shown
    assert "The answer does not fit the schema Planet: moons: Input should be a valid integer" in cell.stdout
    markdown, saved = final(cell)
    assert "two" in markdown and saved["answer"] == '{"name": "Mars", "moons": "two", "rings": null}'


def test_a_refusal_shows_with_status_refused(shown_as_markdown, run, fake) -> None:
    fake.queue(Refuse("I can't help with that."))
    cell = run("%%nano --schema Planet\nSomething bad")
    markdown, saved = final(cell)
    assert markdown == "I can't help with that." and saved["status"] == "refused"
    assert "The model refused." in cell.shown


def test_the_step_limit_is_one_line_and_history_shows_steps(shown_as_markdown, run, fake) -> None:
    fake.queue(*[ToolCalls([Call("area", '{"r": 1}')]) for _ in range(2)])
    cell = run("%%nano --tools area --max-steps 2\nLoop")
    assert cell.failed and "Stopped after 2 requests (--max-steps 2)" in cell.stdout and "Traceback" not in cell.shown
    history = run("%nano history").shown
    assert "→ area(r=1) = 3.14" in history and "not run: the step limit (--max-steps 2) was reached" in history


# A real kernel

DEFINITIONS = '''
from pydantic import BaseModel

def area(r: float) -> float:
    """Area of a circle of radius r."""
    return round(3.14159 * r * r, 2)

class Planet(BaseModel):
    name: str
    moons: int
'''


def test_a_notebook_with_tools_and_schema_cells_saves_the_steps_and_resumes_after_a_restart(fake, tmp_path) -> None:
    import nbformat

    from tests.support.notebooks import answers, notebook, run_notebook

    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="call_k1")]), Reply("The area is 28.27."),
               Reply('{"name": "Mars", "moons": 2}'))
    first = notebook("%load_ext nano_magic", DEFINITIONS, "%%nano --tools area\nArea of radius 3?",
                     "%%nano --schema Planet\nMars?", "print(repr(_nano.json))")
    run_notebook(first, tmp_path)
    (tools_answer,), (schema_answer,) = answers(first.cells[2]), answers(first.cells[3])
    assert shown_text(tools_answer.data["text/html"]) == "→ area(r=3) = 28.27\nThe area is 28.27.", "the call, then the answer"
    assert tools_answer.metadata["nano_magic"]["steps"] == [{"text": "", "calls": [
        {"id": "call_k1", "name": "area", "arguments": '{"r": 3}', "result": "28.27", "error": None}]}]
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in first.cells[2].outputs)
    assert any("2 requests" in o.get("data", {}).get("text/plain", "") for o in first.cells[2].outputs)
    assert "<pre><code>" in schema_answer.data["text/html"] and 'color:' in schema_answer.data["text/html"], "the JSON shows as highlighted code"
    assert shown_text(schema_answer.data["text/html"]) == '{\n  "name": "Mars",\n  "moons": 2\n}', "pretty JSON in a code block"
    assert first.cells[4].outputs[0].text == "Planet(name='Mars', moons=2)\n"
    path = tmp_path / "tools.ipynb"
    nbformat.write(first, path)

    before = len(fake.posts())
    resumed = notebook("%load_ext nano_magic", f"%nano load {path}", "%%nano\nAnd radius 4?")
    run_notebook(resumed, tmp_path)
    (post,) = fake.posts()[before:]
    assert post.body["messages"][:4] == [
        {"role": "user", "content": "Area of radius 3?"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_k1", "type": "function", "function": {"name": "area", "arguments": '{"r": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_k1", "content": "28.27"},
        {"role": "assistant", "content": "The area is 28.27."},
    ]
    assert post.body["messages"][-1] == {"role": "user", "content": "And radius 4?"}


def test_a_real_kernel_shows_steps_live_and_an_interrupt_during_a_slow_tool_stops_the_cell(fake) -> None:
    from jupyter_client.manager import start_new_kernel

    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="k1"), Call("slow", "{}", id="k2")]), Reply("Next answer."))
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        kc.execute_interactive("%load_ext nano_magic\n" + DEFINITIONS + "\nimport time\ndef slow() -> str:\n    time.sleep(60)\n    return 'done'",
                               timeout=60)
        msg_id = kc.execute("%%nano --tools area,slow\nArea, then rest")
        messages = []
        live = None
        deadline = time.monotonic() + 30
        while live is None and time.monotonic() < deadline:
            msg = kc.get_iopub_msg(timeout=10)
            messages.append(msg)
            if msg["msg_type"] == "update_display_data" and "→ area(r=3) = 28.27" in msg["content"]["data"].get("text/html", ""):
                live = msg
        assert live is not None, "the step line showed in the live view while the next tool ran"
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while not (messages[-1]["msg_type"] == "status" and messages[-1]["content"]["execution_state"] == "idle"
                   and messages[-1]["parent_header"].get("msg_id") == msg_id):
            messages.append(kc.get_iopub_msg(timeout=10))
        assert reply["content"]["status"] == "error"
        finals = [m["content"] for m in messages if m["msg_type"] == "update_display_data" and "nano_magic" in m["content"]["metadata"]]
        saved = finals[-1]["metadata"]["nano_magic"]
        assert saved["status"] == "stopped"
        assert [(c["name"], c["error"]) for c in saved["steps"][0]["calls"]] == [("area", None), ("slow", "not run: the answer was stopped")]
        assert shown_text(finals[-1]["data"]["text/html"]) == "→ area(r=3) = 28.27\n→ slow() failed: not run: the answer was stopped"
        assert kc.execute_interactive("%%nano\nGo on", timeout=60)["content"]["status"] == "ok"
        tools = [m for m in fake.posts()[-1].body["messages"] if m["role"] == "tool"]
        assert tools == [{"role": "tool", "tool_call_id": "k1", "content": "28.27"},
                         {"role": "tool", "tool_call_id": "k2", "content": "Error: not run: the answer was stopped"}]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_terminal_ipython_prints_each_step_on_its_own_line(ip, run, fake) -> None:
    ip.user_ns["area"] = area
    fake.queue(ToolCalls([Call("area", '{"r": 3}')]), Reply("28.27 it is."))
    cell = run("%%nano --tools area\nArea?")
    ip.user_ns.pop("area")
    assert "\n→ area(r=3) = 28.27\n28.27 it is." in cell.stdout
    assert "2 requests" in cell.stdout


def test_steps_from_a_shared_notebook_are_reshaped_or_dropped() -> None:
    from nano_magic.conversation import Turn

    odd = Turn.from_dict({"prompt": "p", "answer": "a", "steps": [
        "junk", {"text": 3, "calls": [{"id": 1, "name": "<img src=x onerror=alert(1)>", "arguments": None, "error": 5}, "junk"]},
        {"calls": "not a list"}]})
    assert odd.steps == [{"text": "3", "calls": [
        {"id": "1", "name": "<img src=x onerror=alert(1)>", "arguments": "", "result": "", "error": "5"}]}]
    assert Turn.from_dict({"prompt": "p", "answer": "a", "steps": "junk"}).steps == []
    assert odd.messages()[1]["tool_calls"][0]["function"]["name"] == "<img src=x onerror=alert(1)>"


def test_a_failed_request_after_the_tools_ran_keeps_the_calls(chat, fake) -> None:
    from nano_magic.errors import NanoError
    from tests.support.fake_server import Status

    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="k1")]), Status(400, {"error": {"message": "bad follow-up"}}))
    with pytest.raises(NanoError) as info:
        chat.ask("Area of radius 3?", tools=[area])
    assert CALLS == [("area", {"r": 3.0})] and "bad follow-up" in str(info.value)
    kept = info.value.answer
    assert kept is not None and kept.status == "cut" and kept.steps[0]["calls"][0]["result"] == "28.27"
    [turn] = chat.conversation.threads["default"].turns
    assert turn.steps == kept.steps, "the call that ran stays in the history, so the next request carries it"
