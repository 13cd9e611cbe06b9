"""The Python API: `Chat(...).ask(...)`, which the magic is a thin layer over."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import httpx

from .catalogue import offer_lines, suggestions
from .config import Backend, default_cache_path
from .conversation import Conversation, Thread, Turn, step_messages
from .errors import InternalError, NanoError, OverBudget, unexpected
from .gate import Gate, Ledger, Stream
from .images import Picture, picture_from, user_message
from .imagestore import default_store
from .jsontext import answer_json
from .rejections import ModelMissing
from .replay import DEFAULT_SPEED, ReplayStore, read_options, replay_events
from .schema import OutputSchema, SchemaError
from .tools import RESULT_CHARS, Tool, Toolbox
from .usage import Usage
from .wire import (
    Delta,
    Event,
    Finish,
    Options,
    Refusal,
    Request,
    Retry,
    ToolCall,
    UsageReport,
    build_request,
)

if TYPE_CHECKING:
    from .batch import MapPlan, MapResult
    from .map_batch import BatchPending, BatchRun
    from .verbs import ClassifyResult, FilterResult, ReduceResult, ReduceRun, RowsRun

__all__ = ["Answer", "Chat", "Interrupted", "Pending", "validate"]

STATUS_BY_FINISH = {"stop": "complete", "length": "length", "content_filter": "content_filter", "tool_calls": "complete"}
STOPPED_CALL = "not run: the answer was stopped"
LIMIT_CALL = "not run: the step limit (--max-steps {0}) was reached"


@dataclass
class Answer:
    """One answer: its text, tokens, cost and how it ended."""

    text: str = ""
    model: str = ""
    thread: str = "default"
    status: str = "complete"
    usage: Usage | None = None
    finish_reason: str | None = None
    error: str | None = None
    json: Any = None
    turn: int | None = None
    elapsed: float = 0.0
    replayed: bool = False
    request: Request | None = field(default=None, repr=False)
    steps: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    refusal: str | None = None

    @property
    def cost(self) -> float | None:
        """Dollars, or None when the usage or the model's price is unknown."""
        return self.usage.cost(self.model) if self.usage else None

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        from .render import to_markdown

        return to_markdown(self.text)


@dataclass(frozen=True)
class Asked:
    """What a turn was asked: the prompt, its options, the thread as the request saw it, and where the cell is."""

    prompt: str
    options: Options
    seen: Thread
    cell_id: str | None
    execution_count: int | None
    once: bool
    pictures: tuple[Picture, ...] = ()


@dataclass
class Pending:
    """An answer ready to stream, live or replayed: nothing is sent until `run`."""

    chat: Chat
    answer: Answer
    events: Iterator[Event] = field(repr=False)
    asked: Asked = field(repr=False)
    saved: Turn | None = None  # the turn a replayed answer comes from: its status and tool steps
    tools: Toolbox = field(default_factory=Toolbox)
    schema: OutputSchema | None = None

    def run(self, on_delta: Callable[[str], None] | None = None, on_retry: Callable[[Retry], None] | None = None,
            on_step: Callable[[ToolCall], None] | None = None) -> Answer:
        """Stream the answer to `on_delta`, run the tools it calls (each shown to `on_step`), and record its turn."""
        return self.chat._receive(self, on_delta, on_retry, on_step)


class Interrupted(KeyboardInterrupt):
    """The user stopped the answer; `answer` holds what had arrived."""

    def __init__(self, answer: Answer | None) -> None:
        super().__init__("stopped")
        self.answer = answer


