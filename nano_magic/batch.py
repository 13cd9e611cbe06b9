"""`--map` and `Chat.map`: one one-shot request per item, paced to the provider's limits, cached, resumable."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .cache import AnswerCache, request_key
from .client import AsyncClient, AttemptFailed, Completion, backoff
from .gate import MAP_LABEL, Gate, Hold
from .images import Picture, image_fields, picture_from, user_message
from .jsontext import answer_json
from .limiter import MAX_WAIT, Limiter, TooLarge
from .loops import on_worker_loop
from .progress import Tally, open_bar
from .schema import OutputSchema, SchemaError
from .template import BadInput, Items, Template, items_of
from .tokens import estimate_request, exact_counts
from .usage import Usage, batch_model, max_output_for
from .wire import Options, Request, build_request

__all__ = ["BadInput", "MapPlan", "MapResult", "plan_map", "estimate_jobs", "run_map", "arun_map", "describe_requests", "result_from"]

SHOWN_FAILURES = 3
NOT_SENT = "Not sent: it would have passed the budget cap."
DTYPES = {"string": "string", "integer": "Int64", "number": "Float64", "boolean": "boolean"}  # nullable: failed rows stay <NA>


@dataclass(slots=True)
class _Job:
    """One distinct request still to send, and how many rows share its answer."""

    key: str
    prompt: str
    tokens: int
    rows: int
    pictures: tuple[Picture, ...] = ()


@dataclass
class MapPlan:
    """Everything decided before a request is sent: the requests, what the cache holds, and the estimate."""

    gate: Gate
    items: Items
    template: Template
    model: str
    system: str | None
    options: Options
    schema: OutputSchema | None
    keys: list[str]
    cached: dict[str, tuple[str, Usage | None]]
    jobs: list[_Job]
    concurrency: int = 8
    input_tokens: int = 0
    output_mean: float | None = None  # output tokens per request measured on a sample, when there was one
    cache: AnswerCache | None = field(default=None, repr=False)
    estimated: bool = False
    batch_price: bool = False  # the estimate's dollars at the Batch API's price (`--batch`)
    pictures: list[tuple[Picture, ...]] = field(default_factory=list, repr=False)  # each row's, from `{image:column}`

    def request(self, prompt: str, pictures: tuple[Picture, ...] = ()) -> Request:
        """The request for one item's prompt and pictures."""
        return build_request(self.gate.backend, self.model, self.system, [user_message(prompt, pictures, self.options.api)],
                             self.options, schema=self.schema)

    def first_requests(self, count: int = 2) -> list[Request]:
        """The first requests that would be sent."""
        return [self.request(job.prompt, job.pictures) for job in self.jobs[:count]]

    @property
    def cached_rows(self) -> int:
        """Rows whose answer is already in the cache."""
        return len(self.keys) - sum(job.rows for job in self.jobs)

    @property
    def rows(self) -> int:
        """Rows (or items) the plan covers."""
        return len(self.keys)

    def output_bound(self) -> tuple[float | None, str]:
        """Output tokens per request the estimate assumes, and where that bound comes from."""
        if self.options.max_tokens:
            return self.options.max_tokens, f"--max-tokens {self.options.max_tokens:,}"
        if self.output_mean is not None:
            return self.output_mean, f"{self.output_mean:,.1f} output tokens a request, the sample's measured mean"
        return None, "output not bounded"

    @property
    def priced_as(self) -> str:
        """The model whose price the estimate uses: the batch tier of the plan's model under `--batch`."""
        return batch_model(self.model) if self.batch_price else self.model

    @property
    def input_dollars(self) -> float | None:
        """Dollars for the input of the requests to send, or None when the model has no price."""
        return Usage(self.input_tokens).cost(self.priced_as)

    @property
    def dollars(self) -> float | None:
        """Dollars for the requests to send at the output bound (input alone when output is not bounded)."""
        bound = self.output_bound()[0] or 0
        return Usage(self.input_tokens, round(bound * len(self.jobs))).cost(self.priced_as)

    def needs_yes(self, confirm_above: float) -> bool:
        """Whether the stated worst case passes `confirm_above`.

        With output not bounded the worst case has no limit, so the run asks once its input alone passes a tenth of
        `confirm_above`: at GPT-4.1 nano's prices (output 4x input) answers about 2.25 times as long as their prompts
        already make the whole run ten times its input, which open questions over short rows easily reach.
        """
        dollars = self.dollars
        if dollars is None:
            return False
        return dollars > (confirm_above if self.output_bound()[0] is not None else confirm_above / 10)

    def estimate(self) -> str:
        """One line: what the requests to send would cost at most, and the output bound that says so."""
        sent, cached, rows = len(self.jobs), self.cached_rows, self.rows
        distinct = len(set(self.keys))
        head = f"{sent:,} requests to send" + (f" ({cached:,} of {rows:,} items answered from the cache)" if cached else "")
        if distinct < rows:
            head += f" ({distinct:,} distinct requests for {rows:,} rows)"
        if not sent:
            return head + "."
        bound, source = self.output_bound()
        output = f" + up to {round(bound * sent):,} output tokens ({source})" if bound is not None else \
            " + output not bounded (set --max-tokens, or preview with --sample)"
        money = self.dollars
        priced = " (no price for this model)" if money is None else f" ≈ ${money:.4f}" + ("" if bound is not None else " for the input alone")
        how = "" if exact_counts() else " (estimated at 4 characters a token: tiktoken's o200k_base is not available)"
        return f"{head}: about {self.input_tokens:,} input tokens{output}{priced}{how}."

    def close(self) -> None:
        """Close the cache."""
        if self.cache is not None:
            self.cache.close()


