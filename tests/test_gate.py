"""One gate for every request: the off switch, the budget, partial answers and the ledger hold on every path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat
import pytest

from nano_magic import Chat
from nano_magic.errors import OFF_MESSAGE, BadBudget, OverBudget, TurnedOff
from tests.support.fake_server import Call, Cut, Reply, Status, ToolCalls

PRICED = "gpt-4.1-nano"  # $0.10 in, $0.40 out per million tokens
LONG = " ".join(f"w{i}" for i in range(500))  # the fake server reports 500 output tokens for it
ROWS = [f"row{i}" for i in range(10)]


def magics(ip):
    return ip.magics_manager.registry["NanoMagics"]


def lines(cell) -> list[str]:
    return [s for s in cell.shown.splitlines() if s.strip()]


def dollars(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * 0.10 + output_tokens * 0.40) / 1e6


# What one "Say rowN" item costs: the fake server counts 2 input words and 500 output words.
SPENT_EACH = dollars(2, 500)
# Its worst case: about a dozen input tokens (tiktoken's count of the request) and --max-tokens 600.
HELD_EACH = dollars(12, 600)
# Room for three items one after another (2 spent + 1 held), not for a fourth (3 spent + 1 held),
# and, held at once, for three in flight (3 held) but not four.
THREE = 2.5 * SPENT_EACH + HELD_EACH


def ip_chat(ip) -> Chat:
    return magics(ip).chat


# The off switch


@pytest.mark.parametrize("source", [
    "%%nano --tools area\nArea?",
    "%%nano --map rows --out out\nSay {item}",
    "%%nano --map rows --dry-run\nSay {item}",
])
def test_turned_off_the_tool_loop_and_map_cells_say_so_in_one_line(run, fake, ip, monkeypatch, source) -> None:
    ip.user_ns["area"] = lambda r: r
    ip.user_ns["rows"] = ROWS
    monkeypatch.setenv("NANO_MAGIC_DISABLED", "1")
    assert lines(run(source)) == [OFF_MESSAGE]
    assert fake.requests == []


def test_turned_off_chat_map_and_amap_send_nothing(fake, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NANO_MAGIC_DISABLED", "1")
    chat = Chat(PRICED, base_url=fake.base_url)
    with pytest.raises(TurnedOff, match=OFF_MESSAGE):
        chat.map(["a", "b"], "Q {item}", cache=tmp_path / "c.sqlite3", progress=False)
    with pytest.raises(TurnedOff, match=OFF_MESSAGE):
        asyncio.run(chat.amap(["a", "b"], "Q {item}", cache=False, progress=False))
    with pytest.raises(TurnedOff, match=OFF_MESSAGE):
        chat.models()
    assert fake.requests == []


# A cap below one request's estimate


@pytest.mark.parametrize("source", [
    f"%%nano -m {PRICED} --tools area\nArea?",
    f"%%nano -m {PRICED} --map rows --out out\nSay {{item}}",
    "%nano explain",
])
def test_a_cap_below_one_estimate_sends_nothing_on_any_cell_path(run, fake, ip, source, monkeypatch) -> None:
    ip.user_ns["area"] = lambda r: r
    ip.user_ns["rows"] = ROWS
    run("1 / 0")
    magics(ip).model = PRICED
    magics(ip).budget = 0.000001
    cell = run(source)
    assert cell.failed and fake.requests == []
    (line,) = [line for line in lines(cell) if "Budget" in line]
    assert "NanoMagics.budget" in line, line


def test_a_cap_below_one_estimate_sends_nothing_from_the_python_api(fake, tmp_path) -> None:
    chat = Chat(PRICED, base_url=fake.base_url)
    chat.budget = 0.000001
    with pytest.raises(OverBudget):
        chat.ask("Hi")
    result = chat.map(ROWS, "Say {item}", cache=False, progress=False)
    assert result.status.tolist() == ["budget"] * 10 and "10 items were not sent" in result.summary()
    again = asyncio.run(chat.amap(ROWS, "Say {item}", cache=False, progress=False))
    assert again.status.tolist() == ["budget"] * 10
    assert fake.requests == []


# A cap that allows some items


def test_a_map_cell_sends_only_what_the_cap_allows_and_a_rerun_sends_the_rest(run, fake, ip) -> None:
    ip.user_ns["rows"] = ROWS
    fake.reply = LONG
    magics(ip).budget = THREE
    cell = run(f"%%nano -m {PRICED} --map rows --out out --max-tokens 600 --concurrency 1\nSay {{item}}")
    assert cell.failed and len(fake.posts()) == 3, "the server saw exactly the three held items"
    result = ip.user_ns["_nano"]
    assert result.status.tolist() == ["answered"] * 3 + ["budget"] * 7
    assert ip.user_ns["out"].notna().tolist() == [True] * 3 + [False] * 7
    failure = [line for line in lines(cell) if line.startswith("Budget:")]
    assert len(failure) == 1 and "7 items were not sent" in failure[0] and "NanoMagics.budget" in failure[0]
    usage = run("%nano usage").shown.replace("\\\\$", "$").replace("\\", "")
    assert "--map" in usage and f"${3 * SPENT_EACH:.6f}" in usage, usage
    single = run(f"%%nano -m {PRICED} --max-tokens 600\nOne more?")
    assert single.failed and "Budget: this request could cost" in single.shown and len(fake.posts()) == 3, "the map's spend counts"

    magics(ip).budget = 1.0
    again = run(f"%%nano -m {PRICED} --map rows --out out --max-tokens 600 --concurrency 1\nSay {{item}}")
    assert not again.failed and len(fake.posts()) == 10, "the rerun sent only the seven unsent items"
    assert ip.user_ns["_nano"].status.tolist() == ["cached"] * 3 + ["answered"] * 7
    assert ip.user_ns["out"].notna().all()


def test_items_in_flight_are_held_at_once_and_finish(fake, tmp_path) -> None:
    fake.reply, fake.chunk_delay = LONG, 0.001
    chat = Chat(PRICED, base_url=fake.base_url)
    chat.budget = THREE
    result = chat.map(ROWS, "Say {item}", concurrency=4, cache=False, progress=False, max_tokens=600)
    assert len(fake.posts()) == 3 and result.status.value_counts().to_dict() == {"budget": 7, "answered": 3}
    assert [e.label for e in chat.ledger] == ["--map"] * 3 and chat.ledger.reserved == pytest.approx(0)


def test_chat_map_and_amap_stop_at_the_cap_and_share_the_ledger(fake, tmp_path) -> None:
    fake.reply = LONG
    chat = Chat(PRICED, base_url=fake.base_url)
    chat.budget = THREE
    first = chat.map(ROWS, "Say {item}", concurrency=1, cache=tmp_path / "c.sqlite3", progress=False, max_tokens=600)
    assert len(fake.posts()) == 3 and first.status.tolist().count("budget") == 7
    chat.budget = THREE + 3 * SPENT_EACH
    second = asyncio.run(chat.amap(ROWS, "Say {item}", concurrency=1, cache=tmp_path / "c.sqlite3", progress=False, max_tokens=600))
    assert len(fake.posts()) == 6, "three more fit under the raised cap, counting the first run's spend"
    assert second.status.tolist() == ["cached"] * 3 + ["answered"] * 3 + ["budget"] * 4
    assert chat.ledger.spent.requests == 6 and chat.ledger.spent.dollars == pytest.approx(6 * SPENT_EACH)


# Partial answers are charged


def test_a_cut_answer_is_charged_as_estimated_and_a_refused_request_costs_nothing(run, fake, ip) -> None:
    fake.queue(Status(500, {"error": {"message": "down"}}))
    assert run(f"%%nano -m {PRICED}\nHello").failed
    assert len(ip_chat(ip).ledger) == 0, "failed before any byte: nothing charged"
    fake.queue(Cut("one two three four"))
    assert run(f"%%nano -m {PRICED}\nHello").failed
    (entry,) = ip_chat(ip).ledger
    assert entry.estimated and entry.usage.output_tokens >= 4 and entry.usage.input_tokens > 0
    usage = run("%nano usage").shown
    assert "estimated" in usage


def test_a_capped_answer_is_charged_as_estimated(run, fake, ip) -> None:
    magics(ip).budget = 0.00002
    fake.reply, fake.chunk_delay = LONG, 0.002
    cell = run(f"%%nano -m {PRICED} --max-tokens 20\nCount")
    assert cell.failed and "budget was reached mid-answer" in cell.shown
    (entry,) = ip_chat(ip).ledger
    assert entry.estimated and entry.label == "default"
    assert ip_chat(ip).ledger.spent.dollars >= 0.00002, "the partial answer counts against the cap"


def test_a_stopped_tool_loop_and_a_cut_map_item_are_charged(fake, tmp_path) -> None:
    chat = Chat(PRICED, base_url=fake.base_url, max_retries=0)
    fake.queue(ToolCalls([Call("area", '{"r": 3}')]), Cut("partial"))
    with pytest.raises(Exception, match="cut"):
        chat.ask("Area?", tools=[lambda r: r * r])
    assert [e.estimated for e in chat.ledger] == [False, True], "the tool step's usage, then the cut answer's estimate"

    fake.queue(Cut("half an answer here"))
    result = chat.map(["a"], "Say {item}", cache=False, progress=False)
    assert result.status.tolist() == ["failed"] and chat.ledger.entries[-1].estimated and chat.ledger.entries[-1].label == "--map"


# The budget fails closed


@pytest.mark.parametrize("value", ["0,50", "50c", "0.5 USD", "nan", "-1", "inf"])
def test_a_bad_nano_budget_refuses_every_path_in_one_line(run, fake, ip, monkeypatch, value) -> None:
    monkeypatch.setenv("NANO_BUDGET", value)
    ip.user_ns["rows"] = ["a", "b"]
    ip.user_ns["area"] = lambda r: r
    run("1 / 0")
    for source in ["%%nano\nHi", "%%nano --tools area\nArea?", "%%nano --map rows --out out\nSay {item}", "%nano explain"]:
        cell = run(source)
        assert cell.failed and lines(cell) == [lines(cell)[0]], (source, cell.shown)
        assert f"NANO_BUDGET = {value!r} is not a number of dollars" in lines(cell)[0], cell.shown
    chat = Chat(base_url=fake.base_url)
    with pytest.raises(BadBudget):
        chat.ask("Hi")
    with pytest.raises(BadBudget):
        chat.map(["a"], "{item}", cache=False, progress=False)
    assert fake.requests == []
    monkeypatch.setenv("NANO_BUDGET", "0.5")
    assert not run("%%nano\nHi").failed, "fixed, it sends again"


@pytest.mark.parametrize("value", ["50c", float("nan"), -1, float("inf")])
def test_a_bad_budget_on_a_chat_is_refused(fake, value) -> None:
    chat = Chat(base_url=fake.base_url)
    chat.budget = value
    with pytest.raises(BadBudget, match="is not a number of dollars"):
        chat.ask("Hi")
    assert fake.requests == []


def test_a_bad_budget_setting_is_refused_in_one_line(run, ip) -> None:
    cell = run("%nano config budget=50c")
    assert cell.failed and len(lines(cell)) == 1 and "50c" in lines(cell)[0]
    assert magics(ip).budget is None


# Replay


TOOLS = '''
RAN = []
def area(r: float) -> float:
    """Area of a circle of radius r."""
    RAN.append(r)
    return round(3.14159 * r * r, 2)
def volume(r: float) -> float:
    """Volume of a ball of radius r."""
    return r
'''


def saved_lesson(run, fake, ip, tmp_path: Path) -> Path:
    """An export whose --tools cell was answered live."""
    run(TOOLS)
    fake.queue(ToolCalls([Call("area", '{"r": 3}', id="c1")]), Reply("The area is 28.27."))
    cell = run("%%nano --tools area\nArea of radius 3?")
    assert not cell.failed and ip.user_ns["RAN"] == [3]
    path = tmp_path / "saved.json"
    run(f"%nano export {path}")
    return path


def test_a_tools_cell_replays_its_steps_and_runs_no_tool(run, fake, ip, tmp_path) -> None:
    path = saved_lesson(run, fake, ip, tmp_path)
    run("%nano reset --all")
    run(f"%nano replay {path} --offline --speed 0")
    before = len(fake.posts())
    cell = run("%%nano --tools area\nArea of radius 3?")
    assert not cell.failed and len(fake.posts()) == before and ip.user_ns["RAN"] == [3], "no request, no tool run"
    assert "→ area(r=3) = 28.27" in cell.shown and "The area is 28.27." in cell.shown
    assert ip.user_ns["_nano"].steps[0]["calls"][0]["result"] == "28.27"
    assert "→ area(r=3) = 28.27" in run("%nano history").shown, "the steps entered the history"

    for other in ["%%nano --tools area,volume\nArea of radius 3?", "%%nano\nArea of radius 3?"]:
        refused = run(other)
        assert refused.failed and "no saved answer matches" in refused.shown, other
    assert len(fake.posts()) == before


def test_an_edited_tool_does_not_match(run, fake, ip, tmp_path) -> None:
    path = saved_lesson(run, fake, ip, tmp_path)
    run("%nano reset --all")
    run('def area(r: int) -> float:\n    """Area of a circle of radius r, in whole units."""\n    return 0.0')
    run(f"%nano replay {path} --offline --speed 0")
    cell = run("%%nano --tools area\nArea of radius 3?")
    assert cell.failed and "no saved answer matches" in cell.shown


def test_offline_map_answers_only_from_the_cache(run, fake, ip, tmp_path) -> None:
    ip.user_ns["rows"] = ["a", "b", "c", "d"]
    run("%%nano --map rows --out out\nSay {item}")
    assert len(fake.posts()) == 4
    empty = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), empty)
    run(f"%nano replay {empty} --offline")
    assert not run("%%nano --map rows --out out\nSay {item}").failed and len(fake.posts()) == 4, "all cached: answered"
    ip.user_ns["rows"] = ["a", "b", "c", "d", "e", "f"]
    cell = run("%%nano --map rows --out out\nSay {item}")
    assert cell.failed and lines(cell) == ["Replay is offline and 2 of 6 items have no cached answer; nothing was sent. "
                                           "`%nano replay` without --offline lets them go live."]
    assert len(fake.posts()) == 4
    run(f"%nano replay {empty}")
    assert not run("%%nano --map rows --out out\nSay {item}").failed and len(fake.posts()) == 6, "replay on: the missing go live"


def test_usage_shows_every_path_in_one_ledger(run, fake, ip) -> None:
    ip.user_ns["area"] = lambda r: r
    ip.user_ns["rows"] = ["a", "b", "c"]
    fake.queue(ToolCalls([Call("area", '{"r": 3}')]), Reply("Done."))
    assert not run("%%nano --tools area\nArea?").failed
    run("1 / 0")
    assert not run("%nano explain").failed
    assert not run("%%nano --map rows --out out\nSay {item}").failed
    shown = run("%nano usage").shown
    rows = {line.split("|")[1].strip(): line for line in shown.splitlines() if line.startswith("|")}
    assert rows["default"].split("|")[3].strip() == "2", "both requests of the tool loop"
    assert rows["(one-shot)"].split("|")[3].strip() == "1", "the explanation"
    assert rows["--map"].split("|")[3].strip() == "3", "each --map item"
    assert rows["total"].split("|")[3].strip() == "6"
