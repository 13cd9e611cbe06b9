"""One row fails alone, and rows are what they say (issue 20): each case against the loopback server, its log asserted."""

from __future__ import annotations

import datetime
import decimal
import enum
import signal
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, field_validator

from nano_magic import Chat
from nano_magic.limiter import Limiter, TooLarge
from nano_magic.progress import Tally
from nano_magic.template import BadInput, Template
from tests.support.fake_server import Reply
from tests.support.notebooks import notebook, run_notebook
from tests.support.rate_limited import RateLimitedServer
from tests.test_batch import by_prompt, user_prompts


class Verdict(BaseModel):
    """A label whose validator, like much user code, can raise what pydantic does not wrap."""

    label: str

    @field_validator("label")
    @classmethod
    def known(cls, value: str) -> str:
        if value == "odd":
            return value.nope  # type: ignore[attr-defined]  # AttributeError: pydantic wraps only ValueError and AssertionError
        return value


def answered_once(server) -> None:
    counts = Counter(user_prompts(server))
    assert all(n == 1 for n in counts.values()), counts


def test_a_validator_raising_attribute_error_fails_its_row_alone(run, fake, ip) -> None:
    rows = pd.DataFrame({"text": ["one", "two", "three"]}, index=[10, 11, 12])
    ip.user_ns.update(rows=rows, Verdict=Verdict)
    fake.script = by_prompt({"Label: one": '{"label": "good"}', "Label: two": '{"label": "odd"}', "Label: three": '{"label": "bad"}'})
    cell = run("%%nano --map rows --schema Verdict --out labels\nLabel: {text}")
    assert not cell.failed and "unexpectedly" not in cell.shown, cell.shown
    answered_once(fake)
    assert sorted(user_prompts(fake)) == ["Label: one", "Label: three", "Label: two"]
    result, labels = ip.user_ns["_nano"], ip.user_ns["labels"]
    assert labels.index.tolist() == [10, 11, 12] and labels["label"].tolist()[::2] == ["good", "bad"]
    assert result.failed.to_dict() == {11: "The answer does not fit the schema Verdict: its validator raised AttributeError: "
                                           "'str' object has no attribute 'nope'."}
    assert "2 of 3 items answered · 1 failed" in cell.stdout


def test_a_single_cell_whose_validator_raises_keeps_the_answer_and_says_why_in_one_line(run, fake, ip) -> None:
    ip.user_ns["Verdict"] = Verdict
    fake.reply = '{"label": "odd"}'
    cell = run("%%nano --schema Verdict\nLabel this")
    assert cell.failed and "Traceback" not in cell.shown and "unexpectedly" not in cell.shown
    assert "does not fit the schema Verdict: its validator raised AttributeError" in cell.shown
    assert ip.user_ns["_nano"].text == '{"label": "odd"}' and ip.user_ns["_nano"].json is None


@pytest.mark.parametrize("finish, reason", [("content_filter", "The provider's content filter stopped the answer."),
                                            ("length", "The answer hit the token limit and is cut short (raise --max-tokens).")])
def test_a_filtered_or_cut_answer_is_a_failed_row_and_is_not_cached(run, fake, ip, finish: str, reason: str) -> None:
    ip.user_ns["words"] = ["calm", "rude"]
    fake.script = by_prompt({"Say: calm": "Calm.", "Say: rude": Reply("Half an ans", finish=finish)})
    cell = run("%%nano --map words --out said\nSay: {item}")
    assert not cell.failed, cell.shown
    assert ip.user_ns["_nano"].failed.to_dict() == {1: reason} and ip.user_ns["said"].tolist() == ["Calm.", pd.NA]
    fake.script = by_prompt({"Say: rude": "Rude."})
    again = run("%%nano --map words --out said\nSay: {item}")
    assert user_prompts(fake)[2:] == ["Say: rude"], "the failed row was not answered from the cache"
    assert "2 of 2 items answered (1 from the cache)" in again.stdout