def validate(options: Options, tools: Toolbox | None = None, schema: OutputSchema | None = None) -> None:
    """Raise ValueError naming the first bad option value."""
    o = options
    offered = tools.tools if tools else {}
    if o.max_steps < 1:
        raise ValueError(f"--max-steps {o.max_steps} must be at least 1.")
    if o.tool_choice not in (None, "auto", "none") and not offered:
        raise ValueError(f"--tool-choice {o.tool_choice} needs functions to choose from: name them with --tools.")
    if o.tool_choice not in (None, "auto", "none", "required") and o.tool_choice not in offered:
        raise ValueError(f"--tool-choice {o.tool_choice}: the cell offers no such tool (use auto, required, none or one of: {', '.join(offered)}).")
    if o.json and schema is not None:
        raise ValueError("--json and --schema ask for different things: use one of them.")
    if o.temperature is not None and not 0 <= o.temperature <= 2:
        raise ValueError(f"--temperature {o.temperature:g} is out of range: use a value from 0 to 2.")
    if o.top_p is not None and not 0 <= o.top_p <= 1:
        raise ValueError(f"--top-p {o.top_p:g} is out of range: use a value from 0 to 1.")
    if o.max_tokens is not None and o.max_tokens <= 0:
        raise ValueError(f"--max-tokens {o.max_tokens} must be greater than 0.")
    if o.api not in ("chat", "responses"):
        raise ValueError(f"--api {o.api} is unknown: use chat or responses.")
    if o.reasoning_effort is not None and (not o.reasoning_effort.strip() or len(o.reasoning_effort.split()) != 1):
        raise ValueError(f"--reasoning-effort {o.reasoning_effort!r} must be one word, such as none, low or high.")
    if o.api == "responses" and (o.seed is not None or o.stop is not None):
        raise ValueError("--seed and --stop exist only in Chat Completions: drop them or use --api chat.")


