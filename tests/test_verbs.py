"""`--filter`, `--classify`, `--reduce`, `--sample` and dedupe: cells and `Chat` methods against loopback servers."""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import random
import re
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from nano_magic import Chat
from nano_magic.batch import MapResult
from tests.support.fake_server import Refuse, Reply
from tests.support.rate_limited import RateLimitedServer

ROW = re.compile(r"row (\d+)")


def prompt_of(body: dict) -> str:
    return (body.get("messages") or body.get("input"))[-1]["content"]


def number(prompt: str) -> int:
    return int(ROW.search(prompt).group(1))


def frame(count: int, index: str) -> pd.DataFrame:
    """`count` rows `row i`, on a non-unique index or a MultiIndex."""
    text = [f"row {i}" for i in range(count)]
    if index == "multi":
        return pd.DataFrame({"text": text}, index=pd.MultiIndex.from_arrays([[i % 7 for i in range(count)], range(count)]))
    return pd.DataFrame({"text": text}, index=[i // 2 for i in range(count)])


def decide(prompt: str) -> str:
    """A filter server: yes for rows divisible by 3; row 7 answers out of schema."""
    n = number(prompt)
    return '{"answer": "maybe"}' if n == 7 else json.dumps({"answer": n % 3 == 0})


LABELS = ["billing", "bug", "question"]


def label(prompt: str) -> str:
    """A classify server: the label by row number modulo 3; row 5 answers a label it was not offered."""
    n = number(prompt)
    return '{"label": "praise"}' if n == 5 else json.dumps({"label": LABELS[n % 3]})


@pytest.fixture
def limited(ip):
    """Point the shell at a fresh rate-limited server (with its 500s and cut streams) for one test."""
    ip.magics_manager.registry["NanoMagics"].max_retries = 6

    def start(answer, **how) -> RateLimitedServer:
        server = RateLimitedServer(rate=how.pop("rate", 150), answer=answer, **how).__enter__()
        ip.magics_manager.registry["NanoMagics"].base_url = server.base_url
        servers.append(server)
        return server

    servers: list[RateLimitedServer] = []
    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.mark.parametrize("index", ["non-unique", "multi"])
def test_filter_keeps_the_rows_answered_yes_in_input_order_on_their_index(run, ip, limited, index: str) -> None:
    rows = frame(300, index)
    ip.user_ns["rows"] = rows
    server = limited(decide)
    cell = run("%%nano --filter rows --out kept -m gpt-4.1-nano\nIs this a multiple of three? {text}")
    assert not cell.failed, cell.shown
    assert server.twice() == [] and len(server.completed) == 300, "every row decided once"
    assert server.errors > 0, "the server failed some requests on purpose"
    wanted = [i for i in range(300) if i % 3 == 0]
    kept = ip.user_ns["kept"]
    assert kept["text"].tolist() == [f"row {i}" for i in wanted]
    assert kept.index.equals(rows.index[wanted]), "same index, duplicates and levels kept"
    result = ip.user_ns["_nano"]
    assert result.answers.index.equals(rows.index) and str(result.answers.dtype) == "boolean"
    assert int(result.answers.sum()) == 100 and result.answers.isna().sum() == 1
    assert result.failed.index.tolist() == [rows.index[7]]
    assert "answer: Input should be a valid boolean" in result.failed.iloc[0]
    assert "299 of 300 items answered · 1 failed" in cell.stdout


@pytest.mark.parametrize("index", ["non-unique", "multi"])
def test_classify_gives_a_categorical_on_the_input_index_and_fails_an_unoffered_label(run, ip, limited, index: str) -> None:
    rows = frame(300, index)
    ip.user_ns.update(rows=rows, Topics=["billing", "bug", "question"])
    server = limited(label)
    cell = run("%%nano --classify rows --labels Topics --out topics -m gpt-4.1-nano\nLabel this ticket: {text}")
    assert not cell.failed, cell.shown
    assert server.twice() == [] and len(server.completed) == 300
    topics = ip.user_ns["topics"]
    assert isinstance(topics.dtype, pd.CategoricalDtype) and topics.cat.categories.tolist() == LABELS
    assert topics.index.equals(rows.index)
    assert [topics.iloc[i] for i in (0, 1, 2, 299)] == ["billing", "bug", "question", "question"]
    assert pd.isna(topics.iloc[5]) and topics.isna().sum() == 1
    failed = ip.user_ns["_nano"].failed
    assert failed.index.tolist() == [rows.index[5]] and "praise" in failed.iloc[0]


def test_classify_without_out_shows_a_count_per_label(run, fake, ip) -> None:
    ip.user_ns["tickets"] = pd.Series(["row 0", "row 1", "row 3", "row 5"], name="text")
    fake.script = lambda body: Reply(label(prompt_of(body)))

    class Topic(enum.Enum):
        BILLING = "billing"
        BUG = "bug"
        QUESTION = "question"

    ip.user_ns["Topic"] = Topic
    cell = run("%%nano --classify tickets --labels Topic\nLabel: {text}")
    assert not cell.failed, cell.shown
    shown = [o.data for o in cell.outputs if "text/html" in o.data]
    assert len(shown) == 1
    assert shown[0]["text/plain"].split("\n") == ["label     rows", "billing   2", "bug       1", "question  0", "failed    1"]
    assert shown[0]["text/html"].count("class='nano-bar'") == 3 and "<td>question</td>" in shown[0]["text/html"]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_filter_and_classify_send_strict_schemas_and_a_refusal_fails_its_row_alone(run, fake, ip, api: str) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"text": [f"row {i}" for i in range(6)]}, index=list("abcdef"))

    def script(body: dict):
        prompt = prompt_of(body)
        if number(prompt) == 4:
            return Refuse("I can't help with that.")
        return Reply(decide(prompt) if "Keep" in prompt else label(prompt))

    fake.script = script
    kept = run(f"%%nano --filter rows --out kept --api {api}\nKeep? {{text}}")
    assert not kept.failed, kept.shown
    shapes = [p.body.get("response_format") or p.body["text"]["format"] for p in fake.posts()]
    schema = (shapes[0].get("json_schema") or shapes[0])["schema"]
    assert all(s == shapes[0] for s in shapes) and (shapes[0].get("json_schema") or shapes[0])["strict"] is True
    assert schema["properties"]["answer"]["type"] == "boolean" and schema["additionalProperties"] is False
    assert ip.user_ns["kept"].index.tolist() == ["a", "d"]
    assert ip.user_ns["_nano"].failed.to_dict() == {"e": "The model refused: I can't help with that."}
    fake.requests.clear()
    labelled = run(f"%%nano --classify rows --labels billing,bug,question --out topics --api {api}\nLabel {{text}}")
    assert not labelled.failed, labelled.shown
    shape = fake.posts()[0].body.get("response_format") or fake.posts()[0].body["text"]["format"]
    assert (shape.get("json_schema") or shape)["schema"]["properties"]["label"]["enum"] == LABELS
    topics = ip.user_ns["topics"]
    assert topics.tolist()[:4] == ["billing", "bug", "question", "billing"] and topics.isna().tolist() == [False] * 4 + [True, True]
    failed = ip.user_ns["_nano"].failed
    assert failed["e"] == "The model refused: I can't help with that." and "praise" in failed["f"]