def plan_map(gate: Gate, data: Any, template: str, options: Options, *, system: str | None = None, schema: OutputSchema | None = None,
             concurrency: int = 8, cache_path: str | Path | None = None, label: str = "the data", image_detail: str = "auto",
             estimate: bool = True) -> MapPlan:
    """Check the input, build every request's key, look up the cache and (with `estimate`) estimate the rest; BadInput sends nothing."""
    if concurrency < 1:
        raise BadInput(f"--concurrency {concurrency} must be at least 1.")
    items = items_of(data, label)
    text, columns = image_fields(template.strip(), items.names)
    compiled = Template(text, items.names)
    if not compiled.fields and not columns and len(items) > 1:
        names = ", ".join("{%s}" % n for n in items.names)
        raise BadInput(f"The template has no placeholder, so every request would be the same; use one of {names}.")
    model = gate.model_for(options.model)
    plan = MapPlan(gate, items, compiled, model, system, options, schema, [], {}, [], concurrency)
    url = plan.request("").url
    for number, row in enumerate(items.rows()):  # a picture that cannot be read stops the plan: nothing is sent
        plan.pictures.append(tuple(picture_from(row[i], f"{{image:{items.names[i]}}} of item {number}", image_detail) for i in columns))
        plan.keys.append(request_key(url, plan.request(compiled.render(row), plan.pictures[-1]).body))
    if cache_path is not None:
        try:
            plan.cache = AnswerCache(cache_path)
            plan.cached = {key: (text, usage) for key, text, usage in plan.cache.found(plan.keys)}
        except (sqlite3.Error, OSError) as exc:
            plan.close()
            raise BadInput(f"The answer cache {cache_path} cannot be read ({type(exc).__name__}: {exc}); "
                           "turn it off with --no-cache (cache=False) or choose another NanoMagics.cache_path.") from None
    _plan_jobs(plan)
    if estimate:
        estimate_jobs(plan)
    return plan


def _plan_jobs(plan: MapPlan) -> None:
    """The distinct requests the cache cannot answer, in input order."""
    counts = Counter(key for key in plan.keys if key not in plan.cached)
    seen: set[str] = set()
    bound = plan.options.max_tokens or 0
    for key, row, pictures in zip(plan.keys, plan.items.rows(), plan.pictures):
        if key in plan.cached or key in seen:
            continue
        seen.add(key)
        plan.jobs.append(_Job(key, plan.template.render(row), bound, counts[key], pictures))