class Chat:
    """A conversation with a model, usable from scripts and notebooks alike."""

    def __init__(
        self,
        model: str | None = None,
        system: str | None = None,
        *,
        api: str = "chat",
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 3,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        reasoning_effort: str | None = None,
    ) -> None:
        self.conversation = Conversation()
        self.api = api
        self.reasoning_effort = reasoning_effort  # the default of every request; a request's own option wins
        self.last: Answer | None = None
        self.gate = Gate(env, transport)  # every request goes out through it
        self.replay_speed = DEFAULT_SPEED
        self._warned: set[str] = set()  # models whose shutdown date was already pointed out
        self.configure(model=model, base_url=base_url, api_key=api_key, max_retries=max_retries,
                       connect_timeout=connect_timeout, read_timeout=read_timeout)
        if system:
            self.conversation.thread("default").system = system

    def configure(self, **settings: Any) -> None:
        """Apply settings; the connection pool is kept unless where or how it connects changed."""
        self.gate.configure(settings)

    @property
    def backend(self) -> Backend:
        """The backend the settings and environment point to; NoBackend if none."""
        return self.gate.backend

    @property
    def ledger(self) -> Ledger:
        """Every request this Chat paid for, single answers and many-row runs alike."""
        return self.gate.ledger

    @property
    def budget(self) -> float | None:
        """Dollars this Chat may spend; None: NANO_BUDGET's cap, or none."""
        return self.gate.budget

    @budget.setter
    def budget(self, dollars: float | None) -> None:
        self.gate.budget = dollars

    @property
    def replay_store(self) -> ReplayStore | None:
        """The saved turns that replay answers come from."""
        return self.gate.replay_store

    @replay_store.setter
    def replay_store(self, store: ReplayStore | None) -> None:
        self.gate.replay_store = store

    @property
    def replay_mode(self) -> str:
        """off, on (unmatched requests go live) or offline (they are refused)."""
        return self.gate.replay_mode

    @replay_mode.setter
    def replay_mode(self, mode: str) -> None:
        self.gate.replay_mode = mode

    def close(self) -> None:
        """Close the connection pool."""
        self.gate.close()

    def _options(self, options: Mapping[str, Any]) -> Options:
        """Request options: the given ones over this chat's API and reasoning effort."""
        given = {k: v for k, v in options.items() if not (k == "reasoning_effort" and v is None)}
        return Options(**{"api": self.api, "reasoning_effort": self.reasoning_effort, **given})

    def models(self, refresh: bool = False) -> list[dict[str, Any]]:
        """The models the server offers (cached)."""
        return self.gate.models(refresh)

    def model_for(self, options: Options) -> str:
        """The model a request will use: the option, the setting, the backend's default, or the server's first."""
        return self.gate.model_for(options.model)

    def shutdown_date(self, model: str) -> str | None:
        """The shutdown date the server listed for `model`, if the list was already fetched."""
        return self.gate.shutdown_date(model)

    def shutdown_warning(self, model: str) -> str | None:
        """One line, the first time only, when the server lists `model` with a shutdown date."""
        date = self.shutdown_date(model)
        if not date or model in self._warned:
            return None
        self._warned.add(model)
        return f"Warning: the server lists {model} as shutting down on {date}; %nano models shows the others, -m NAME picks one."

    def explain_missing(self, missing: ModelMissing) -> ModelMissing:
        """A missing model's failure with what the server offers instead; nothing is retried and no other model is used."""
        try:
            offered = self.models(refresh=True)
        except NanoError as exc:
            return ModelMissing(f"{missing}\nThe server's model list could not be read either ({exc}); name a model with -m NAME.", missing.model)
        return ModelMissing(offer_lines(str(missing), suggestions(missing.model, offered)), missing.model)

    def prepare(self, text: str, options: Options, *, thread: Thread, cell_id: str | None = None,
                tools: Toolbox | None = None, schema: OutputSchema | None = None, pictures: Sequence[Picture] = ()) -> Request:
        """The first request a prompt would send, given the thread as it sees it."""
        validate(options, tools, schema)
        messages = _opening(text, options, thread, cell_id, pictures)
        return build_request(self.backend, self.model_for(options), thread.system, messages, options, tools, schema)

    def scratch_thread(self, name: str, *, system: str | None = None, new: bool = False) -> Thread:
        """A copy of a thread as a prompt would see it, leaving the real one untouched."""
        kept = self.conversation.threads.get(name) or Thread(name)
        return Thread(name, kept.system if system is None else system, [] if new else list(kept.turns))

    def ask(self, text: str, on_delta: Callable[[str], None] | None = None, *,
            on_retry: Callable[[Retry], None] | None = None, **how: Any) -> Answer:
        """Send `text` (or replay its saved answer), stream the answer to `on_delta`, and record the turn once any text arrived.

        `how` takes `start`'s keywords: thread, system, new, once, cell_id, execution_count, tools, schema,
        tool_result_chars, images, image_detail and the request options (reasoning_effort among them);
        `on_step` sees each tool call with its result.
        """
        on_step = how.pop("on_step", None)
        return self.start(text, **how).run(on_delta, on_retry, on_step)

    def start(
        self,
        text: str,
        *,
        thread: str = "default",
        system: str | None = None,
        new: bool = False,
        once: bool = False,
        cell_id: str | None = None,
        execution_count: int | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | Toolbox = (),
        schema: Any = None,
        tool_result_chars: int = RESULT_CHARS,
        images: Iterable[Any] = (),
        image_detail: str = "auto",
        **options: Any,
    ) -> Pending:
        """Check and prepare an answer without sending anything: bad input, replay misses and the budget raise here.

        `tools` are callables the model may call (each runs in this thread); `schema` is a pydantic model,
        TypedDict, dataclass or JSON Schema dict that the answer must fit; `images` are pictures sent with the
        prompt (figures, PIL images, uint8 arrays, image bytes, paths, http(s) URLs), seen with `image_detail`.
        """
        opts = self._options(options)
        if not text.strip():
            raise ValueError("The prompt is empty: write a question in the cell.")
        toolbox = tools if isinstance(tools, Toolbox) else Toolbox(tools, tool_result_chars)
        shape = None if schema is None else OutputSchema.from_object(schema)
        validate(opts, toolbox, shape)
        pictures = tuple(picture_from(image, _label(image), image_detail) for image in images)
        seen = self.scratch_thread(thread, system=system, new=new or once)
        asked = Asked(text, opts, seen, cell_id, execution_count, once, pictures)
        saved = self.saved_answer(text, opts, seen, cell_id, once, toolbox, shape, pictures)
        if saved is not None:
            answer = Answer(model=saved.model, thread=thread, replayed=True)
            return Pending(self, answer, replay_events(saved, self.replay_speed), asked, saved, toolbox, shape)
        request = self.prepare(text, opts, thread=seen, cell_id=cell_id, tools=toolbox, schema=shape, pictures=pictures)
        store = default_store()
        for picture in pictures:  # later turns resend the bytes from the store, and %nano load finds them there
            if not picture.url:
                store.put(picture.data)
        answer = Answer(model=request.body["model"], thread=thread, request=request)
        return Pending(self, answer, self.gate.send(request, _spent_on(asked), opts.max_tokens), asked, None, toolbox, shape)

    def saved_answer(self, text: str, options: Options, seen: Thread, cell_id: str | None, once: bool,
                     tools: Toolbox | None = None, schema: OutputSchema | None = None, pictures: Sequence[Picture] = ()) -> Turn | None:
        """The saved turn that replays this request (through the gate); NoSavedAnswer when replay is offline and none matches."""
        # One-shot answers are saved without their prompt, so they never match.
        return self.gate.replayed(seen.name, seen.system, seen.before(cell_id), None if once else text,
                                  read_options(options, tools, schema, _picture_names(pictures)), self.gate.known_model(options.model))

    def _receive(self, pending: Pending, on_delta: Callable[[str], None] | None, on_retry: Callable[[Retry], None] | None,
                 on_step: Callable[[ToolCall], None] | None) -> Answer:
        """Stream events into the answer, run the tools it calls and ask again, stopping at the budget cap or the step limit."""
        started = time.perf_counter()
        run = _TurnRun(pending.answer, on_delta, on_retry, on_step)
        asked = pending.asked
        opts = asked.options

        def settle(status: str) -> Answer:
            answer = run.close(status, time.perf_counter() - started)
            self._settle(answer, asked, run.usages, pending.tools, pending.schema)
            return answer

        try:
            events = pending.events
            if pending.saved is not None:
                run.replay_steps(pending.saved.steps)
            for step in range(1, opts.max_steps + 1):
                calls = run.send(events)
                if run.capped:
                    answer = settle("budget")
                    answer.error = run.capped
                    return answer
                if not calls:
                    break
                last = step == opts.max_steps
                run.run(calls, None if last else pending.tools, LIMIT_CALL.format(opts.max_steps))
                if last:
                    answer = settle("max_steps")
                    answer.error = f"Stopped after {step} requests (--max-steps {step}) while the model was still calling tools; the text so far is kept."
                    return answer
                messages = _opening(asked.prompt, opts, asked.seen, asked.cell_id, asked.pictures) + step_messages(run.answer.steps, opts.api)
                request = build_request(self.backend, run.answer.model, asked.seen.system, messages, _after_calls(opts), pending.tools, pending.schema)
                try:
                    events = self.gate.send(request, _spent_on(asked), opts.max_tokens)
                except OverBudget as exc:  # the calls so far stay in the turn, as at a cap reached mid-stream
                    answer = settle("budget")
                    answer.error = str(exc)
                    return answer
                run.answer.request = request
        except KeyboardInterrupt:
            answer = settle("stopped")
            raise Interrupted(answer if answer.text or answer.steps else None) from None
        except NanoError as exc:  # a broken stream, or a follow-up request that failed after tools ran: keep what arrived
            if isinstance(exc, ModelMissing):
                exc = self.explain_missing(exc)
            answer = settle("cut")
            answer.error = str(exc)
            exc.answer = answer if answer.text or answer.steps else None
            raise exc from None
        except Exception as exc:  # a bug of ours mid-answer: keep what arrived, as for a broken stream
            broken = InternalError(unexpected(exc))
            answer = settle("cut")
            answer.error = str(broken)
            broken.answer = answer if answer.text or answer.steps else None
            raise broken from exc
        if pending.saved is not None:
            return settle(pending.saved.status)
        return settle("refused" if run.refusal else STATUS_BY_FINISH.get(run.answer.finish_reason or "stop", "complete"))

    def map(self, data: Any, template: str, concurrency: int = 8, schema: Any = None, *, system: str | None = None,
            cache: bool | str | Path = True, progress: bool | str = "auto", sample: int | None = None, sample_seed: int | None = 0,
            batch: bool = False, wait: bool = False, batch_max_requests: int = 50_000, **options: Any) -> MapResult | BatchPending:
        """One one-shot request per item of `data` (DataFrame, Series, list or dict), `template` filled from each.

        With `sample`, only that many items picked at random (reproducibly, by `sample_seed`); `.whole` then
        estimates the whole input from the sample's measured output, and the full run takes these from the cache.
        `batch=True` submits them to the provider's Batch API (half price) and returns the batches; the same call
        again collects them into the same result a live run gives (`wait=True` polls until then).
        """
        from .batch import run_map

        rows = self._rows(data, template, concurrency, schema, system, cache, sample, sample_seed, options, batch=batch)
        if batch:
            from .map_batch import run_batch

            return run_batch(self._batch_run(rows.plan, template, batch_max_requests), wait=wait, progress=_progress_mode(progress))
        return rows.finish(run_map(rows.plan, progress=_progress_mode(progress)))

    async def amap(self, data: Any, template: str, concurrency: int = 8, schema: Any = None, *, system: str | None = None,
                   cache: bool | str | Path = True, progress: bool | str = "auto", sample: int | None = None,
                   sample_seed: int | None = 0, batch: bool = False, wait: bool = False, batch_max_requests: int = 50_000,
                   **options: Any) -> MapResult | BatchPending:
        """`map` on the running event loop."""
        from .batch import arun_map

        rows = self._rows(data, template, concurrency, schema, system, cache, sample, sample_seed, options, batch=batch)
        if batch:
            from .map_batch import arun_batch

            return await arun_batch(self._batch_run(rows.plan, template, batch_max_requests), wait=wait, progress=_progress_mode(progress))
        return rows.finish(await arun_map(rows.plan, progress=_progress_mode(progress)))

    def _batch_run(self, plan: MapPlan, template: str, max_requests: int) -> BatchRun:
        from .map_batch import AGAIN_CALL, BatchRun

        try:
            return BatchRun(plan, "Chat.map: " + " ".join(template.split())[:60], max_requests, AGAIN_CALL)
        except BaseException:
            plan.close()
            raise

    def filter(self, data: Any, template: str, concurrency: int = 8, *, system: str | None = None, cache: bool | str | Path = True,
               progress: bool | str = "auto", sample: int | None = None, sample_seed: int | None = 0, **options: Any) -> FilterResult:
        """The rows of `data` for which the model answers yes to `template`, each asked with a strict boolean schema."""
        from .batch import run_map
        from .verbs import filter_result, filter_schema

        rows = self._rows(data, template, concurrency, filter_schema(), system, cache, sample, sample_seed, options)
        return filter_result(rows.data, rows.finish(run_map(rows.plan, progress=_progress_mode(progress))))

    async def afilter(self, data: Any, template: str, concurrency: int = 8, *, system: str | None = None,
                      cache: bool | str | Path = True, progress: bool | str = "auto", sample: int | None = None,
                      sample_seed: int | None = 0, **options: Any) -> FilterResult:
        """`filter` on the running event loop."""
        from .batch import arun_map
        from .verbs import filter_result, filter_schema

        rows = self._rows(data, template, concurrency, filter_schema(), system, cache, sample, sample_seed, options)
        return filter_result(rows.data, rows.finish(await arun_map(rows.plan, progress=_progress_mode(progress))))

    def classify(self, data: Any, template: str, labels: Any, concurrency: int = 8, *, system: str | None = None,
                 cache: bool | str | Path = True, progress: bool | str = "auto", sample: int | None = None,
                 sample_seed: int | None = 0, **options: Any) -> ClassifyResult:
        """One of `labels` (a comma list, or a list, tuple or Enum of strings) per row, as a Categorical Series on its index."""
        from .batch import run_map
        from .verbs import classify_result, classify_schema, labels_from

        chosen = labels_from(labels, "labels")
        rows = self._rows(data, template, concurrency, classify_schema(chosen), system, cache, sample, sample_seed, options)
        return classify_result(chosen, rows.finish(run_map(rows.plan, progress=_progress_mode(progress))))

    async def aclassify(self, data: Any, template: str, labels: Any, concurrency: int = 8, *, system: str | None = None,
                        cache: bool | str | Path = True, progress: bool | str = "auto", sample: int | None = None,
                        sample_seed: int | None = 0, **options: Any) -> ClassifyResult:
        """`classify` on the running event loop."""
        from .batch import arun_map
        from .verbs import classify_result, classify_schema, labels_from

        chosen = labels_from(labels, "labels")
        rows = self._rows(data, template, concurrency, classify_schema(chosen), system, cache, sample, sample_seed, options)
        return classify_result(chosen, rows.finish(await arun_map(rows.plan, progress=_progress_mode(progress))))

    def reduce(self, data: Any, template: str, chunk_tokens: int | None = None, concurrency: int = 8, *,
               on_delta: Callable[[str], None] | None = None, system: str | None = None, cache: bool | str | Path = True,
               progress: bool | str = "auto", sample: int | None = None, sample_seed: int | None = 0, **options: Any) -> ReduceResult:
        """One answer from all rows: chunks of rows answered with `template`, then their answers combined in rounds.

        The template's lines with placeholders repeat once per row; the last round streams to `on_delta`.
        """
        from .batch import run_map
        from .verbs import run_rounds

        job = self._reduce(data, template, chunk_tokens, concurrency, system, cache, sample, sample_seed, options)
        mode = _progress_mode(progress)
        reached = run_rounds(job.rounds(), lambda plan: run_map(plan, progress=mode))
        final = job.reducer.final
        return job.result(self.ask(final, on_delta, **job.final_how) if reached and final is not None else None)

    async def areduce(self, data: Any, template: str, chunk_tokens: int | None = None, concurrency: int = 8, *,
                      on_delta: Callable[[str], None] | None = None, system: str | None = None, cache: bool | str | Path = True,
                      progress: bool | str = "auto", sample: int | None = None, sample_seed: int | None = 0,
                      **options: Any) -> ReduceResult:
        """`reduce` on the running event loop; the last round streams from a worker thread."""
        import asyncio

        from .batch import arun_map
        from .verbs import arun_rounds

        job = self._reduce(data, template, chunk_tokens, concurrency, system, cache, sample, sample_seed, options)
        mode = _progress_mode(progress)
        reached = await arun_rounds(job.rounds(), lambda plan: arun_map(plan, progress=mode))
        final = job.reducer.final
        if not reached or final is None:
            return job.result(None)
        return job.result(await asyncio.to_thread(lambda: self.ask(final, on_delta, **job.final_how)))

    def _checked(self, options: dict[str, Any], schema: OutputSchema | None = None) -> Options:
        opts = self._options(options)
        validate(opts, schema=schema)
        return opts

    def _rows(self, data: Any, template: str, concurrency: int, schema: Any, system: str | None, cache: bool | str | Path,
              sample: int | None, seed: int | None, options: dict[str, Any], batch: bool = False) -> RowsRun:
        from .verbs import plan_rows

        if batch and sample is not None:
            raise ValueError("sample= previews a live run: it does not go with batch=True.")

        shape = None if schema is None else OutputSchema.from_object(schema)
        opts = self._checked(options, shape)
        return plan_rows(self.gate, data, template, opts, schema=shape, system=system, concurrency=concurrency,
                         cache_path=_cache_path(cache), sample=sample, seed=seed, estimate=not batch)

    def _reduce(self, data: Any, template: str, chunk_tokens: int | None, concurrency: int, system: str | None,
                cache: bool | str | Path, sample: int | None, seed: int | None, options: dict[str, Any]) -> ReduceRun:
        from .verbs import DEFAULT_CHUNK_TOKENS, plan_reduce

        return plan_reduce(self.gate, data, template, self._checked(options), system=system, concurrency=concurrency,
                           cache_path=_cache_path(cache), chunk_tokens=DEFAULT_CHUNK_TOKENS if chunk_tokens is None else chunk_tokens, sample=sample, seed=seed)

    def _settle(self, answer: Answer, asked: Asked, usages: list[Usage], tools: Toolbox, schema: OutputSchema | None) -> None:
        """Account for every request and, once any text or call arrived, write the turn into the real thread."""
        options, seen, once = asked.options, asked.seen, asked.once
        if options.json and answer.status == "complete":
            answer.json, answer.error = answer_json(answer.text)
        if schema is not None and answer.status == "complete":
            try:
                answer.json = schema.parse(answer.text)
            except SchemaError as exc:
                answer.error = f"The answer does not fit the schema {schema.name}: {exc}. The raw text is kept in .text."
        if not answer.text and not answer.steps:
            return
        self.last = answer
        self.conversation.forget_cell(asked.cell_id, keep=None if once else seen.name)
        if once:
            return
        thread = self.conversation.thread(seen.name)
        thread.system, thread.turns = seen.system, seen.turns
        usage = answer.usage.to_dict() if answer.usage else None
        chosen = read_options(options, tools, schema, _picture_names(asked.pictures))
        turn = Turn(asked.prompt, answer.text, answer.model, chosen, usage, answer.status, asked.cell_id, asked.execution_count, answer.steps,
                    [picture.record() for picture in asked.pictures])
        answer.turn = thread.record(turn)


