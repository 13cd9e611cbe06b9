"""Data verbs over many rows on `--map`'s plan and run: filter, classify, reduce, and a preview on a sample."""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .batch import MapPlan, MapResult, plan_map
from .images import image_fields
from .schema import OutputSchema
from .template import BadInput, Template, items_of
from .tokens import MESSAGE_OVERHEAD, count_tokens, cut_tokens
from .usage import Usage
from .wire import Options

if TYPE_CHECKING:
    from .gate import Gate

__all__ = [
    "DEFAULT_CHUNK_TOKENS",
    "REDUCE_THREAD",
    "ClassifyResult",
    "FilterResult",
    "ReduceResult",
    "ReduceRun",
    "Reducer",
    "RowsRun",
    "Said",
    "VerbResult",
    "arun_rounds",
    "classify_result",
    "classify_schema",
    "combine_requests",
    "filter_result",
    "filter_schema",
    "labels_from",
    "plan_reduce",
    "plan_rows",
    "reduce_estimate",
    "reduce_rounds",
    "run_rounds",
    "take_sample",
    "whole_estimate",
]

class Said(Protocol):
    """What a reduce keeps of its last answer (a `chat.Answer`)."""

    text: str
    model: str
    usage: Usage | None
    requests: int


# 4,000 tokens fit the smallest context windows in common use (8k: llama.cpp's usual setting, many local models) with
# room for the instruction and the answer, and a partial answer over a few thousand tokens stays faithful to its rows.
DEFAULT_CHUNK_TOKENS = 4_000
COMBINE = "These are partial answers to the request above, from consecutive parts of the rows, in order. Combine them into one answer."
CUT_NOTE = " […cut: longer than a chunk]"
MIN_ROOM = 16  # tokens a chunk must leave for rows after the instruction


def filter_schema() -> OutputSchema:
    """The strict schema of a yes/no decision: `{"answer": true}` or `{"answer": false}`."""
    return _one_field("yes_or_no", "answer", bool)


def classify_schema(labels: list[str]) -> OutputSchema:
    """The strict schema of one label out of `labels`: `{"label": "..."}`."""
    from typing import Literal

    return _one_field("label", "label", Literal[tuple(labels)])


def _one_field(name: str, key: str, kind: Any) -> OutputSchema:
    """A pydantic model of one required field in strict mode (a JSON true, not "yes"), as the run's schema."""
    from pydantic import ConfigDict, create_model

    fields: dict[str, Any] = {key: (kind, ...)}
    model = create_model(name, __config__=ConfigDict(strict=True), **fields)
    return OutputSchema.from_object(model, name)


def labels_from(value: Any, name: str = "--labels") -> list[str]:
    """Labels from a comma list, a list or tuple of strings, or an Enum (its string values, else its names)."""
    if isinstance(value, str):
        labels = [part.strip() for part in value.split(",")]
    elif isinstance(value, type) and issubclass(value, enum.Enum):
        members = list(value)
        labels = [m.value if isinstance(m.value, str) else m.name for m in members]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        labels = [v.strip() for v in value]
    else:
        raise BadInput(f"{name}: use a comma list, or a list, tuple or Enum of strings (not a {type(value).__name__}).")
    if any(not label for label in labels):
        raise BadInput(f"{name}: a label is empty.")
    if len(set(labels)) != len(labels):
        raise BadInput(f"{name}: a label is given twice.")
    if len(labels) < 2:
        raise BadInput(f"{name}: give at least two labels to choose from.")
    return labels


def take_sample(data: Any, size: int, seed: int | None, label: str = "the data") -> Any:
    """`size` rows of `data` picked at random with `seed` (reproducibly), in input order, as the same kind of collection."""
    if size < 1:
        raise BadInput(f"--sample {size} must be at least 1.")
    total = len(items_of(data, label))
    if size >= total:
        return data
    positions = sorted(random.Random(seed).sample(range(total), size))
    if hasattr(data, "iloc"):
        return data.iloc[positions]
    if isinstance(data, dict):
        keys = list(data)
        return {keys[p]: data[keys[p]] for p in positions}
    return type(data)(data[p] for p in positions)