def estimate_jobs(plan: MapPlan) -> MapPlan:
    """Count each request's input tokens, once (a --batch collect needs none)."""
    if plan.estimated:
        return plan
    bound = plan.options.max_tokens or 0
    for job in plan.jobs:
        estimate = estimate_request(plan.request(job.prompt, job.pictures).body, plan.model, bound)
        plan.input_tokens += estimate.input_tokens
        job.tokens = estimate.input_tokens + bound
    plan.estimated = True
    return plan


@dataclass
class MapResult:
    """The answers of a `--map` run on the input's index, its failures, and what it cost."""

    answers: Any
    failed: Any
    table: Any
    usage: Usage
    model: str
    elapsed: float
    cached: int
    throttled: int
    stopped: bool = False
    warning: str | None = None
    status: Any = None  # per item: answered, cached, failed, or budget (not sent: the next item would have passed the cap)
    capped: str = ""  # one line when the budget stopped the run
    distinct: int = 0
    output_mean: float | None = None
    whole: str | None = None  # after a sample: the estimate for the whole input

    @property
    def cost(self) -> float | None:
        """Dollars for the requests this run sent, or None when the model has no price."""
        return self.usage.cost(self.model)

    @property
    def done(self) -> int:
        """Items that have an answer."""
        return len(self.answers) - int(self.answers.isna().sum())

    def summary(self, capped: bool = True) -> str:
        """One line: how many answered, from the cache, failed; tokens, cost, time and 429s; then the failures and the cap's line."""
        total, failed, done = len(self.answers), len(self.failed), self.done
        parts = [f"{done:,} of {total:,} items answered" + (f" ({self.cached:,} from the cache)" if self.cached else "")]
        if 0 < self.distinct < total:
            parts.append(f"{self.distinct:,} distinct requests for {total:,} rows")
        if failed:
            parts.append(f"{failed:,} failed")
        parts.append(f"{self.usage.input_tokens:,} in · {self.usage.output_tokens:,} out tokens")
        if self.cost is not None:
            parts.append(f"${self.cost:.4f}")
        parts += [f"{self.elapsed:.1f} s", f"{self.throttled:,} × 429"] + (["stopped by you"] if self.stopped else [])
        line = " · ".join(parts)
        shown = [f"  {label}: {error}" for label, error in list(self.failed.items())[:SHOWN_FAILURES] if error != NOT_SENT]
        more = [f"  … and {failed - SHOWN_FAILURES:,} more in _nano.failed"] if failed > SHOWN_FAILURES else []
        return "\n".join([line, *shown, *more, *([self.warning] if self.warning else []), *([self.capped] if self.capped and capped else [])])

    def __repr__(self) -> str:
        return self.summary()


class _Run:
    """One run's shared state: answers and failures by request key, and the live tally."""

    def __init__(self, plan: MapPlan, tally: Tally, poke: Callable[[], None]) -> None:
        self.plan = plan
        self.tally = tally
        self.poke = poke
        self.answers: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.outputs: list[int] = []  # output tokens of each answer received, for a sample's measured mean
        self.not_cached = 0
        self.cache_error = ""
        self.unsent: set[str] = set()  # not sent: the budget cap was reached
        self.kept: list[tuple[str, str, str, Usage | None]] | None = None  # answers to cache at once, when set

    def answered(self, job: _Job, completion: Completion) -> None:
        if completion.usage is not None:
            self.tally.usage = self.tally.usage + completion.usage
            self.outputs.append(completion.usage.output_tokens)
        error: str | None
        if completion.refusal:
            value, error = None, f"The model refused: {' '.join(completion.refusal.split())}"
        elif completion.finish_reason == "length":
            value, error = None, "The answer hit the token limit and is cut short (raise --max-tokens)."
        elif completion.finish_reason == "content_filter":
            value, error = None, "The provider's content filter stopped the answer."
        else:
            value, error = _interpret(completion.text, self.plan)
        if error is not None:
            self.failed(job, error)
            return
        self.answers[job.key] = value  # kept first: a cache that cannot write loses no answer
        if self.kept is not None:
            self.kept.append((job.key, completion.text, self.plan.model, completion.usage))
        elif self.plan.cache is not None:
            try:
                self.plan.cache.put(job.key, completion.text, self.plan.model, completion.usage)
            except (sqlite3.Error, OSError) as exc:  # disk full, database locked: said once, in the summary
                self.not_cached += 1
                self.cache_error = self.cache_error or " ".join(f"{type(exc).__name__}: {exc}".split())
        self.tally.done += job.rows
        self.poke()

    def waiting(self, seconds: float) -> None:
        """The limiter holds requests back for `seconds`: the bar says so."""
        self.tally.waiting_until = time.monotonic() + seconds
        self.poke()

    def warning(self) -> str | None:
        """One line when answers could not be written to the cache."""
        if not self.not_cached:
            return None
        return (f"Warning: {self.not_cached:,} answers could not be written to the cache ({self.cache_error}); "
                "they are in the result, and a rerun will send them again.")

    def failed(self, job: _Job, error: str) -> None:
        self.errors[job.key] = error
        self.tally.failed += job.rows
        self.poke()

    def not_sent(self, job: _Job) -> None:
        self.unsent.add(job.key)
        self.failed(job, NOT_SENT)