def test_duplicate_labels_each_count_as_a_failure(run, fake, ip) -> None:
    ip.user_ns["rows"] = pd.Series(["x", "y", "z"], index=["a", "a", "b"], name="word")
    fake.script = by_prompt({"Say x": Reply("no", finish="content_filter"), "Say y": Reply("no", finish="content_filter"), "Say z": "Z."})
    cell = run("%%nano --map rows --out said\nSay {word}")
    failed = ip.user_ns["_nano"].failed
    assert failed.index.tolist() == ["a", "a"] and len(failed) == 2
    assert "1 of 3 items answered · 2 failed" in cell.stdout and cell.stdout.count("  a: ") == 2


def test_missing_values_read_as_nothing_and_format_specs_apply(run, fake, ip) -> None:
    ip.user_ns["books"] = pd.DataFrame({
        "title": ["Dune", None, pd.NA, "Emma"],
        "price": [9.5, np.nan, 3.0, 12.25],
        "out": [pd.Timestamp("2026-01-02"), pd.NaT, pd.NaT, pd.Timestamp("2026-03-04")],
    }).astype({"title": "string"})
    cell = run("%%nano --map books --out said\nBook { title } at {price:.2f} ({out:%d %b}) — {{price}}")
    assert not cell.failed, cell.shown
    assert sorted(user_prompts(fake)) == sorted(["Book Dune at 9.50 (02 Jan) — {price}", "Book  at  () — {price}",
                                                 "Book  at 3.00 () — {price}", "Book Emma at 12.25 (04 Mar) — {price}"])
    assert all("<NA>" not in p and "NaT" not in p and "nan" not in p for p in user_prompts(fake))


@pytest.mark.parametrize("body", ["Book {titel}", "Book { titel }", "Book {titel:.2f}"])
def test_a_placeholder_naming_no_column_is_refused_before_anything_is_sent(run, fake, ip, body: str) -> None:
    ip.user_ns["books"] = pd.DataFrame({"title": ["Dune"], "price": [9.5]})
    cell = run(f"%%nano --map books\n{body}")
    assert cell.failed and fake.requests == []
    (line,) = [s for s in cell.shown.splitlines() if s.strip()]
    assert f"The template uses {body.removeprefix('Book ')}, which the data does not have; available: {{title}}, {{price}}." in line


def test_templates_format_like_str_format() -> None:
    template = Template("{n:>5}|{n!r}|{x:,}|{d:%Y}", ["n", "x", "d"])
    assert template.render(("ab", 1234567, datetime.date(2026, 5, 1))) == "   ab|'ab'|1,234,567|2026"
    with pytest.raises(BadInput, match=r"\{x:,\} cannot format the value 'many'"):
        template.render(("a", "many", None))


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Entry(BaseModel):
    when: datetime.datetime
    day: datetime.date | None
    price: decimal.Decimal
    mood: Mood


def test_schema_dates_decimals_and_enums_become_columns_of_that_type(run, fake, ip) -> None:
    ip.user_ns.update(notes=["a", "b"], Entry=Entry)
    fake.script = by_prompt({
        "Read a": '{"when": "2026-01-02T03:04:05", "day": "2026-01-02", "price": "1.10", "mood": "sad"}',
        "Read b": '{"when": "2026-02-03T00:00:00", "day": null, "price": "0.30", "mood": "happy"}',
    })
    cell = run("%%nano --map notes --schema Entry --out table\nRead {item}")
    assert not cell.failed, cell.shown
    table = ip.user_ns["table"]
    assert pd.api.types.is_datetime64_any_dtype(table["when"]) and table["when"].dt.month.tolist() == [1, 2]
    assert table["day"].tolist()[0] == datetime.date(2026, 1, 2) and table["day"].isna().tolist() == [False, True]
    assert table["price"].sum() == decimal.Decimal("1.40"), "Decimals add up exactly"
    assert isinstance(table["mood"].dtype, pd.CategoricalDtype) and table["mood"].tolist() == [Mood.SAD, Mood.HAPPY]
    assert list(table["mood"].cat.categories) == [Mood.HAPPY, Mood.SAD]


LIMITS = {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "1s"}


def test_an_item_over_the_per_minute_token_limit_fails_at_once_and_the_rest_go_on(run, fake, ip) -> None:
    ip.user_ns["texts"] = ["short", "word " * 3000, "also short"]
    fake.reply = "ok"
    fake.script = lambda body: Reply("ok", headers=LIMITS)
    started = time.monotonic()
    cell = run("%%nano --map texts --out said --concurrency 1\nSummarise: {item}")
    assert time.monotonic() - started < 10 and not cell.failed, cell.shown
    assert user_prompts(fake) == ["Summarise: short", "Summarise: also short"]
    (reason,) = ip.user_ns["_nano"].failed.tolist()
    assert reason.startswith("This item's prompt is about 3,0") and "more than the provider's limit of 1,000 tokens a minute" in reason


