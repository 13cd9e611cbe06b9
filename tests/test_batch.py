"""`%%nano --map` and `Chat.map`: templates, bad input, estimates, the cache, rate limits and results."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from nano_magic import Chat
from nano_magic.limiter import parse_duration
from nano_magic.template import BadInput, Template, items_of
from tests.support.fake_server import Status
from tests.support.rate_limited import RateLimitedServer


def user_prompts(server) -> list[str]:
    return [p.body["messages"][-1]["content"] for p in server.posts()]


def test_placeholders_literal_braces_and_json_stay_as_written() -> None:
    template = Template('Row {name}: {{name}} as JSON {"label": "x"} or {} or {a b}', ("name",))
    assert template.render(("Ada",)) == 'Row Ada: {name} as JSON {"label": "x"} or {} or {a b}'
    assert Template("{review text}!", ("review text",)).render(("fine",)) == "fine!"
    with pytest.raises(BadInput, match=r"uses \{txt\}, which the data does not have; available: \{text\}, \{stars\}"):
        Template("Classify {txt}", ("text", "stars"))


def test_each_kind_of_collection_names_its_values() -> None:
    frame = items_of(pd.DataFrame({"text": ["a", "b"], "stars": [1, None]}, index=["x", "y"]))
    assert frame.names == ("text", "stars") and list(frame.index) == ["x", "y"]
    assert Template("{text}/{stars}", frame.names).render(list(frame.rows())[1]) == "b/"
    series = items_of(pd.Series(["s"], name="review"))
    assert series.names == ("item", "review") and Template("{item}={review}", series.names).render(next(series.rows())) == "s=s"
    mapping = items_of({"k1": "v1"})
    assert (mapping.names, list(mapping.index), next(mapping.rows())) == (("key", "value"), ["k1"], ("k1", "v1"))


@pytest.mark.parametrize("duration, seconds", [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("soon", None)])
def test_rate_limit_resets_read_as_durations(duration: str, seconds: float | None) -> None:
    assert parse_duration(duration) == seconds


def test_a_dataframe_maps_to_a_series_on_its_index(run, fake, ip) -> None:
    ip.user_ns["reviews"] = pd.DataFrame({"text": ["great", "awful", "fine"]}, index=[10, 20, 30])
    cell = run("%%nano --map reviews --out labels -t 0\nSentiment of: {text}")
    assert not cell.failed, cell.shown
    assert sorted(user_prompts(fake)) == ["Sentiment of: awful", "Sentiment of: fine", "Sentiment of: great"]
    assert all(p.body["temperature"] == 0 and len(p.body["messages"]) == 1 for p in fake.posts())
    labels = ip.user_ns["labels"]
    assert list(labels.index) == [10, 20, 30] and list(labels) == [fake.reply] * 3
    result = ip.user_ns["_nano"]
    assert (len(result.answers), len(result.failed), result.cached) == (3, 0, 0)
    assert result.usage.output_tokens == 15 and result.elapsed > 0
    assert "3 of 3 items answered" in cell.stdout


def test_without_out_the_first_rows_show_as_a_table(run, fake, ip) -> None:
    ip.user_ns["items"] = [f"q{i}" for i in range(25)]
    cell = run("%%nano --map items\nAnswer {item}")
    tables = [o.data["text/plain"] for o in cell.outputs if "answer" in o.data.get("text/plain", "")]
    assert len(tables) == 1, cell.outputs
    lines = tables[0].splitlines()
    assert lines[0].split() == ["answer"] and len(lines) == 11 and lines[-1].split()[0] == "9", "a header and the first 10 rows"


@pytest.mark.parametrize("setup, line, body, message", [
    ("rows = []", "--map rows", "{item}", "--map rows is empty: there is nothing to send."),
    ("rows = ['a', 'b']", "--map rows", "Same question", "every request would be the same; use one of {item}"),
    ("rows = ['a', 'b']", "--map rows --concurrency 0", "{item}", "--concurrency 0 must be at least 1."),
    ("", "--map nowhere", "{item}", "--map: there is no variable named 'nowhere'."),
    ("rows = {1, 2}", "--map rows", "{item}", "--map rows: a set cannot be mapped"),
    ("rows = ['a']", "--map rows", "{text}", "uses {text}, which the data does not have; available: {item}."),
])
def test_bad_input_gets_one_line_and_no_request(run, fake, setup: str, line: str, body: str, message: str) -> None:
    run(setup)
    cell = run(f"%%nano {line}\n{body}")
    assert cell.failed and message in cell.shown
    assert "Traceback" not in cell.shown
    assert fake.posts() == []


def test_one_item_needs_no_placeholder(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["only"]
    assert not run("%%nano --map rows --out out\nSay hi").failed
    assert user_prompts(fake) == ["Say hi"]


def test_dry_run_shows_two_requests_and_the_estimate_and_sends_nothing(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["alpha", "beta", "gamma"]
    cell = run("%%nano --map rows --dry-run -m gpt-4.1-nano --max-tokens 10\nEcho {item}")
    assert cell.stdout.count("POST ") == 2 and '"content": "Echo alpha"' in cell.stdout and "Echo gamma" not in cell.stdout
    assert "3 requests to send: about" in cell.stdout and "up to 30 output tokens" in cell.stdout and "≈ $" in cell.stdout
    assert fake.posts() == []


def test_a_costly_run_asks_for_yes(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["a", "b"]
    ip.magics_manager.registry["NanoMagics"].confirm_above = 0.001
    cell = run("%%nano --map rows -m gpt-4.1-nano --max-tokens 10000\nSay {item}")
    assert cell.failed and "more than NanoMagics.confirm_above ($0.00): add --yes to send it" in cell.shown
    assert fake.posts() == []
    assert not run("%%nano --map rows -m gpt-4.1-nano --max-tokens 10000 --yes --out x\nSay {item}").failed
    assert len(fake.posts()) == 2


def test_a_rerun_sends_only_what_has_no_answer_yet(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["a", "b", "c", "d"]
    fake.queue(Status(400, {"error": {"message": "bad row"}}))
    first = run("%%nano --map rows --out out --concurrency 1\nSay {item}")
    assert "3 of 4 items answered · 1 failed" in first.stdout and "0: " in first.stdout and "bad row" in first.stdout
    assert pd.isna(ip.user_ns["out"][0]) and list(ip.user_ns["_nano"].failed.index) == [0]
    second = run("%%nano --map rows --out out\nSay {item}")
    assert user_prompts(fake)[4:] == ["Say a"], "only the failed row went again"
    assert "4 of 4 items answered (3 from the cache)" in second.stdout
    assert ip.user_ns["out"].tolist() == [fake.reply] * 4
    run("%%nano --map rows --out out --no-cache\nSay {item}")
    assert len(fake.posts()) == 9


def test_the_cache_holds_no_secret(run, fake, ip, monkeypatch) -> None:
    secret = "sk-batch-cache-secret-0123456789"
    monkeypatch.setenv("NANO_API_KEY", secret)
    ip.user_ns["rows"] = ["a", "b"]
    run("%%nano --map rows --out out\nSay {item}")
    path = Path(ip.magics_manager.registry["NanoMagics"].cache_path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM answers").fetchone() == (2,)
    stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert secret.encode() not in stored and secret[-8:].encode() not in stored


def test_json_answers_are_parsed_per_row(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["a", "b"]
    fake.reply = '{"label": "ok"}'
    assert not run("%%nano --map rows --json --out out\nLabel {item} as JSON").failed
    assert ip.user_ns["out"].tolist() == [{"label": "ok"}, {"label": "ok"}]


def test_500_rows_against_a_rate_limit_are_each_answered_once_in_order(run, ip) -> None:
    rows = pd.DataFrame({"text": [f"review number {i}" for i in range(500)]}, index=pd.RangeIndex(1000, 1500))
    ip.user_ns["rows"] = rows
    ip.magics_manager.registry["NanoMagics"].max_retries = 6
    with RateLimitedServer(rate=100, seed=3) as server:
        ip.magics_manager.registry["NanoMagics"].base_url = server.base_url
        cell = run("%%nano --map rows --out labels -m gpt-4.1-nano\nClassify: {text}")
    assert not cell.failed, cell.shown
    assert server.errors > 0 and server.cuts > 0, "the server failed some requests on purpose"
    assert server.twice() == [] and len(server.completed) == 500
    labels = ip.user_ns["labels"]
    assert labels.index.equals(rows.index)
    assert labels.tolist() == [f"Answer to: Classify: review number {i}" for i in range(500)]
    assert server.throttled <= 0.05 * server.requests, (server.throttled, server.requests)


def test_the_python_api_maps_in_threads_and_on_a_running_loop(fake, tmp_path) -> None:
    chat = Chat(base_url=fake.base_url)
    result = chat.map({"x": "one", "y": "two"}, "{key} is {value}", cache=tmp_path / "c.sqlite3", progress=False, temperature=0.5)
    assert list(result.answers.index) == ["x", "y"] and sorted(user_prompts(fake)) == ["x is one", "y is two"]

    async def main():
        return await chat.amap(pd.Series(["p", "q"], name="word"), "{word}!", concurrency=2, cache=tmp_path / "c.sqlite3", progress=False)

    again = asyncio.run(main())
    assert again.answers.tolist() == [fake.reply, fake.reply] and len(fake.posts()) == 4
    with pytest.raises(ValueError, match="must be at least 1"):
        chat.map(["a", "b"], "{item}", concurrency=0, cache=False)
    assert len(fake.posts()) == 4
    assert json.loads(json.dumps(result.usage.to_dict()))["output_tokens"] == 10