def test_filter_without_out_shows_the_first_kept_rows(run, fake, ip) -> None:
    ip.user_ns["rows"] = [f"row {i}" for i in range(60)]
    fake.script = lambda body: Reply(decide(prompt_of(body)))
    cell = run("%%nano --filter rows\nKeep? {item}")
    tables = [o.data["text/plain"] for o in cell.outputs if "row" in o.data.get("text/plain", "")]
    assert len(tables) == 1 and len(tables[0].splitlines()) == 11 and tables[0].splitlines()[-1].split() == ["9", "row", "27"]
    assert "kept 20 of 60" in cell.stdout


def chunk_rows(prompt: str) -> list[int]:
    return [int(n) for n in re.findall(r"^- row (\d+)$", prompt, re.MULTILINE)]


def reducer_server(seed: int = 1):
    """Chunks answer with their first and last row; combines check their parts are in order and join the ranges."""
    pick = random.Random(seed)
    lock = threading.Lock()

    def answer(prompt: str) -> str:
        with lock:
            delay = pick.uniform(0, 0.03)
        time.sleep(delay)  # chunks finish in a random order
        if "partial answers" not in prompt:
            rows = chunk_rows(prompt)
            return f"rows {rows[0]}-{rows[-1]}"
        ranges = [tuple(map(int, m)) for m in re.findall(r"rows (\d+)-(\d+)", prompt)]
        ordered = all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
        return f"rows {ranges[0][0]}-{ranges[-1][1]}" if ordered else "OUT OF ORDER"

    return answer