def whole_estimate(plan: MapPlan, sample: MapResult) -> str:
    """The estimate for the whole input, its output bounded by --max-tokens or else by the sample's measured mean."""
    plan.output_mean = sample.output_mean
    try:
        return f"Estimate for all {plan.rows:,} rows: {plan.estimate()}"
    finally:
        plan.close()


@dataclass
class VerbResult:
    """What every verb's result tells besides its answers: the run, its failures, tokens, cost and time."""

    run: MapResult = field(repr=False)

    @property
    def failed(self) -> Any:
        """Each failed row's error, on the input's index."""
        return self.run.failed

    @property
    def usage(self) -> Usage:
        """Tokens of the requests this run sent."""
        return self.run.usage

    @property
    def cost(self) -> float | None:
        """Dollars for the requests this run sent, or None when the model has no price."""
        return self.run.cost

    @property
    def stopped(self) -> bool:
        """Whether an interrupt stopped the run."""
        return self.run.stopped

    @property
    def whole(self) -> str | None:
        """After a sample: the estimate for the whole input."""
        return self.run.whole

    def summary(self) -> str:
        """The run's summary."""
        return self.run.summary()

    def __repr__(self) -> str:
        return self.summary()


@dataclass(repr=False)
class FilterResult(VerbResult):
    """`kept`: the input's rows answered true, in input order with their index; `answers`: every row's decision."""

    kept: Any = None
    answers: Any = None

    def summary(self) -> str:
        """`kept K of N`, then the run's summary."""
        return f"kept {int(self.answers.sum()):,} of {len(self.answers):,} · " + self.run.summary()


@dataclass(repr=False)
class ClassifyResult(VerbResult):
    """`answers`: a Categorical Series on the input's index whose categories are exactly the labels."""

    answers: Any = None

    def counts(self) -> Any:
        """Rows per label, in the labels' order, zeros included."""
        counts = self.answers.value_counts(sort=False)
        counts.index.name, counts.name = "label", "rows"
        return counts


def filter_result(data: Any, result: MapResult) -> FilterResult:
    """The rows answered true, from a run with `filter_schema`."""
    import pandas as pd

    decisions = pd.Series(result.table["answer"], name="keep")
    keep = decisions.fillna(False).to_numpy(dtype=bool)
    if hasattr(data, "iloc"):
        kept = data.iloc[keep.nonzero()[0]]
    elif isinstance(data, dict):
        kept = {key: value for (key, value), chosen in zip(data.items(), keep) if chosen}
    else:
        kept = type(data)(value for value, chosen in zip(data, keep) if chosen)
    return FilterResult(result, kept, decisions)


def classify_result(labels: list[str], result: MapResult) -> ClassifyResult:
    """The labels as a Categorical Series, from a run with `classify_schema`."""
    import pandas as pd

    column = result.table["label"]
    values = pd.Categorical(column.astype(object).where(column.notna(), None), categories=labels)
    return ClassifyResult(result, pd.Series(values, index=column.index, name="label"))


@dataclass(repr=False)
class ReduceResult:
    """One answer from all rows: `text`, each round's partial answers in `rounds`, and the totals over every round."""

    text: str
    rounds: list[list[str]]
    usage: Usage
    requests: int
    model: str
    failed: Any
    cut: int = 0
    stopped: bool = False
    answer: Said | None = None
    whole: str | None = None

    @property
    def cost(self) -> float | None:
        """Dollars over every round, or None when the model has no price."""
        return self.usage.cost(self.model)

    def summary(self) -> str:
        """Rounds, requests, tokens, cost, and what went wrong."""
        parts = [f"{len(self.rounds)} rounds", f"{self.requests:,} requests",
                 f"{self.usage.input_tokens:,} in · {self.usage.output_tokens:,} out tokens"]
        if (cost := self.cost) is not None:
            parts.append(f"${cost:.4f}")
        if self.cut:
            parts.append(f"{self.cut:,} rows cut to fit a chunk")
        if len(self.failed):
            parts.append(f"{len(self.failed):,} chunks failed")
        return " · ".join(parts + (["stopped by you"] if self.stopped else []))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.summary()

    def _repr_markdown_(self) -> str:
        from .render import to_markdown

        return to_markdown(self.text)


