"""`--batch` on `--filter`, `--classify` and `--reduce`'s first round, against the loopback Batch API."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from nano_magic.map_batch import BatchPending
from nano_magic.verbs import ClassifyResult, FilterResult, ReduceResult
from tests.support.batch_server import BatchServer

TICKETS = pd.DataFrame({"text": ["The parcel came late.", "Charged twice.", "Five stars.", "Late again, box crushed."]},
                       index=[101, 102, 103, 104])
SUMMARY = "Late parcels and a double charge."


def prompt_of(body: dict[str, Any]) -> str:
    return str((body.get("messages") or body.get("input"))[-1]["content"])


def answer(body: dict[str, Any]) -> str:
    """Yes for a late ticket, a label by keyword, and a fixed summary for a reduce's chunks and combines."""
    shape = json.dumps(body.get("response_format") or {})
    text = prompt_of(body).split("? ", 1)[-1]  # the row, after the question
    if "yes_or_no" in shape:
        return json.dumps({"answer": "late" in text.lower()})
    if '"label"' in shape:
        return json.dumps({"label": "billing" if "charged" in text.lower() else "delivery"})
    return SUMMARY


@pytest.fixture
def settings(ip):
    ip.user_ns["tickets"] = TICKETS
    for name in ("late", "topic"):
        ip.user_ns.pop(name, None)
    return ip.magics_manager.registry["NanoMagics"]


def test_filter_and_classify_submit_then_collect_what_a_live_run_gives(run, ip, settings) -> None:
    with BatchServer(answer=answer, manual=True) as server:
        settings.base_url = server.base_url
        submitted = run("%%nano --filter tickets --batch --out late -m gpt-4.1-nano --max-tokens 20\nIs this late? {text}")
        assert not submitted.failed, submitted.shown
        assert "Estimate at the batch price: 4 requests to send" in submitted.stdout
        assert "Submitted 1 batch: 4 requests" in submitted.stdout and "late" not in ip.user_ns
        assert isinstance(ip.user_ns["_nano"], BatchPending) and server.live == []
        body = json.loads(server.uploads[0][1].decode().splitlines()[0])["body"]
        assert "yes_or_no" in json.dumps(body["response_format"]), "the batch asks the filter's strict boolean schema"

        server.advance(5)
        collected = run("%%nano --filter tickets --batch --out late -m gpt-4.1-nano --max-tokens 20\nIs this late? {text}")
        assert not collected.failed, collected.shown
        assert "4 of 4 items answered" in collected.stdout
        assert ip.user_ns["late"].index.tolist() == [101, 104]
        kept = ip.user_ns["_nano"]
        assert isinstance(kept, FilterResult) and kept.answers.tolist() == [True, False, False, True]
        assert kept.cost is not None and kept.cost == pytest.approx(kept.usage.cost("gpt-4.1-nano (batch)"))

        classify = "%%nano --classify tickets --labels delivery,billing --batch --out topic -m gpt-4.1-nano --max-tokens 20\nTopic? {text}"
        assert "Submitted 1 batch: 4 requests" in run(classify).stdout
        server.advance(5)
        labelled = run(classify)
        assert not labelled.failed, labelled.shown
        topic = ip.user_ns["topic"]
        assert topic.tolist() == ["delivery", "billing", "delivery", "delivery"] and list(topic.cat.categories) == ["delivery", "billing"]
        assert isinstance(ip.user_ns["_nano"], ClassifyResult)
        assert server.live == [] and len(server.uploads) == 2, "no row went live, and collecting uploaded nothing again"


def test_reduce_batches_its_first_round_and_combines_live(run, ip, settings) -> None:
    ip.user_ns["many"] = pd.DataFrame({"text": [f"ticket {i}: the parcel number {i} came late" for i in range(60)]})
    cell = "%%nano --reduce many --chunk-tokens 300 --batch -m gpt-4.1-nano --max-tokens 30\nList the complaints.\n- {text}"
    with BatchServer(answer=answer, manual=True) as server:
        settings.base_url = server.base_url
        submitted = run(cell)
        assert not submitted.failed, submitted.shown
        assert "(round 1 at the batch price; the combine rounds run live): round 1:" in submitted.stdout
        chunks = len(server.uploads[0][1].decode().splitlines())
        assert chunks > 2 and f"Submitted 1 batch: {chunks} requests" in submitted.stdout
        assert server.live == [] and isinstance(ip.user_ns["_nano"], BatchPending)

        server.advance(5)
        collected = run(cell)
        assert not collected.failed, collected.shown
        result = ip.user_ns["_nano"]
        assert isinstance(result, ReduceResult) and result.text == SUMMARY
        assert result.rounds[0] == [SUMMARY] * chunks, "the first round's answers came from the batch"
        assert server.live and all("Part 1:" in prompt_of(body) for body in server.live), "only the combine rounds went live"
        assert len(server.uploads) == 1


def test_what_batch_cannot_do_is_said_in_one_line_and_sends_nothing(run, ip, settings) -> None:
    ip.user_ns["few"] = ["a", "b"]
    with BatchServer(answer=answer) as server:
        settings.base_url = server.base_url
        cases = {
            "%%nano --reduce few --batch -m gpt-4.1-nano\nSum up:\n- {item}": "these rows fit in one request: run it without --batch.",
            "%%nano --filter tickets --batch --sample 2 -m gpt-4.1-nano\nLate? {text}": "--sample previews a live run: it does not go with --batch.",
            "%%nano --classify tickets --labels a,b --wait -m gpt-4.1-nano\nTopic? {text}": "--wait waits for batches: use it with --batch.",
        }
        for cell, line in cases.items():
            shown = run(cell)
            assert line in shown.shown and "Traceback" not in shown.shown, shown.shown
        assert server.uploads == [] and server.live == []