def test_reduce_of_5000_rows_combines_in_rounds_in_input_order_and_streams_the_last(run, ip, limited) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"text": [f"row {i}" for i in range(5000)]})
    server = limited(reducer_server(), rate=400, latency=0)
    cell = run("%%nano --reduce rows --chunk-tokens 200 --out summary -m gpt-4.1-nano\nWhich rows are these?\n- {text}")
    assert not cell.failed, cell.shown
    result = ip.user_ns["_nano"]
    assert ip.user_ns["summary"] == result.text == "rows 0-4999"
    assert len(result.rounds) >= 3 and result.rounds[-1] == ["rows 0-4999"]
    first = [p for p in server.completed if "partial answers" not in p]
    seen = sorted(n for p in first for n in chunk_rows(p))
    assert seen == list(range(5000)), "each row in exactly one chunk, each chunk answered once"
    assert server.twice() == [] and len(result.rounds[0]) == len(first)
    assert server.completed[-1].count("Part ") == len(result.rounds[-2]) and server.streamed[-1], "the last round streamed"
    assert result.requests == len(server.completed) and f"{result.requests} requests" in cell.stdout, "the footer counts every round"
    assert result.usage.input_tokens > 5000


def test_reduce_cuts_a_row_longer_than_a_chunk_and_says_so(run, fake, ip) -> None:
    ip.user_ns["rows"] = ["short one", "long " * 400, "short two"]
    fake.reply = "partial"
    cell = run("%%nano --reduce rows --chunk-tokens 100\nSummarise:\n- {item}")
    assert not cell.failed, cell.shown
    prompts = [prompt_of(p.body) for p in fake.posts()]
    assert any("[…cut: longer than a chunk]" in p for p in prompts) and all(p.count("long") <= 100 for p in prompts)
    assert "1 rows were longer than a chunk and were cut" in cell.stdout and ip.user_ns["_nano"].cut == 1


def test_an_interrupted_reduce_keeps_its_chunks_for_the_rerun(run, fake, ip) -> None:
    ip.user_ns["rows"] = [f"row {i}" for i in range(40)]
    fake.script = lambda body: Reply(f"rows {chunk_rows(prompt_of(body))[0]}") if "partial" not in prompt_of(body) else Reply("done")
    first = run("%%nano --reduce rows --chunk-tokens 100 --concurrency 1 --max-tokens 5\nList:\n- {item}")
    assert not first.failed
    sent = len(fake.posts())
    again = run("%%nano --reduce rows --chunk-tokens 100 --concurrency 1 --max-tokens 5\nList:\n- {item}")
    assert not again.failed and len(fake.posts()) == sent + 1, "a rerun asks only the last round again"
    assert ip.user_ns["_nano"].text == "done"