def _interpret(text: str, plan: MapPlan) -> tuple[Any, str | None]:
    """An answer as the result holds it: text, parsed JSON, or the schema's validated value; or why it is not valid."""
    if plan.schema is not None:
        try:
            return plan.schema.parse(text), None
        except SchemaError as exc:
            return None, f"The answer does not fit the schema {plan.schema.name}: {(str(exc).splitlines() or ['?'])[0]}."
    if plan.options.json:
        return answer_json(text)
    return text, None


async def _send(run: _Run, client: AsyncClient, limiter: Limiter, job: _Job, max_retries: int) -> None:
    """Hold the job's worst case against the budget, then send it until it is answered or fails for good.

    Each retry follows a failure, so none is answered twice. When the hold would pass the cap, nothing more is sent.
    """
    plan = run.plan
    bound = plan.options.max_tokens
    hold = plan.gate.hold(plan.model, job.tokens - (bound or 0), bound or max_output_for(plan.model), MAP_LABEL, strict=False)
    if hold is None:
        run.not_sent(job)
        return
    try:
        await _attempts(run, client, limiter, job, max_retries, hold)
    finally:
        hold.release()


async def _attempts(run: _Run, client: AsyncClient, limiter: Limiter, job: _Job, max_retries: int, hold: Hold) -> None:
    request = run.plan.request(job.prompt, job.pictures)
    for attempt in range(max_retries + 1):
        mark = await limiter.acquire(job.tokens)
        run.tally.concurrency = limiter.limit
        try:
            completion = await run.plan.gate.complete(client, request, hold)
        except AttemptFailed as failure:
            throttled = failure.status == 429
            await limiter.settle(mark, failure.headers, throttled=throttled, retry_after=failure.retry_after, ok=False)
            run.tally.throttled = limiter.throttled
            if not failure.retryable or attempt == max_retries:
                suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                run.failed(job, str(failure).rstrip(".") + suffix + ".")
                return
            if not throttled:  # after a 429 the limiter holds every request back for the server's wait
                await asyncio.sleep(min(MAX_WAIT, failure.retry_after) if failure.retry_after is not None else backoff(attempt))
            elif failure.retry_after is None:
                await asyncio.sleep(backoff(attempt) * random.uniform(0.5, 1.5))
            continue
        except BaseException:  # a cancel, or a bug of ours: the slot is freed all the same
            await limiter.settle(mark, None, ok=False)
            raise
        try:
            run.answered(job, completion)  # before anything else can be cancelled: an answer that arrived is kept
        finally:
            await limiter.settle(mark, completion.headers)
        return


async def _work(run: _Run, jobs: Iterator[_Job], client: AsyncClient, limiter: Limiter, max_retries: int) -> None:
    for job in jobs:  # one shared iterator: each job goes to exactly one worker
        if run.unsent:  # the cap was reached: the rest is not sent, what is in flight finishes
            run.not_sent(job)
            continue
        try:
            await _send(run, client, limiter, job, max_retries)
        except TooLarge as exc:
            run.failed(job, str(exc))
        except Exception as exc:  # noqa: BLE001  # whatever goes wrong with one item (our own bug included) fails that item alone
            run.failed(job, f"nano_magic failed on this item ({' '.join(f'{type(exc).__name__}: {exc}'.split())[:200]}).")


