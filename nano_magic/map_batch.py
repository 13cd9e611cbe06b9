"""`--batch`: a `--map` plan's requests sent to the provider's Batch API at the batch price, collected by the same call run again.

One step (`BatchRun.step`) does what the records call for: submit the requests no batch holds yet, or check the
batches that hold them, and once every one has ended, collect them into the cache and the result of a live run.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .batch import MapPlan, MapResult, estimate_jobs, result_from
from .batch_records import BatchRecord, BatchRecords
from .client import Client, Completion
from .errors import NanoError
from .loops import on_worker_loop
from .progress import Tally, open_bar
from .provider_batch import (
    MAX_REQUESTS,
    TERMINAL,
    check_offered,
    counts,
    endpoint_for,
    progress_line,
    read_results,
    refusal_lines,
    retrieve,
    unavailable,
    upload_and_create,
    write_parts,
)
from .tokens import Estimate, exact_counts
from .usage import Usage, batch_model, max_output_for
from .wire import Request

__all__ = ["BatchPending", "BatchRun", "run_batch", "arun_batch", "at_batch_price", "AGAIN_CELL", "AGAIN_CALL"]

AGAIN_CELL = "Run this cell again to collect."
AGAIN_CALL = "Call Chat.map again with the same arguments to collect."
FIRST_POLL = 1.0  # seconds before the first check while waiting; each next wait is 1.5 times longer, up to LAST_POLL
LAST_POLL = 30.0


@dataclass
class BatchPending:
    """Batches still running, or just submitted: one line each, and what to do next."""

    batches: list[BatchRecord]
    lines: list[str]
    note: str
    submitted: bool = False
    stopped: bool = False

    @property
    def requests(self) -> int:
        """Requests in these batches."""
        return sum(b.total for b in self.batches)

    def summary(self) -> str:
        """The lines and the note."""
        return "\n".join([*self.lines, self.note])

    def __repr__(self) -> str:
        return self.summary()


def at_batch_price(plan: MapPlan) -> MapPlan:
    """Estimate the plan at the batch price (its `dollars`), for the estimate line and the confirm check."""
    estimate_jobs(plan)
    plan.batch_price = True
    return plan


@dataclass
class BatchRun:
    """One `--batch` call over a plan: the provider, the records, and what to say."""

    plan: MapPlan
    label: str
    max_requests: int = MAX_REQUESTS
    again: str = AGAIN_CELL
    confirm: Callable[[MapPlan], None] | None = None  # called once just before a submission: may refuse it
    say: Callable[[str], None] = print
    records: BatchRecords = field(init=False)
    client: Client = field(init=False)
    busy: threading.Lock = field(init=False, default_factory=threading.Lock)  # a step in a worker thread ends before close
    waited: bool = field(init=False, default=False)  # a progress bar showed the end, summary included

    def __post_init__(self) -> None:
        if self.plan.cache is None:
            raise NanoError("--batch needs the answer cache, which keeps the batches and their answers: drop --no-cache.")
        reason = unavailable(self.plan.gate.backend)
        if reason is not None:
            raise NanoError(reason)
        self.max_requests = max(1, min(self.max_requests, MAX_REQUESTS))
        self.client = self.plan.gate.batch_client()  # the off switch and a bad budget refuse here
        self.records = BatchRecords(self.plan.cache.path)

    def close(self) -> None:
        """Close the records and the plan's cache, once a step still running (a wait that was stopped) has ended."""
        with self.busy:
            self.records.close()
            self.plan.close()

    def step(self) -> MapResult | BatchPending:
        """Submit what no batch holds, or check the batches that hold it and collect them once all have ended."""
        with self.busy:
            return self._step()

    def _step(self) -> MapResult | BatchPending:
        outstanding = self.records.outstanding(self.client.backend.base_url, [job.key for job in self.plan.jobs])
        if outstanding:
            return self._check(outstanding)
        if not self.plan.jobs:
            return result_from(self.plan, [], model=batch_model(self.plan.model))
        return self._submit()

    def worst_case(self) -> Estimate:
        """The most the whole submission can cost at the batch price: counted input, every answer at its longest."""
        plan = self.plan
        bound = plan.options.max_tokens or max_output_for(plan.model)
        usage = Usage(plan.input_tokens, bound * len(plan.jobs))
        return Estimate(usage.input_tokens, usage.output_tokens, usage.cost(batch_model(plan.model)), exact_counts())

    def _submit(self) -> BatchPending:
        plan, client = self.plan, self.client
        check_offered(client)
        at_batch_price(plan)
        if self.confirm is not None:
            self.confirm(plan)
        worst = self.worst_case()
        plan.gate.reserve_batch(worst, self.records.reserved())  # the whole submission, before anything is uploaded
        share = (worst.dollars or 0.0) / max(len(plan.jobs), 1)
        endpoint = endpoint_for(plan.options.api)
        created: list[BatchRecord] = []
        try:
            with tempfile.TemporaryDirectory(prefix="nano-batch-") as folder:
                for part in write_parts(self._requests(), Path(folder), self.max_requests):
                    try:
                        batch = upload_and_create(client, part, endpoint, self.label)
                    finally:
                        part.path.unlink(missing_ok=True)
                    completed, failed = counts(batch)
                    record = BatchRecord(batch["id"], self.label, plan.model, client.backend.base_url, endpoint,
                                         str(batch.get("status") or "validating"), len(part.custom_ids), completed, failed,
                                         time.time(), share * len(part.custom_ids), None, None)
                    self.records.record(record, part.custom_ids)
                    created.append(record)
        except NanoError as exc:
            if not created:
                raise
            ids = ", ".join(r.id for r in created)
            raise NanoError(f"{str(exc).rstrip('.')}. Batches {ids} were submitted before that and are kept: {self.again}") from None
        money = f"≈ ${plan.dollars:.4f} at the batch price" if plan.dollars is not None else "no price for this model"
        unbounded = "" if plan.options.max_tokens else " for the input (the output is not bounded: set --max-tokens)"
        lines = [f"Submitted {len(created)} batch{'es' if len(created) > 1 else ''}: {len(plan.jobs):,} requests, {money}{unbounded}.",
                 *(f"  {r.id} ({r.total:,} requests)" for r in created)]
        return BatchPending(created, lines, f"{self.again[:-1]} (--wait waits for them).", submitted=True)

    def _requests(self) -> Iterator[tuple[str, Request]]:
        """(custom id, request) for each distinct request without an answer: the custom id is the request's cache key."""
        for job in self.plan.jobs:
            yield job.key, self.plan.request(job.prompt, job.pictures)

    def _check(self, outstanding: list[BatchRecord]) -> MapResult | BatchPending:
        seen: dict[str, dict[str, Any]] = {}
        for record in outstanding:
            batch = retrieve(self.client, record.id)
            record.status = str(batch.get("status") or record.status)
            record.completed, record.failed = counts(batch)
            self.records.update(record.id, record.status, record.completed, record.failed)
            seen[record.id] = batch
        if any(record.status not in TERMINAL for record in outstanding):
            now = time.time()
            return BatchPending(outstanding, [progress_line(r, now) for r in outstanding], f"Not done yet. {self.again}")
        return self._collect(outstanding, seen)

    def _collect(self, ended: list[BatchRecord], seen: dict[str, dict[str, Any]]) -> MapResult:
        plan = self.plan
        wanted = {job.key for job in plan.jobs}
        outcomes: dict[str, Completion | str] = {}
        others: list[tuple[str, str, str, Usage | None]] = []  # answers to requests of another cell that shared a batch
        costs: dict[str, float] = {}
        for record in ended:
            batch = seen[record.id]
            items = self.records.items(record.id)
            if record.status == "failed":
                for line in refusal_lines(batch, self.max_requests, self.client.backend):
                    self.say(line)
                reason = f"Batch {record.id} failed validation (see above); run the cell again to resubmit it."
                outcomes.update((cid, reason) for cid in items if cid in wanted)
                continue
            mine = set(items)
            spent = Usage()
            for outcome in read_results(self.client, batch, plan.options.api):
                cid = outcome.custom_id
                if cid not in mine:
                    continue
                if outcome.completion is not None:
                    spent = spent + (outcome.completion.usage or Usage())
                    if outcome.completion.usage is not None:
                        plan.gate.charge_batch(batch_model(plan.model), outcome.completion.usage)
                    if cid in wanted:
                        outcomes[cid] = outcome.completion
                    elif not outcome.completion.refusal and outcome.completion.finish_reason != "length":
                        others.append((cid, outcome.completion.text, plan.model, outcome.completion.usage))
                elif not outcome.unfinished and cid in wanted:
                    outcomes[cid] = outcome.error or "The provider gave no reason."
            unfinished = [cid for cid in items if cid in wanted and cid not in outcomes]
            if unfinished:
                self.say(f"Batch {record.id} {record.status} with {len(unfinished):,} requests unfinished; they are listed in "
                         f"_nano.failed, and the next run resubmits only them.")
                reason = f"Not finished: batch {record.id} {record.status} first; run the cell again to resubmit it."
                outcomes.update((cid, reason) for cid in unfinished)
            costs[record.id] = spent.cost(batch_model(plan.model)) or 0.0
        for job in plan.jobs:
            if job.key not in outcomes:
                outcomes[job.key] = "Not in the batches collected now (added since they were submitted); run the cell again to submit it."
        if others and plan.cache is not None:
            plan.cache.put_many(others)
        result = result_from(plan, outcomes.items(), model=batch_model(plan.model))
        for record in ended:  # only once every answer is in the cache
            self.records.collect(record.id, costs.get(record.id, 0.0))
        return result