def test_a_sample_previews_and_the_full_run_takes_it_from_the_cache(run, ip, limited) -> None:
    ip.user_ns["rows"] = frame(300, "non-unique")
    server = limited(decide)
    sample = run("%%nano --filter rows --sample 30 --sample-seed 4 --out kept -m gpt-4.1-nano\nKeep? {text}")
    assert not sample.failed, sample.shown
    sampled = list(server.completed)
    assert len(sampled) == 30 and "Estimate (a sample of 30 rows): 30 requests to send" in sample.stdout
    estimate = re.search(r"Estimate for all 300 rows: 270 requests to send \(30 of 300 items answered from the cache\): "
                         r"about [\d,]+ input tokens \+ up to ([\d,]+) output tokens \(([\d.]+) output tokens a request, "
                         r"the sample's measured mean\)", sample.stdout)
    assert estimate, sample.stdout
    assert float(estimate.group(2)) == pytest.approx(len(json.dumps({"answer": False}).split()), abs=1)
    again = run("%%nano --filter rows --sample 30 --sample-seed 4 --out kept -m gpt-4.1-nano\nKeep? {text}")
    assert len(server.completed) == 30 and "30 of 30 items answered (30 from the cache)" in again.stdout, "the same rows"
    full = run("%%nano --filter rows --out kept -m gpt-4.1-nano\nKeep? {text}")
    assert not full.failed
    assert set(server.completed[30:]).isdisjoint(sampled) and len(server.completed) == 300, "sampled rows are not asked again"
    assert "(30 from the cache)" in full.stdout


def test_identical_requests_are_sent_once(run, fake, ip) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"text": [f"text {i % 50}" for i in range(1000)]})
    cell = run("%%nano --map rows --out out -t 0.7\nSay {text}")
    assert not cell.failed
    assert len(fake.posts()) == 50
    assert "50 requests to send (50 distinct requests for 1,000 rows)" in cell.stdout
    assert "1,000 of 1,000 items answered · 50 distinct requests for 1,000 rows" in cell.stdout
    assert ip.user_ns["out"].notna().all() and len(ip.user_ns["out"]) == 1000


def test_estimates_state_their_output_bound_and_an_unbounded_run_asks_sooner(run, fake, ip) -> None:
    ip.user_ns["rows"] = [f"row {i}" for i in range(20)]
    settings = ip.magics_manager.registry["NanoMagics"]
    bounded = run("%%nano --filter rows --dry-run -m gpt-4.1-nano --max-tokens 5\nKeep? {item}")
    assert "+ up to 100 output tokens (--max-tokens 5)" in bounded.stdout
    open_ended = run("%%nano --filter rows --dry-run -m gpt-4.1-nano\nKeep? {item}")
    assert "output not bounded (set --max-tokens, or preview with --sample)" in open_ended.stdout and "for the input alone" in open_ended.stdout
    dollars = float(re.search(r"≈ \$([\d.]+) for the input alone", open_ended.stdout).group(1))
    settings.confirm_above = dollars * 5  # the input alone is over a tenth of it
    asked = run("%%nano --filter rows -m gpt-4.1-nano\nKeep? {item}")
    assert asked.failed and "more than a tenth of NanoMagics.confirm_above" in asked.shown and "output is not bounded" in asked.shown
    assert not run("%%nano --filter rows -m gpt-4.1-nano --max-tokens 5\nKeep? {item}").failed, "bounded, the worst case is under"
    assert fake.posts() and not run("%%nano --map rows -m gpt-4.1-nano --yes --out x\nSay {item}").failed


@pytest.mark.parametrize("line, body, message", [
    ("--classify rows", "{item}", "--classify needs --labels"),
    ("--classify rows --labels billing", "{item}", "give at least two labels"),
    ("--classify rows --labels a,a", "{item}", "a label is given twice"),
    ("--classify rows --labels Count", "{item}", "--labels Count: use a comma list, or a list, tuple or Enum of strings (not a int)"),
    ("--filter rows --labels a,b", "{item}", "--labels works only with --classify"),
    ("--filter rows --map rows", "{item}", "--map and --filter cannot go together"),
    ("--filter rows --schema Shape", "{item}", "--schema does not work with --filter: each answer is yes or no"),
    ("--reduce rows --json", "{item}", "--json does not work with --reduce"),
    ("--reduce rows --chunk-tokens 0", "{item}", "--chunk-tokens 0 must be at least 1"),
    ("--reduce rows --chunk-tokens 20", "A long instruction " * 10 + "\n{item}", "leaves no room for rows"),
    ("--map rows --chunk-tokens 20", "{item}", "--chunk-tokens works only with --reduce"),
    ("--filter rows --sample 0", "{item}", "--sample 0 must be at least 1"),
    ("--filter rows --sample-seed 3", "{item}", "--sample-seed picks the rows of a --sample"),
    ("--reduce rows", "Summarise", "no row would reach the model"),
    ("--reduce rows", "Describe {image:item}\n- {item}", "--reduce sends text: {image:column} works with --map"),
    ("--filter nowhere", "{item}", "--filter: there is no variable named 'nowhere'"),
    ("--reduce rows --thread t", "{item}", "--thread does not work with --reduce"),
])
def test_bad_verb_input_gets_one_line_and_sends_nothing(run, fake, ip, line: str, body: str, message: str) -> None:
    ip.user_ns.update(rows=["a", "b", "c"], Count=3, Shape={"type": "object", "properties": {"x": {"type": "string"}}})
    cell = run(f"%%nano {line}\n{body}")
    assert cell.failed and message in cell.shown, cell.shown
    assert "Traceback" not in cell.shown and fake.posts() == []