async def _stop_workers(workers: list[asyncio.Task[None]]) -> None:
    """Cancel the workers still running and wait for each to end, so that none runs on once the client is closed."""
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


async def arun_map(plan: MapPlan, *, progress: str = "none", refresh_rate: float = 10.0, transport: Any = None,
                   partial_on_cancel: bool = False) -> MapResult:
    """Send the plan's requests on the running loop; cancelling keeps every finished answer in the cache.

    A cancelled run raises CancelledError as asyncio expects, or with `partial_on_cancel` returns what is done.
    """
    concurrency = plan.concurrency
    try:
        plan.gate.begin_many(len(plan.keys) - plan.cached_rows, len(plan.keys))
        client = plan.gate.async_client(concurrency, transport)
    except BaseException:
        plan.close()
        raise
    tally = Tally(len(plan.keys), plan.model, done=plan.cached_rows, cached=plan.cached_rows, concurrency=concurrency)
    bar = open_bar(progress, tally, refresh_rate)
    run = _Run(plan, tally, bar.poke)
    limiter = Limiter(concurrency, output_bound=plan.options.max_tokens or 0, on_wait=run.waiting)
    stopped = False
    workers: list[asyncio.Task[None]] = []
    try:
        jobs = iter(plan.jobs)
        for _ in range(min(concurrency, len(plan.jobs))):
            workers.append(asyncio.ensure_future(_work(run, jobs, client, limiter, plan.gate.max_retries)))
        await asyncio.gather(*workers)
    except asyncio.CancelledError:
        stopped = True
        if not partial_on_cancel:
            raise
    finally:
        await _stop_workers(workers)
        await asyncio.shield(client.aclose())
        result = _result(plan, run, tally, stopped)
        bar.finish(result.summary(capped=False))  # the cap's line is the result's to show (the cell fails with it)
    return result


def run_map(plan: MapPlan, **run_options: Any) -> MapResult:
    """`arun_map` on an event loop in a worker thread, so that it works inside a running loop (ipykernel's).

    Ctrl-C (a kernel interrupt) cancels the requests in flight and returns the result so far, with `stopped` set.
    """
    return on_worker_loop(lambda: arun_map(plan, partial_on_cancel=True, **run_options), name="nano-map")


def _result(plan: MapPlan, run: _Run, tally: Tally, stopped: bool) -> MapResult:
    """The answers on the input's index (cached and new), the failures, and the totals."""
    import pandas as pd

    index = plan.items.index
    values: list[Any] = []
    outputs = list(run.outputs)
    for key in plan.keys:
        if key in plan.cached and key not in run.answers:
            text, usage = plan.cached[key]
            run.answers[key], error = _interpret(text, plan)
            if error is not None:  # the schema's own checks changed since the answer was kept
                run.errors[key] = error
            if usage is not None:  # once per distinct request, as sent
                outputs.append(usage.output_tokens)
        values.append(run.answers.get(key))
    at = [position for position, key in enumerate(plan.keys) if key in run.errors]  # by position: duplicate labels each count
    failures = pd.Series([run.errors[plan.keys[i]] for i in at], index=pd.Index(index)[at], dtype="string", name="error")
    status = pd.Series([_status(key, plan, run) for key in plan.keys], index=index, dtype="string", name="status")
    if plan.schema is not None:
        table = _schema_table(plan.schema, values, index)
        answers = pd.Series(values, index=index, dtype=object, name="answer")
    else:
        answers = pd.Series(values, index=index, dtype=object if plan.options.json else "string", name="answer")
        table = answers
    plan.close()
    mean = sum(outputs) / len(outputs) if outputs else None
    capped = ""
    if run.unsent:
        unsent = sum(job.rows for job in plan.jobs if job.key in run.unsent)
        capped = (f"Budget: {unsent:,} items were not sent, as the next would have passed the cap: {plan.gate.spent_line()}; "
                  "run it again to send only those.")
    return MapResult(answers, failures, table, tally.usage, plan.model, tally.elapsed, tally.cached, tally.throttled, stopped,
                     run.warning(), status, capped, distinct=len(set(plan.keys)), output_mean=mean)