def run_batch(run: BatchRun, *, wait: bool = False, progress: str = "none", refresh_rate: float = 10.0) -> MapResult | BatchPending:
    """One step; with `wait`, poll until every batch has ended (Ctrl-C stops waiting and leaves them running)."""
    try:
        outcome = run.step()
        if not wait or isinstance(outcome, MapResult):
            return outcome
        if outcome.submitted:
            run.say(outcome.summary())
        return on_worker_loop(lambda: _wait(run, outcome, progress, refresh_rate), name="nano-batch")
    finally:
        run.close()


async def arun_batch(run: BatchRun, *, wait: bool = False, progress: str = "none", refresh_rate: float = 10.0) -> MapResult | BatchPending:
    """`run_batch` on the running event loop; cancelling the wait leaves the batches running."""
    try:
        outcome = await asyncio.to_thread(run.step)
        if not wait or isinstance(outcome, MapResult):
            return outcome
        if outcome.submitted:
            run.say(outcome.summary())
        return await _wait(run, outcome, progress, refresh_rate)
    finally:
        run.close()


async def _wait(run: BatchRun, outcome: BatchPending, progress: str, refresh_rate: float) -> MapResult | BatchPending:
    """Poll at a bounded, growing interval, with the progress bar, until the batches are collected or the wait is stopped."""
    plan = run.plan
    tally = Tally(len(plan.keys), batch_model(plan.model), done=plan.cached_rows, cached=plan.cached_rows)
    bar = open_bar(progress, tally, refresh_rate)
    run.waited = progress != "none"
    interval = FIRST_POLL
    current: MapResult | BatchPending = outcome
    try:
        while isinstance(current, BatchPending):
            tally.done = plan.cached_rows + sum(b.completed for b in current.batches)
            tally.failed = sum(b.failed for b in current.batches)
            bar.poke()
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, LAST_POLL)
            current = await asyncio.to_thread(run.step)
    except asyncio.CancelledError:
        pending = outcome if isinstance(current, MapResult) else current
        stopped = BatchPending(pending.batches, [progress_line(b) for b in pending.batches],
                               f"Stopped waiting; the batches keep running at the provider. {run.again}", stopped=True)
        bar.finish(stopped.summary())
        return stopped
    bar.finish(current.summary())
    return current