def test_an_item_over_the_limit_only_by_its_output_bound_is_sent_alone_once_the_window_allows() -> None:
    import asyncio

    async def main() -> list[str]:
        limiter = Limiter(4, output_bound=900)
        events: list[str] = []
        first = await limiter.acquire(100)
        await limiter.settle(first, {"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "500",
                                     "x-ratelimit-reset-tokens": "1s"})
        with pytest.raises(TooLarge):
            await limiter.acquire(2000)  # 1,100 tokens of prompt: never fits
        other = await limiter.acquire(50)

        async def big() -> None:
            mark = await limiter.acquire(1200)  # 300 of prompt + 900 bound: over the limit, under it without the bound
            events.append(f"big sent alone: {limiter.in_flight == 1}")
            await limiter.settle(mark, None)

        task = asyncio.ensure_future(big())
        await asyncio.sleep(0.2)
        events.append("other settles")
        await limiter.settle(other, None)
        await asyncio.wait_for(task, 5)
        return events

    assert asyncio.run(main()) == ["other settles", "big sent alone: True"]


def test_every_limiter_wait_is_bounded_and_told() -> None:
    import asyncio

    from nano_magic.limiter import MAX_WAIT

    told: list[float] = []

    async def main() -> None:
        limiter = Limiter(2, on_wait=told.append)
        mark = await limiter.acquire(10)
        await limiter.settle(mark, None, throttled=True, retry_after=86_400, ok=False)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(limiter.acquire(10), 0.1)

    asyncio.run(main())
    assert told and 0 < told[0] <= MAX_WAIT
    tally = Tally(3, waiting_until=time.monotonic() + told[0])
    assert "waiting 2 min 00 s for the rate limit" in tally.line(), "the progress bar shows the wait"


def test_a_cache_that_cannot_write_keeps_every_answer_with_one_warning(fake, tmp_path) -> None:
    """A real disk-full: the kernel may not grow any file, so SQLite's writes fail, and the run goes on."""
    cache = tmp_path / "answers.sqlite3"
    nb = notebook(
        f"%env NANO_BASE_URL={fake.base_url}\n%load_ext nano_magic\n%config NanoMagics.cache_path = {str(cache)!r}",
        "first = ['warm']\nrows = [f'row {i}' for i in range(30)]",
        "%%nano --map first\nSay {item}",
        "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (32768, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))",
        "%%nano --map rows --out said\nSay {item}",
        "print(said.tolist(), len(_nano.failed))",
    )
    run_notebook(nb, tmp_path)
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in nb.cells[4].outputs)
    assert "30 of 30 items answered" in shown, shown
    warnings = [line for line in shown.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 1 and "answers could not be written to the cache" in warnings[0], shown
    assert nb.cells[5].outputs[0].text == f"{[fake.reply] * 30!r} 0\n"
    assert sorted(user_prompts(fake)) == sorted(["Say warm", *(f"Say row {i}" for i in range(30))])


def test_a_run_stopped_mid_flight_keeps_every_answer_that_arrived_and_invents_no_errors(tmp_path) -> None:
    with RateLimitedServer(rate=1000, error_rate=0, cut_rate=0, latency=0.3) as server:
        chat = Chat(base_url=server.base_url, model="gpt-4.1-nano")
        timer = threading.Timer(1.0, signal.raise_signal, (signal.SIGINT,))
        timer.start()
        result = chat.map([f"row {i}" for i in range(60)], "{item}", concurrency=8, cache=tmp_path / "c.sqlite3", progress=False)
        timer.join()
        time.sleep(0.5)
    assert result.stopped and 0 < result.done < 60
    assert result.failed.empty, "no row in flight got an error it did not have"
    answered = {f"row {i}" for i, a in enumerate(result.answers) if not pd.isna(a)}
    arrived = set(server.completed)
    assert answered <= arrived and len(arrived - answered) <= 8, "answers that arrived were kept (the server may finish a cancelled one)"
