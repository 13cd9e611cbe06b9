"""`%%nano --map` and `Chat.map`: templates, bad input, estimates, the cache, rate limits and results."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Literal

import pandas as pd
import pytest
from pydantic import BaseModel

from nano_magic import Chat
from nano_magic.limiter import parse_duration
from nano_magic.schema import OutputSchema
from nano_magic.template import BadInput, Template, items_of
from tests.support.fake_server import Refuse, Reply, Status
from tests.support.rate_limited import RateLimitedServer


class Review(BaseModel):
    """A review's label, as a model would fill it in."""

    label: Literal["positive", "negative"]
    stars: int
    score: float
    spam: bool


def prompt_of(body: dict) -> str:
    return (body.get("messages") or body.get("input"))[-1]["content"]


def user_prompts(server) -> list[str]:
    return [prompt_of(p.body) for p in server.posts()]


def by_prompt(answers: dict) -> Callable[..., Any]:
    """A fake-server script answering each prompt with its own text or behaviour, whatever order the rows go in."""
    def script(body: dict):
        answer = answers[prompt_of(body)]
        return Reply(answer) if isinstance(answer, str) else answer
    return script


REVIEWS = pd.DataFrame({"text": ["loved it", "broken on arrival", "fine", "ad for pills"]}, index=["a", "b", "c", "d"])
GOOD = {
    "Rate: loved it": '{"label": "positive", "stars": 5, "score": 4, "spam": false}',
    "Rate: broken on arrival": '{"label": "negative", "stars": 1, "score": 0.5, "spam": false}',
    "Rate: fine": '{"label": "positive", "stars": 3, "score": 3.25, "spam": false}',
    "Rate: ad for pills": '{"label": "negative", "stars": 1, "score": 0, "spam": true}',
}


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
    ("rows = ['a', 'b']", "--map rows --schema Nope", "{item}", "--schema: there is no variable named 'Nope'."),
    ("rows = ['a', 'b']; Shape = {'type': 'object', 'properties': {'x': {'type': 'integer'}}}", "--map rows --schema Shape --json",
     "{item}", "--json and --schema ask for different things"),
    ("rows = ['a', 'b']; area = len", "--map rows --tools area", "{item}", "--tools does not work with --map"),
    ("rows = ['a', 'b']; note = 'n'", "--map rows --context note", "{item}", "--context does not work with --map"),
    ("rows = ['a', 'b']", "--map rows --thread lab", "{item}", "--thread does not work with --map: each item is one one-shot request"),
    ("rows = ['a', 'b']", "--map rows --format code", "{item}", "--format does not work with --map"),
    ("rows = ['a', 'b']", "--map rows --tool-choice none", "{item}", "--tool-choice does not work with --map"),
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


def test_a_schema_gives_typed_columns_on_the_input_index(run, fake, ip) -> None:
    ip.user_ns.update(reviews=REVIEWS, Review=Review)
    fake.script = by_prompt(GOOD)
    cell = run("%%nano --map reviews --schema Review --out labels -t 0\nRate: {text}")
    assert not cell.failed, cell.shown
    wanted = OutputSchema.from_object(Review, "Review").chat_format()
    assert [p.body["response_format"] for p in fake.posts()] == [wanted] * 4 and wanted["json_schema"]["strict"] is True
    labels = ip.user_ns["labels"]
    assert list(labels.columns) == ["label", "stars", "score", "spam"] and list(labels.index) == ["a", "b", "c", "d"]
    assert labels.dtypes.astype(str).tolist() == ["string", "Int64", "Float64", "boolean"], "score stays a float though 4 and 0 are whole"
    assert labels.loc["a"].tolist() == ["positive", 5, 4.0, False] and labels.loc["d"].tolist() == ["negative", 1, 0.0, True]
    assert labels["stars"].sum() == 10 and labels["spam"].sum() == 1
    answers = ip.user_ns["_nano"].answers
    assert all(isinstance(a, Review) for a in answers) and answers["c"].score == 3.25
    assert "4 of 4 items answered" in cell.stdout


