"""`%%nano --map VAR --batch` and `Chat.map(batch=True)` against a loopback Batch API: submit, progress, collect, failures."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
from pathlib import Path

import httpx
import pandas as pd
import pytest

from nano_magic import Chat
from nano_magic.config import Backend
from nano_magic.errors import NanoError
from nano_magic.map_batch import BatchPending
from nano_magic.provider_batch import refusal_lines
from nano_magic.usage import Usage
from tests.support.batch_server import BatchServer, Fail, answer_for

CELL = "%%nano --map rows --batch --out labels -m gpt-4.1-nano --max-tokens 50\nSay {item}"
SECRET = "sk-batch-test-secret-0123456789abcdef"


@pytest.fixture
def settings(ip):
    ip.user_ns.pop("labels", None)  # the shell is shared: an earlier test's --out must not count
    return ip.magics_manager.registry["NanoMagics"]


def use(settings, server: BatchServer) -> None:
    settings.base_url = server.base_url


def answers_in_cache(settings) -> int:
    with sqlite3.connect(settings.cache_path) as db:
        return db.execute("SELECT count(*) FROM answers").fetchone()[0]


def lines_of(upload: bytes) -> list[dict]:
    return [json.loads(line) for line in upload.decode().splitlines()]


def test_submit_returns_at_once_and_an_early_rerun_shows_progress_only(run, ip, settings) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(6)]
    with BatchServer(rate=1, manual=True) as server:
        use(settings, server)
        submitted = run(CELL)
        assert not submitted.failed, submitted.shown
        assert "Submitted 1 batch: 6 requests, ≈ $" in submitted.stdout and "at the batch price" in submitted.stdout
        assert "batch-000002 (6 requests)" in submitted.stdout and "Run this cell again to collect" in submitted.stdout
        assert len(server.uploads) == 1 and server.sent("POST", "/v1/batches") == ["/v1/batches"] and server.live == []
        assert "labels" not in ip.user_ns

        server.advance(2.5)
        early = run(CELL)
        assert not early.failed, early.shown
        assert "batch-000002: in_progress · 2 completed, 0 failed of 6 ·" in early.stdout and "Not done yet" in early.stdout
        assert isinstance(ip.user_ns["_nano"], BatchPending) and "labels" not in ip.user_ns
        assert answers_in_cache(settings) == 0 and len(server.uploads) == 1, "nothing collected, nothing sent again"


def test_collected_answers_equal_a_live_run_byte_for_byte(run, ip, settings, tmp_path) -> None:
    rows = pd.DataFrame({"text": ["great", "awful", "fine", "great", "so-so ünïcode ✓", "awful"]}, index=[10, 20, 30, 40, 50, 60])
    ip.user_ns["rows"] = rows
    template = "%%nano --map rows {flags} --out labels -m gpt-4.1-nano --max-tokens 50\nSentiment of: {{text}}"
    with BatchServer() as server:
        use(settings, server)
        settings.cache_path = str(tmp_path / "live.sqlite3")
        assert not run(template.format(flags="")).failed
        live, live_result = ip.user_ns["labels"], ip.user_ns["_nano"]
        live_bodies = list(server.live)

        settings.cache_path = str(tmp_path / "batch.sqlite3")
        ip.user_ns["rows"] = rows.iloc[:1]
        assert not run(template.format(flags="")).failed, "one row answered live first: the batch leaves it out"
        ip.user_ns["rows"] = rows
        del ip.user_ns["labels"]
        assert not run(template.format(flags="--batch")).failed
        sent = lines_of(server.uploads[0][1])
        assert sorted(line["body"]["messages"][-1]["content"] for line in sent) == [
            "Sentiment of: awful", "Sentiment of: fine", "Sentiment of: so-so ünïcode ✓"], "cached and duplicate requests are left out"

        collected = run(template.format(flags="--batch"))
        assert not collected.failed, collected.shown
        batch, result = ip.user_ns["labels"], ip.user_ns["_nano"]
    pd.testing.assert_series_equal(batch, live)
    assert [s.encode() for s in batch] == [s.encode() for s in live]
    assert batch.tolist()[4] == answer_for({"messages": [{"content": "Sentiment of: so-so ünïcode ✓"}]})
    assert len(result.failed) == 0 and result.cached == 2 and "6 of 6 items answered (2 from the cache)" in collected.stdout
    words = sum(len(answer_for({"messages": [{"content": f"Sentiment of: {t}"}]}).split()) for t in ("awful", "fine", "so-so ünïcode ✓"))
    full = result.usage.cost("gpt-4.1-nano")
    assert full is not None and result.usage.output_tokens == words and result.cost == pytest.approx(full / 2)
    half = Usage(live_result.usage.input_tokens, live_result.usage.output_tokens).cost("gpt-4.1-nano (batch)")
    assert half is not None and live_result.cost == pytest.approx(2 * half)
    live_by_prompt = {b["messages"][-1]["content"]: b for b in live_bodies}
    for line in sent:
        expected = {k: v for k, v in live_by_prompt[line["body"]["messages"][-1]["content"]].items() if k not in ("stream", "stream_options")}
        assert line["body"] == expected, "the batch body is the live body without its streaming fields"


def test_the_jsonl_holds_the_requests_only_and_the_key_rides_in_the_header(run, ip, settings, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NANO_API_KEY", SECRET)
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    ip.user_ns["rows"] = [f"row {i}" for i in range(40)] + ["row 0", "row 1"]
    with BatchServer() as server:
        use(settings, server)
        assert not run("%%nano --map rows --batch --api responses -m gpt-4.1-nano\n{item}?").failed
        headers, upload = server.uploads[0]
        create = next(h for m, p, h in server.requests if m == "POST" and p == "/v1/batches")
    lines = lines_of(upload)
    assert len(lines) == 40 and upload.endswith(b"\n") and len(upload.splitlines()) == 40
    ids = [line["custom_id"] for line in lines]
    assert len(set(ids)) == 40 and all(len(i) <= 64 for i in ids)
    for line in lines:
        assert set(line) == {"custom_id", "method", "url", "body"} and (line["method"], line["url"]) == ("POST", "/v1/responses")
        assert set(line["body"]) == {"model", "input", "store"} and line["body"]["input"][0]["content"].endswith("?")
    assert SECRET.encode() not in upload and SECRET[-8:].encode() not in upload
    assert headers["authorization"] == f"Bearer {SECRET}" and create["authorization"] == f"Bearer {SECRET}"
    assert "multipart/form-data" in headers["content-type"]
    assert list(folder.iterdir()) == [], "the local batch file was deleted after the upload"


def test_failures_are_rows_with_one_line_reasons(run, ip, settings) -> None:
    def fail(body: dict) -> Fail | None:
        prompt = body["messages"][-1]["content"]
        return {"Say r1": Fail("The model is\n overloaded"), "Say r2": Fail("Invalid  value for max_tokens", status=400),
                "Say r3": Fail("upstream crashed", status=500, in_output=True)}.get(prompt)

    ip.user_ns["rows"] = [f"r{i}" for i in range(5)]
    with BatchServer(fail=fail) as server:
        use(settings, server)
        run(CELL)
        collected = run(CELL)
        assert not collected.failed, collected.shown
        result = ip.user_ns["_nano"]
        assert result.failed.to_dict() == {
            1: "server_error: The model is overloaded",
            2: "The provider answered 400: Invalid value for max_tokens",
            3: "The provider answered 500: upstream crashed",
        }
        assert ip.user_ns["labels"].isna().tolist() == [False, True, True, True, False]
        assert "2 of 5 items answered · 3 failed" in collected.stdout

        again = run(CELL)
        assert [line["body"]["messages"][-1]["content"] for line in lines_of(server.uploads[1][1])] == ["Say r1", "Say r2", "Say r3"]
        assert "Submitted 1 batch: 3 requests" in again.stdout


@pytest.mark.parametrize("listed", [True, False])
def test_an_expired_batch_keeps_what_finished_and_the_rerun_resubmits_only_the_rest(run, ip, settings, listed: bool) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(8)]
    with BatchServer(rate=1, expire_s=3.5, list_unfinished=listed, manual=True) as server:
        use(settings, server)
        run(CELL)
        server.advance(4)
        collected = run(CELL)
        assert not collected.failed, collected.shown
        assert "Batch batch-000002 expired with 5 requests unfinished" in collected.stdout
        labels = ip.user_ns["labels"]
        assert labels.notna().sum() == 3 and labels.tolist()[:3] == [f"Answer to: Say r{i}" for i in range(3)]
        failed = ip.user_ns["_nano"].failed
        assert list(failed.index) == [3, 4, 5, 6, 7] and all("Not finished: batch batch-000002 expired" in e for e in failed)
        assert answers_in_cache(settings) == 3

        server.expire_s = None
        resubmitted = run(CELL)
        assert "Submitted 1 batch: 5 requests" in resubmitted.stdout
        assert [line["body"]["messages"][-1]["content"] for line in lines_of(server.uploads[1][1])] == [f"Say r{i}" for i in range(3, 8)]
        server.advance(30)
        final = run(CELL)
        assert "8 of 8 items answered (3 from the cache)" in final.stdout
        assert ip.user_ns["labels"].tolist() == [f"Answer to: Say r{i}" for i in range(8)]


def test_a_batch_over_the_request_limit_fails_validation_and_a_lower_batch_max_requests_splits_it(run, ip, settings) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(10)]
    with BatchServer(max_requests=4) as server:
        use(settings, server)
        run(CELL)
        refused = run(CELL)
        assert "Batch batch-000002 failed validation:" in refused.stdout
        assert "  too_many_requests: The batch has 10 requests; the limit is 4." in refused.stdout
        assert ip.user_ns["_nano"].failed.str.contains("failed validation").all()

        settings.batch_max_requests = 4
        split = run(CELL)
        assert "Submitted 3 batches: 10 requests" in split.stdout
        assert [len(lines_of(upload)) for _, upload in server.uploads[1:]] == [4, 4, 2]
        collected = run(CELL)
        assert not collected.failed and "10 of 10 items answered" in collected.stdout
        assert ip.user_ns["labels"].tolist() == [f"Answer to: Say r{i}" for i in range(10)]


def test_the_queued_token_limit_says_so_in_one_line(run, ip, settings) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(10)]
    with BatchServer(token_limit=5) as server:
        use(settings, server)
        run(CELL)
        refused = run(CELL)
    lines = [line for line in refused.stdout.splitlines() if "queue of batch tokens" in line]
    assert len(lines) == 1 and "Set a smaller NanoMagics.batch_max_requests (now 50,000)" in lines[0]
    assert "Limit: 5 enqueued tokens" in lines[0]


def test_validation_errors_show_five_then_a_count() -> None:
    backend = Backend("OpenAI", "https://api.openai.com/v1", "gpt-4.1-nano", SECRET)
    errors = [{"code": "invalid_request", "message": f"bad line {SECRET}", "line": n} for n in range(1, 9)]
    lines = refusal_lines({"id": "batch_x", "errors": {"data": errors}}, 50_000, backend)
    assert lines[0] == "Batch batch_x failed validation:" and len(lines) == 7
    assert lines[1].startswith("  line 1: invalid_request: bad line …") and lines[-1] == "  … and 3 more"
    assert SECRET not in "\n".join(lines)


def test_cancel_keeps_what_finished_and_batches_lists_it(run, ip, settings) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(6)]
    with BatchServer(rate=1, manual=True) as server:
        use(settings, server)
        run(CELL)
        listed = run("%nano batches")
        assert "batch-000002" in listed.shown and "--map rows: Say {item}" in listed.shown and "in_progress" in listed.shown
        assert "0/0/6" in listed.shown and "not collected (up to" in listed.shown
        server.advance(2.5)
        cancelled = run("%nano batches cancel batch-000002")
        assert "Batch batch-000002 is cancelled" in cancelled.shown
        assert server.sent("POST", "/v1/batches/batch-000002/cancel")
        collected = run(CELL)
        assert "Batch batch-000002 cancelled with 4 requests unfinished" in collected.stdout
        assert ip.user_ns["labels"].notna().tolist() == [True, True, False, False, False, False]
        after = run("%nano batches")
        assert "cancelled" in after.shown and "2/0/6" in after.shown and "0.0000" in after.shown
        assert run("%nano batches cancel nope").failed


def test_wait_polls_with_a_bar_until_done(run, ip, settings) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(5)]
    with BatchServer(rate=4) as server:
        use(settings, server)
        cell = run(CELL.replace("--batch", "--batch --wait"))
        assert not cell.failed, cell.shown
        assert "Submitted 1 batch: 5 requests" in cell.stdout and "5 of 5 items answered" in cell.stdout
        assert ip.user_ns["labels"].tolist() == [f"Answer to: Say r{i}" for i in range(5)]
        polls = server.sent("GET", "/v1/batches/")
        assert 2 <= len(polls) <= 5, polls


def test_cloudflare_and_a_server_without_batches_say_so_and_upload_nothing(run, ip, settings, monkeypatch) -> None:
    ip.user_ns["rows"] = ["a", "b"]
    with BatchServer(has_batches=False) as server:
        use(settings, server)
        cell = run(CELL)
        assert cell.failed and "Traceback" not in cell.shown
        message = [line for line in cell.shown.splitlines() if "--batch" in line]
        assert len(message) == 1 and "has no Batch API (GET /batches answered 404); nothing was sent" in message[0]
        assert server.uploads == [] and server.sent("POST", "/") == []
    settings.base_url = None
    monkeypatch.delenv("NANO_BASE_URL")
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", "acct")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", SECRET)
    cell = run("%%nano --map rows --batch\nSay {item}")
    assert cell.failed and "Traceback" not in cell.shown and SECRET not in cell.shown
    assert "Cloudflare Workers AI has no Files/Batches API" in cell.shown and "nothing was sent" in cell.shown


def test_the_budget_holds_the_whole_submission_before_uploading(run, ip, settings) -> None:
    ip.user_ns["rows"] = [f"r{i}" for i in range(100)]
    settings.budget = 0.0001
    with BatchServer() as server:
        use(settings, server)
        cell = run("%%nano --map rows --batch -m gpt-4.1-nano --max-tokens 1000\nSay {item}")
        assert cell.failed and "Budget: this request could cost up to $0.020035" in cell.shown
        assert server.uploads == []
        settings.budget = 0.03
        assert not run("%%nano --map rows --batch -m gpt-4.1-nano --max-tokens 1000\nSay {item}").failed
        held = run("%%nano --map rows --batch -m gpt-4.1-nano --max-tokens 1000\nTell {item}")
        assert held.failed and "$0.020035 of the $0.030000 cap is spent" in held.shown, "the first submission is held until collected"
        assert len(server.uploads) == 1
        usage = run("%nano usage")
        assert "No tokens used yet" in usage.shown, "a submission is not spending"
        run("%%nano --map rows --batch -m gpt-4.1-nano --max-tokens 1000\nSay {item}")
        usage = run("%nano usage")
        assert "(batch)" in usage.shown and "100" in usage.shown


def test_chat_map_and_amap_submit_and_collect(tmp_path: Path) -> None:
    rows = [f"q{i}" for i in range(4)]
    cache = tmp_path / "answers.sqlite3"
    with BatchServer() as server:
        chat = Chat("gpt-4.1-nano", base_url=server.base_url, env={})
        pending = chat.map(rows, "Q {item}", batch=True, cache=cache, progress=False)
        assert isinstance(pending, BatchPending) and pending.requests == 4 and "Call Chat.map again" in repr(pending)
        result = asyncio.run(chat.amap(rows, "Q {item}", batch=True, cache=cache, progress=False))
        assert result.answers.tolist() == [f"Answer to: Q {item}" for item in rows] and result.model == "gpt-4.1-nano (batch)"
        again = chat.map(rows, "Q {item}", batch=True, cache=cache, progress=False)
        assert again.cached == 4 and len(server.uploads) == 1


def test_an_ai_gateway_that_refuses_the_upload_says_so_in_one_line(tmp_path: Path) -> None:
    seen: list[str] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path.endswith("/batches"):
            return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        return httpx.Response(400, json={"success": False, "errors": [{"code": 2001, "message": "Unsupported provider route"}]})

    env = {"CLOUDFLARE_ACCOUNT_ID": "acct", "CLOUDFLARE_API_TOKEN": SECRET, "CLOUDFLARE_GATEWAY_ID": "gw"}
    chat = Chat(env=env, transport=httpx.MockTransport(gateway))
    with pytest.raises(NanoError) as failed:
        chat.map(["a", "b"], "Say {item}", batch=True, cache=tmp_path / "answers.sqlite3", progress=False)
    message = str(failed.value)
    assert "\n" not in message and SECRET not in message
    assert message == "--batch: Cloudflare AI Gateway refused POST /files (400: Unsupported provider route); nothing more was sent."
    assert seen == ["GET /v1/acct/gw/openai/batches", "POST /v1/acct/gw/openai/files"], "tried, refused, nothing more sent"


def test_parts_split_at_the_request_and_byte_limits(tmp_path: Path) -> None:
    from nano_magic.provider_batch import batch_line, write_parts
    from nano_magic.wire import Options, build_request

    backend = Backend("OpenAI", "https://api.openai.com/v1", "gpt-4.1-nano")
    requests = [(f"{i:064d}", build_request(backend, "gpt-4.1-nano", None, [{"role": "user", "content": "x" * (i % 7)}], Options()))
                for i in range(30)]
    size = len(batch_line(*requests[6]))
    parts = []
    for part in write_parts(requests, tmp_path, max_requests=8, max_bytes=3 * size):
        parts.append((len(part.custom_ids), part.size, part.path.read_bytes()))
        part.path.unlink()
    assert sum(n for n, _, _ in parts) == 30 and all(n <= 8 and b <= 3 * size for n, b, _ in parts)
    assert all(len(data) == b for _, b, data in parts) and len(parts) >= 10
    assert b"".join(data for _, _, data in parts) == b"".join(batch_line(*r) for r in requests), "every request once, in order"


def test_the_batch_price_is_half_unless_the_price_data_gives_one(settings) -> None:
    from nano_magic.usage import batch_model

    used = Usage(1_000_000, 1_000_000)
    live = used.cost("gpt-4.1-nano")
    assert live is not None and used.cost(batch_model("openai/gpt-4.1-nano-2025-04-14")) == pytest.approx(live / 2)
    settings.prices = {"house-model": {"input": 1.0, "cached_input": 0.5, "output": 2.0,
                                       "batch": {"input": 0.8, "cached_input": 0.4, "output": 1.0}}}
    try:
        assert used.cost(batch_model("house-model")) == pytest.approx(1.8) and used.cost("house-model") == pytest.approx(3.0)
        with pytest.raises(Exception, match="batch must give input, cached_input, output"):
            settings.prices = {"bad": {"input": 1.0, "cached_input": 0.5, "output": 2.0, "batch": {"input": -1}}}
    finally:
        settings.prices = {}