class Reducer:
    """A map-reduce over rows in rounds: rows packed into chunks, then partial answers combined until one remains."""

    def __init__(self, data: Any, template: str, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, label: str = "the data") -> None:
        if chunk_tokens < 1:
            raise BadInput(f"--chunk-tokens {chunk_tokens} must be at least 1.")
        items = items_of(data, label)
        self.rows = len(items)
        if image_fields(template, items.names)[1]:
            raise BadInput("--reduce sends text: {image:column} works with --map, --filter and --classify.")
        lines = template.strip().splitlines()
        filled = [i for i, line in enumerate(lines) if Template(line, items.names).fields]
        if not filled and len(items) > 1:
            names = ", ".join(f"{{{n}}}" for n in items.names)
            raise BadInput(f"The template has no placeholder, so no row would reach the model; put one of {names} on the row's line.")
        first, last = (filled[0], filled[-1]) if filled else (len(lines), len(lines) - 1)
        self.head, self.tail = "\n".join(lines[:first]), "\n".join(lines[last + 1:])
        self.chunk_tokens = chunk_tokens
        self.room = chunk_tokens - count_tokens(self.instruction) - 2 * MESSAGE_OVERHEAD  # for the rows of a chunk
        self.combine_room = self.room - count_tokens(COMBINE) - MESSAGE_OVERHEAD  # for the partial answers of a combine
        if self.combine_room < 2 * MIN_ROOM:
            raise BadInput(f"--chunk-tokens {chunk_tokens} leaves no room for rows after the instruction "
                           f"({chunk_tokens - self.combine_room:,} tokens with the note that combines answers): raise it.")
        row = Template("\n".join(lines[first:last + 1]), items.names)
        self.cut = 0  # rows cut to fit a chunk
        self.model = ""
        self.first_mean: float | None = None  # output tokens per request measured in the first round
        self.rounds: list[list[str]] = []
        self.usage = Usage()
        self.requests = 0
        self.failed: Any = None
        self.stopped = False
        self.unfinished: MapResult | None = None  # the round that was stopped or had failures
        self.pending = self._pack([row.render(values) for values in items.rows()], self._rows_prompt, self.room)

    @property
    def instruction(self) -> str:
        """The cell's prompt without its row lines."""
        return "\n".join(part for part in (self.head, self.tail) if part)

    @property
    def final(self) -> str | None:
        """The last round's one prompt, once the rounds are down to one."""
        return self.pending[0] if len(self.pending) == 1 else None

    def plan(self, gate: Gate, options: Options, *, system: str | None, concurrency: int, cache_path: str | Path | None) -> MapPlan:
        """The plan of the next round's requests."""
        return plan_map(gate, self.pending, "{item}", options, system=system, concurrency=concurrency, cache_path=cache_path,
                        label="the chunks")

    def took(self, result: MapResult) -> bool:
        """Take a round's partial answers and pack the next round; False when it was stopped or a chunk failed."""
        self.usage, self.requests = self.usage + result.usage, self.requests + len(result.answers) - result.cached
        self.model = result.model
        if not self.rounds:
            self.first_mean = result.output_mean
        if result.stopped or len(result.failed):
            self.failed, self.stopped, self.unfinished = result.failed, result.stopped, result
            return False
        partials = [str(text) for text in result.answers]
        self.rounds.append(partials)
        half = self.combine_room // 2 - 1  # each combine holds at least two partial answers, so every round shrinks
        parts = [f"Part {i}:\n{text}" for i, text in enumerate(partials, 1)]
        self.pending = self._pack([_cap(part, half) for part in parts], self._combine_prompt, self.combine_room)
        return True

    def result(self, answer: Said | None, text: str = "", whole: str | None = None) -> ReduceResult:
        """The result so far; `answer` is the last round's, when it was asked."""
        import pandas as pd

        usage, requests = self.usage, self.requests
        rounds = list(self.rounds)
        if answer is not None:
            usage, requests, text = usage + (answer.usage or Usage()), requests + max(answer.requests, 1), answer.text
            rounds.append([text])
            if self.first_mean is None and answer.usage is not None:
                self.first_mean = answer.usage.output_tokens
        failed = self.failed if self.failed is not None else pd.Series(dtype="string", name="error")
        model = answer.model if answer is not None else self.model
        return ReduceResult(text, rounds, usage, requests, model, failed, self.cut, self.stopped, answer, whole)

    def _rows_prompt(self, rows: list[str]) -> str:
        return "\n".join(part for part in (self.head, "\n".join(rows), self.tail) if part)

    def _combine_prompt(self, parts: list[str]) -> str:
        return "\n\n".join(part for part in (self.instruction, COMBINE, "\n\n".join(parts)) if part)

    def _pack(self, texts: list[str], prompt: Callable[[list[str]], str], room: int) -> list[str]:
        """Consecutive texts in chunks of at most `room` tokens each; a text longer than a chunk is cut with a note."""
        chunks: list[str] = []
        current: list[str] = []
        used = 0
        for text in texts:
            capped = _cap(text, room - 1)
            self.cut += capped is not text
            text = capped
            size = count_tokens(text) + 1  # the separator
            if current and used + size > room:
                chunks.append(prompt(current))
                current, used = [], 0
            current.append(text)
            used += size
        if current:
            chunks.append(prompt(current))
        return chunks