def test_a_row_with_invalid_json_or_the_wrong_shape_fails_alone(run, fake, ip) -> None:
    ip.user_ns.update(reviews=REVIEWS, Review=Review)
    fake.script = by_prompt({**GOOD, "Rate: broken on arrival": '{"label": "negative", "stars": 1',
                             "Rate: fine": '{"label": "meh", "stars": 3, "score": 3, "spam": false}'})
    cell = run("%%nano --map reviews --schema Review --out labels\nRate: {text}")
    assert not cell.failed, cell.shown
    assert "2 of 4 items answered · 2 failed" in cell.stdout
    failed = ip.user_ns["_nano"].failed
    assert list(failed.index) == ["b", "c"]
    assert failed["b"].startswith("The answer does not fit the schema Review: the answer is not valid JSON (")
    assert failed["c"].startswith("The answer does not fit the schema Review: label: ") and "'positive' or 'negative'" in failed["c"]
    assert all("\n" not in error for error in failed)
    labels = ip.user_ns["labels"]
    assert labels.loc[["b", "c"]].isna().all(axis=None) and labels.loc[["a", "d"]].notna().all(axis=None)
    assert labels.dtypes.astype(str).tolist() == ["string", "Int64", "Float64", "boolean"]
    fake.script = by_prompt(GOOD)
    again = run("%%nano --map reviews --schema Review --out labels\nRate: {text}")
    assert sorted(user_prompts(fake)[4:]) == ["Rate: broken on arrival", "Rate: fine"], "only the failed rows went again"
    assert "4 of 4 items answered (2 from the cache)" in again.stdout and ip.user_ns["labels"]["stars"].tolist() == [5, 1, 3, 1]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_refused_row_fails_saying_so(run, fake, ip, api: str) -> None:
    ip.user_ns.update(reviews=REVIEWS, Review=Review)
    fake.script = by_prompt({**GOOD, "Rate: ad for pills": Refuse("I can't help with that request.")})
    cell = run(f"%%nano --map reviews --schema Review --out labels --api {api}\nRate: {{text}}")
    assert not cell.failed, cell.shown
    failed = ip.user_ns["_nano"].failed
    assert failed.to_dict() == {"d": "The model refused: I can't help with that request."}
    assert "d: The model refused" in cell.stdout and "JSON" not in cell.stdout
    assert ip.user_ns["labels"].loc["d"].isna().all() and ip.user_ns["labels"]["stars"].count() == 3


def test_the_responses_api_carries_the_schema_in_text_format(run, fake, ip) -> None:
    ip.user_ns.update(reviews=REVIEWS, Review=Review)
    fake.script = by_prompt(GOOD)
    cell = run("%%nano --map reviews --schema Review --out labels --api responses\nRate: {text}")
    assert not cell.failed, cell.shown
    wanted = OutputSchema.from_object(Review, "Review").responses_format()
    assert all(p.path.endswith("/responses") and p.body["text"] == {"format": wanted} for p in fake.posts())
    assert ip.user_ns["labels"]["label"].tolist() == ["positive", "negative", "positive", "negative"]


def test_dry_run_shows_the_schema_and_counts_its_tokens(run, fake, ip) -> None:
    ip.user_ns.update(reviews=REVIEWS, Review=Review)

    def input_tokens(stdout: str) -> int:
        return int(re.search(r"about ([\d,]+) input tokens", stdout).group(1).replace(",", ""))

    plain = run("%%nano --map reviews --dry-run -m gpt-4.1-nano\nRate: {text}")
    shaped = run("%%nano --map reviews --schema Review --dry-run -m gpt-4.1-nano\nRate: {text}")
    assert shaped.stdout.count('"response_format"') == 2 and shaped.stdout.count('"strict": true') == 2
    assert '"spam"' in shaped.stdout and "response_format" not in plain.stdout
    assert input_tokens(shaped.stdout) > input_tokens(plain.stdout) + 4 * 20, "each request counts its schema"
    assert fake.posts() == []


def test_the_cache_key_includes_the_schema(run, fake, ip) -> None:
    ip.user_ns.update(reviews=REVIEWS, Review=Review)
    fake.script = by_prompt(GOOD)
    run("%%nano --map reviews --out text\nRate: {text}")
    first = run("%%nano --map reviews --schema Review --out labels\nRate: {text}")
    assert len(fake.posts()) == 8 and "from the cache" not in first.stdout
    table = ip.user_ns["labels"]
    again = run("%%nano --map reviews --schema Review --out labels\nRate: {text}")
    assert len(fake.posts()) == 8 and "4 of 4 items answered (4 from the cache)" in again.stdout
    pd.testing.assert_frame_equal(ip.user_ns["labels"], table)
    assert isinstance(ip.user_ns["_nano"].answers["a"], Review)


def test_chat_map_takes_a_schema(fake, tmp_path) -> None:
    fake.script = by_prompt(GOOD)
    chat = Chat(base_url=fake.base_url)
    result = chat.map(REVIEWS, "Rate: {text}", schema=Review, cache=tmp_path / "c.sqlite3", progress=False, temperature=0)
    assert result.table["score"].tolist() == [4.0, 0.5, 3.25, 0.0] and str(result.table["score"].dtype) == "Float64"
    assert result.answers["b"] == Review(label="negative", stars=1, score=0.5, spam=False)
    assert all(p.body["response_format"]["json_schema"]["name"] == "Review" for p in fake.posts())
    shape = {"type": "object", "properties": {"label": {"type": "string"}, "stars": {"type": "integer"}}, "required": ["label"]}

    async def main():
        return await chat.amap(REVIEWS, "Rate: {text}", schema=shape, cache=False, progress=False)

    loose = asyncio.run(main())
    assert list(loose.table.columns) == ["label", "stars"] and loose.table.dtypes.astype(str).tolist() == ["string", "Int64"]
    assert loose.answers["a"] == {"label": "positive", "stars": 5, "score": 4, "spam": False}
    with pytest.raises(ValueError, match="--json and --schema"):
        chat.map(REVIEWS, "Rate: {text}", schema=Review, json=True, cache=False)
    with pytest.raises(ValueError, match="is not a pydantic model"):
        chat.map(REVIEWS, "Rate: {text}", schema=42, cache=False)
    assert len(fake.posts()) == 8