def _status(key: str, plan: MapPlan, run: _Run) -> str:
    if key in run.unsent:
        return "budget"
    if key in run.errors:
        return "failed"
    return "answered" if key in run.answers and key not in plan.cached else "cached"


def result_from(plan: MapPlan, outcomes: Iterable[tuple[str, Completion | str]], *, model: str) -> MapResult:
    """The result of answers that came another way (the Batch API): each judged and cached as a live answer is.

    An outcome is a whole answer or the one-line reason its row failed; `model` names the price the usage is at.
    """
    tally = Tally(len(plan.keys), model, done=plan.cached_rows, cached=plan.cached_rows)
    run = _Run(plan, tally, lambda: None)
    run.kept = []
    jobs = {job.key: job for job in plan.jobs}
    for key, outcome in outcomes:
        job = jobs.get(key)
        if job is None:
            continue
        if isinstance(outcome, str):
            run.failed(job, outcome)
        else:
            run.answered(job, outcome)
    if plan.cache is not None:
        try:
            plan.cache.put_many(run.kept)
        except (sqlite3.Error, OSError) as exc:  # as for a live run: the answers stay in the result, the summary says so
            run.not_cached = len(run.kept)
            run.cache_error = " ".join(f"{type(exc).__name__}: {exc}".split())
    result = _result(plan, run, tally, False)
    result.model = model
    return result


def _schema_table(schema: OutputSchema, values: list[Any], index: Any) -> Any:
    """One column per schema field on the input's index, typed from the schema; a failed row holds missing values.

    The dtypes come from the schema rather than `convert_dtypes`, which would make a float field of whole numbers Int64.
    """
    import pandas as pd

    records = [_record(schema.dump, value) for value in values]
    types = schema.fields()
    names = list(types) or list(dict.fromkeys(name for record in records for name in record))
    columns = {}
    typed = schema.python_types()
    for name in names:
        cells = [record.get(name) for record in records]
        if name in typed:
            columns[name] = _typed_column(name, typed[name], values, schema, index)
            continue
        try:
            columns[name] = pd.Series(cells, index=index, dtype=DTYPES.get(types.get(name) or "", object))
        except (TypeError, ValueError, OverflowError):  # e.g. an integer beyond int64: kept as Python objects
            columns[name] = pd.Series(cells, index=index, dtype=object)
    return pd.DataFrame(columns, index=index)


def _record(dump: Callable[[Any], Any], value: Any) -> dict[str, Any]:
    """One answer's fields; none when it failed, or when a serializer of the user's raises (the row's cells stay missing)."""
    if value is None:
        return {}
    try:
        record = dump(value)
    except Exception:  # noqa: BLE001  # the user's own serializer: the answer is still in _nano.answers
        return {}
    return record if isinstance(record, dict) else {}


def _typed_column(name: str, kind: type, values: list[Any], schema: OutputSchema, index: Any) -> Any:
    """A datetime, date, Decimal or Enum field as a column of that type: datetime64, dates, Decimals, or a categorical of the members."""
    import datetime
    import enum

    import pandas as pd

    cells = [_record(schema.dump_python, value).get(name) for value in values]
    if issubclass(kind, datetime.datetime):
        return pd.Series(pd.to_datetime(pd.Series(cells, dtype=object), utc=any(getattr(c, "tzinfo", None) for c in cells)).array, index=index)
    if issubclass(kind, enum.Enum):  # members, also where the model keeps only their values (use_enum_values)
        members = {member.value: member for member in kind}
        cells = [c if c is None or isinstance(c, kind) else members.get(c) for c in cells]
        return pd.Series(pd.Categorical(cells, categories=list(kind)), index=index)
    return pd.Series(cells, index=index, dtype=object)  # date and Decimal: pandas has no such dtype, so the values stay themselves


def describe_requests(plan: MapPlan) -> str:
    """The first two requests, secrets masked, for --dry-run."""
    return "\n\n".join(request.describe() for request in plan.first_requests())