def _cap(text: str, tokens: int) -> str:
    """`text`, or its start with a note when it holds more than `tokens` tokens."""
    if count_tokens(text) <= tokens:
        return text
    return cut_tokens(text, max(tokens - count_tokens(CUT_NOTE), 1)) + CUT_NOTE


def combine_requests(reducer: Reducer, bound: float) -> int:
    """How many combine requests follow the first round at most, when every partial answer is `bound` tokens long."""
    fits = max(2, int(reducer.combine_room // (bound + MESSAGE_OVERHEAD)))
    count, requests = len(reducer.pending), 0
    while count > 1:
        count = -(-count // fits)
        requests += count
    return requests


def reduce_estimate(reducer: Reducer, plan: MapPlan) -> tuple[str, float | None]:
    """The estimate of a reduce: its first round's line and its combine rounds, and the worst-case dollars when bounded."""
    bound = plan.output_bound()[0]
    if reducer.final is not None:
        return f"1 request (one chunk): {plan.estimate().split(': ', 1)[-1]}", plan.dollars
    line = f"round 1: {plan.estimate()}"
    if bound is None:
        return line + " Then combine rounds, whose size depends on the answers (output not bounded).", None
    combines = combine_requests(reducer, bound)
    extra = Usage(combines * reducer.chunk_tokens, round(combines * bound)).cost(plan.model)
    total = None if extra is None or plan.dollars is None else plan.dollars + extra
    money = "" if total is None else f", ≈ ${total:.4f} in all"
    return line + f" Then at most {combines:,} combine requests of up to {reducer.chunk_tokens:,} input tokens each{money}.", total


def run_rounds(rounds: Generator[MapPlan, MapResult, bool], run: Callable[[MapPlan], MapResult]) -> bool:
    """Run each round's plan with `run`; whether the rounds came down to one prompt."""
    try:
        plan = next(rounds)
        while True:
            plan = rounds.send(run(plan))
    except StopIteration as done:
        return bool(done.value)


async def arun_rounds(rounds: Generator[MapPlan, MapResult, bool], run: Callable[[MapPlan], Awaitable[MapResult]]) -> bool:
    """`run_rounds` on the running event loop."""
    try:
        plan = next(rounds)
        while True:
            plan = rounds.send(await run(plan))
    except StopIteration as done:
        return bool(done.value)


@dataclass
class RowsRun:
    """A verb's run over rows: the rows it sends (the sample, if any), their plan, and the whole input's plan after a sample."""

    data: Any
    plan: MapPlan
    whole: Callable[[], MapPlan] | None = None

    def finish(self, result: MapResult) -> MapResult:
        """After a sample, add the whole input's estimate from the sample's measured output."""
        if self.whole is not None and not result.stopped:
            result.whole = whole_estimate(self.whole(), result)
        return result


def plan_rows(gate: Gate, data: Any, template: str, options: Options, *, schema: OutputSchema | None, system: str | None,
              concurrency: int, cache_path: str | Path | None, sample: int | None = None, seed: int | None = 0,
              label: str = "the data", image_detail: str = "auto", estimate: bool = True) -> RowsRun:
    """Plan a map, filter or classify run, on a sample of the rows when `sample` is set (`estimate`: as for `plan_map`)."""
    used = data if sample is None else take_sample(data, sample, seed, label)

    def plan(rows: Any) -> MapPlan:
        return plan_map(gate, rows, template, options, system=system, schema=schema, concurrency=concurrency,
                        cache_path=cache_path, label=label, image_detail=image_detail, estimate=estimate)

    return RowsRun(used, plan(used), None if used is data else lambda: plan(data))


def reduce_rounds(reducer: Reducer, first: MapPlan, make_plan: Callable[[], MapPlan]) -> Generator[MapPlan, MapResult, bool]:
    """Yield each round's plan until one prompt is left (the caller runs the plan and sends back its result).

    Returns whether the rounds got there: False when a round was stopped or a chunk failed.
    """
    plan = first
    while reducer.final is None:
        result = yield plan
        if not reducer.took(result):
            return False
        if reducer.final is None:
            plan = make_plan()
    first.close()
    return True


@dataclass
class ReduceRun:
    """A reduce ready to go: its rounds, the one-shot options of its last round, and after a sample the whole input's plan."""

    reducer: Reducer
    first: MapPlan
    make_plan: Callable[[], MapPlan]
    final_how: dict[str, Any]
    whole: Callable[[], tuple[Reducer, MapPlan]] | None = None

    def rounds(self) -> Generator[MapPlan, MapResult, bool]:
        """The rounds before the last one."""
        return reduce_rounds(self.reducer, self.first, self.make_plan)

    def estimate(self) -> tuple[str, float | None]:
        """The estimate line and the worst-case dollars (None when output is not bounded or has no price)."""
        return reduce_estimate(self.reducer, self.first)

    def result(self, answer: Said | None) -> ReduceResult:
        """The result, with the whole input's estimate after a sample."""
        whole = None
        if self.whole is not None and answer is not None:
            reducer, plan = self.whole()
            plan.output_mean = self.reducer.first_mean
            try:
                whole = f"Estimate for the whole input: {reduce_estimate(reducer, plan)[0]}"
            finally:
                plan.close()
        return self.reducer.result(answer, whole=whole)


REDUCE_THREAD = "(reduce)"  # the last round is one-shot, in a thread no cell can name, so no thread's system message leaks in


def plan_reduce(gate: Gate, data: Any, template: str, options: Options, *, system: str | None, concurrency: int,
                cache_path: str | Path | None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, sample: int | None = None,
                seed: int | None = 0, label: str = "the data") -> ReduceRun:
    """Pack the rows (a sample of them when `sample` is set) and plan the first round."""
    if options.json:
        raise BadInput("--json does not work with --reduce: the answer is text.")
    used = data if sample is None else take_sample(data, sample, seed, label)

    def start(rows: Any) -> tuple[Reducer, MapPlan]:
        reducer = Reducer(rows, template, chunk_tokens, label)
        return reducer, reducer.plan(gate, options, system=system, concurrency=concurrency, cache_path=cache_path)

    reducer, first = start(used)
    how = {"once": True, "thread": REDUCE_THREAD, "system": system, **options.__dict__}
    return ReduceRun(reducer, first, lambda: reducer.plan(gate, options, system=system, concurrency=concurrency, cache_path=cache_path),
                     how, None if used is data else lambda: start(data))