def test_the_python_methods_give_the_cells_results(fake, tmp_path) -> None:
    def script(body: dict):
        prompt = prompt_of(body)
        if "response_format" in body:
            return Reply(decide(prompt) if "Keep" in prompt else label(prompt))
        if prompt.startswith("Say"):
            return Reply("said")
        return Reply("combined" if "partial answers" in prompt else f"rows {chunk_rows(prompt)[0]}")

    fake.script = script
    rows = pd.DataFrame({"text": [f"row {i}" for i in range(12)]}, index=[f"r{i}" for i in range(12)])
    chat = Chat(base_url=fake.base_url)
    cache = tmp_path / "answers.sqlite3"
    kept = chat.filter(rows, "Keep? {text}", cache=cache, progress=False)
    assert kept.kept.index.tolist() == ["r0", "r3", "r6", "r9"] and kept.failed.index.tolist() == ["r7"]
    topics = chat.classify(rows, "Label {text}", ("billing", "bug", "question"), cache=cache, progress=False)
    assert topics.answers.cat.categories.tolist() == LABELS and topics.failed.index.tolist() == ["r5"]
    deltas: list[str] = []
    many = pd.DataFrame({"text": [f"row {i}" for i in range(60)]})
    summary = chat.reduce(many, "List:\n- {text}", chunk_tokens=80, cache=cache, progress=False, on_delta=deltas.append)
    assert summary.text == "combined" == "".join(deltas) and len(summary.rounds) == 2 and summary.rounds[0][0] == "rows 0"
    sent = len(fake.posts())

    async def main():
        return (await chat.afilter(rows, "Keep? {text}", cache=cache, progress=False),
                await chat.aclassify(rows, "Label {text}", "billing,bug,question", cache=cache, progress=False),
                await chat.areduce(many, "List:\n- {text}", chunk_tokens=80, cache=cache, progress=False))

    akept, atopics, asummary = asyncio.run(main())
    assert akept.kept.equals(kept.kept) and atopics.answers.equals(topics.answers) and asummary.rounds == summary.rounds
    assert len(fake.posts()) == sent + 3, "from the cache, but the two failed rows and the last round go again"
    sampled = chat.map(rows, "Say {text}", cache=cache, progress=False, sample=4, sample_seed=1)
    assert isinstance(sampled, MapResult) and sampled.whole is not None
    assert sampled.answers.tolist() == ["said"] * 4
    assert sampled.whole.startswith("Estimate for all 12 rows: 8 requests to send (4 of 12 items answered from the cache)")
    assert "(1.0 output tokens a request, the sample's measured mean)" in sampled.whole
    assert sampled.answers.index.tolist() == sorted(sampled.answers.index, key=lambda label: int(label[1:]))