def _spent_on(asked: Asked) -> str:
    """What a request is for, in the ledger: its thread, or `(one-shot)`."""
    return "(one-shot)" if asked.once else asked.seen.name


def _opening(text: str, options: Options, thread: Thread, cell_id: str | None, pictures: Sequence[Picture] = ()) -> list[dict[str, Any]]:
    """The thread's earlier turns and the new prompt with its pictures, as messages or input items."""
    return thread.messages(thread.before(cell_id), options.api) + [user_message(text, pictures, options.api)]


def _picture_names(pictures: Sequence[Picture]) -> list[str]:
    """The pictures as a turn's options name them, so that the replay key covers each one's hash (or URL)."""
    return [p.url or p.sha256 for p in pictures]


def _label(image: Any) -> str:
    """How a failure names a picture given to `Chat.ask`: its path or URL, else its type."""
    return image if isinstance(image, str) else str(image) if isinstance(image, Path) else type(image).__name__


class _TurnRun:
    """One turn in progress: the requests it sends, the text and calls that come back, and the tools it runs."""

    def __init__(self, answer: Answer, on_delta: Callable[[str], None] | None, on_retry: Callable[[Retry], None] | None,
                 on_step: Callable[[ToolCall], None] | None) -> None:
        self.answer = answer
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.usages: list[Usage] = []
        self.capped = ""  # why the answer stopped at the budget cap, once it did
        self._on_delta, self._on_retry, self._on_step = on_delta, on_retry, on_step

    def send(self, events: Iterator[Event]) -> list[ToolCall]:
        """Stream one request's answer (the gate's Stream, or a replayed turn); return the calls it asks for.

        At the budget cap the Stream closes the response (the server sees the client go away) and `capped` says why.
        """
        self.answer.requests += 1
        calls: list[ToolCall] = []
        sent = events if isinstance(events, Stream) else None
        try:
            for event in events:
                if isinstance(event, Delta):
                    self.parts.append(event.text)
                    if self._on_delta is not None:
                        self._on_delta(event.text)
                elif isinstance(event, ToolCall):
                    calls.append(event)
                elif isinstance(event, Refusal):
                    self.refusal.append(event.text)
                    if self._on_delta is not None:
                        self._on_delta(event.text)
                elif isinstance(event, UsageReport):
                    if sent is None:  # a replayed turn's saved usage; a sent request's comes from the gate
                        self.usages.append(event.usage)
                elif isinstance(event, Finish):
                    self.answer.finish_reason = event.reason
                elif self._on_retry is not None:
                    self._on_retry(event)
        finally:
            if sent is not None:
                sent.close()  # however the loop ended: the response is closed and its cost is in the ledger
                if sent.charged is not None:
                    self.usages.append(sent.charged)
                if sent.capped:
                    self.capped = sent.cap_message()
        return [] if self.capped else calls

    def replay_steps(self, steps: list[dict[str, Any]]) -> None:
        """A saved turn's tool rounds, shown as step lines and kept in the answer; no tool runs."""
        for step in steps:
            self.answer.steps.append(step)
            for call in step.get("calls") or []:
                if self._on_step is not None:
                    self._on_step(ToolCall(**call))

    def run(self, calls: list[ToolCall], toolbox: Toolbox | None, limit: str) -> None:
        """Run a round's calls in order (none when `toolbox` is None: the step limit); each is recorded before it runs."""
        step: dict[str, Any] = {"text": "".join(self.parts), "calls": [_not_run(c, STOPPED_CALL if toolbox else limit) for c in calls]}
        self.parts.clear()
        self.answer.steps.append(step)
        for index, call in enumerate(calls):
            if toolbox is not None:
                toolbox.run(call)
                step["calls"][index] = call.to_dict()
            if self._on_step is not None:
                self._on_step(ToolCall(**step["calls"][index]))

    def close(self, status: str, elapsed: float) -> Answer:
        """The answer as it stands."""
        answer = self.answer
        answer.refusal = "".join(self.refusal) or None
        answer.text = "".join(self.parts) or (answer.refusal or "")
        answer.status, answer.elapsed = status, elapsed
        answer.usage = sum(self.usages, Usage()) if self.usages else None
        return answer


def _after_calls(options: Options) -> Options:
    """The options of a follow-up request: a forced choice (`required` or a name) was honoured, so the model may now answer."""
    if options.tool_choice in (None, "auto", "none"):
        return options
    return replace(options, tool_choice="auto")


def _not_run(call: ToolCall, reason: str) -> dict[str, Any]:
    return {**call.to_dict(), "result": f"Error: {reason}", "error": reason}


def _cache_path(cache: bool | str | Path) -> str | Path | None:
    """The answer cache a run uses: the default file, the one given, or none."""
    return default_cache_path() if cache is True else (cache or None)


def _progress_mode(progress: bool | str) -> str:
    """`widget` in a kernel, `text` elsewhere, `none` when turned off."""
    if progress in ("widget", "text", "none"):
        return str(progress)
    if not progress:
        return "none"
    from IPython import get_ipython

    return "widget" if getattr(get_ipython(), "kernel", None) is not None else "text"