def test_a_failed_chunk_stops_the_reduce_and_is_listed(run, fake, ip) -> None:
    from tests.support.fake_server import Status

    ip.user_ns["rows"] = [f"row {i}" for i in range(40)]
    fake.queue(Status(400, {"error": {"message": "chunk too odd"}}))
    cell = run("%%nano --reduce rows --chunk-tokens 100 --concurrency 1\nList:\n- {item}")
    assert cell.failed and "1 chunks failed in round 1 (chunk 0: " in cell.shown and "chunk too odd" in cell.shown
    result = ip.user_ns["_nano"]
    assert result.failed.index.tolist() == [0] and result.rounds == [] and result.text == ""
    sent = len(fake.posts())
    again = run("%%nano --reduce rows --chunk-tokens 100 --concurrency 1\nList:\n- {item}")
    assert not again.failed, again.shown
    assert [prompt_of(p.body) for p in fake.posts()[sent:]][0].startswith("List:\n- row 0\n"), "the failed chunk went again"
    assert len(fake.posts()) - sent == 1 + len(ip.user_ns["_nano"].rounds) - 1, "then only the combine rounds"


def test_map_and_reduce_take_a_sample_too(run, fake, ip) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"text": [f"row {i}" for i in range(50)]}, index=range(100, 150))
    mapped = run("%%nano --map rows --sample 5 --sample-seed 9 --out five\nSay {text}")
    assert not mapped.failed and len(fake.posts()) == 5
    assert ip.user_ns["five"].index.tolist() == sorted(ip.user_ns["five"].index) and len(ip.user_ns["five"]) == 5
    assert "Estimate for all 50 rows: 45 requests to send (5 of 50 items answered from the cache)" in mapped.stdout
    same = run("%%nano --map rows --sample 5 --sample-seed 9 --out again\nSay {text}")
    assert len(fake.posts()) == 5 and ip.user_ns["again"].index.equals(ip.user_ns["five"].index), "the same seed, the same rows"
    fake.reply = "partial"
    reduced = run("%%nano --reduce rows --sample 20 --chunk-tokens 80\nList:\n- {text}")
    assert not reduced.failed, reduced.shown
    assert "Estimate (a sample of 20 rows): round 1:" in reduced.stdout
    assert re.search(r"Estimate for the whole input: round 1: \d+ requests to send: about [\d,]+ input tokens \+ up to [\d,]+ output "
                     r"tokens \([\d.]+ output tokens a request, the sample's measured mean\)", reduced.stdout), reduced.stdout
    assert "Then at most" in reduced.stdout and same.stdout


def test_the_off_switch_stops_every_verb(run, fake, ip, monkeypatch) -> None:
    monkeypatch.setenv("NANO_MAGIC_DISABLED", "1")
    ip.user_ns["rows"] = ["a", "b"]
    for line in ("--filter rows", "--classify rows --labels x,y", "--reduce rows", "--map rows --sample 1"):
        cell = run(f"%%nano {line}\nAbout {{item}}")
        assert "nano_magic is turned off on this server" in cell.stdout
    assert fake.posts() == []


def test_the_guide_examples_do_what_they_say(run, fake, ip, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # Chat's default answer cache
    page = (Path(__file__).resolve().parents[1] / "docs" / "many-rows.md").read_text()
    section = page.split("\n## Filter, classify, reduce, preview on a sample\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^ *```(python)?\n(.*?)^ *```", section, re.M | re.S)

    def script(body: dict):
        shape = json.dumps(body.get("response_format") or {})
        if "yes_or_no" in shape:
            return Reply(json.dumps({"answer": "late" in prompt_of(body).split("? ", 1)[1]}))
        if '"label"' in shape:
            return Reply(json.dumps({"label": "delivery"}))
        return Reply("Late deliveries, double charges and a crashing app.")

    fake.script = script
    assert not run(blocks[0][1]).failed
    cells = [textwrap.dedent(code) for kind, code in blocks[1:] if not kind]
    assert len(cells) == 4
    for cell in cells:
        shown = run(cell)
        assert not shown.failed, shown.shown
    assert ip.user_ns["late"].index.tolist() == [101, 105]
    assert ip.user_ns["topic"].tolist() == ["delivery"] * 5
    ip.user_ns["chat"] = Chat(base_url=fake.base_url)
    python = run(blocks[-1][1])
    assert not python.failed, python.shown
    assert ip.user_ns["summary"] == "Late deliveries, double charges and a crashing app." and "Estimate for all 5 rows" in python.stdout
