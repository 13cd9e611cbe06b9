"""The Python API: `Chat(...).ask(...)`, which the magic is a thin layer over."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import httpx

from .client import Client, Delta, Finish, Options, Refusal, Request, Retry, ToolCall, UsageReport, build_request
from .config import Backend, resolve_backend
from .conversation import Conversation, Thread, Turn, step_messages
from .errors import InternalError, NanoError, StreamError, unexpected
from .schema import OutputSchema, SchemaError
from .tools import RESULT_CHARS, Tool, Toolbox
from .usage import Usage

__all__ = ["Answer", "Chat", "Interrupted", "validate"]

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
    ) -> None:
        self.conversation = Conversation()
        self.api = api
        self.last: Answer | None = None
        self.ledger: list[tuple[str, str, Usage]] = []
        self._env = env
        self._transport = transport
        self._client: Client | None = None
        self._client_key: tuple[Any, ...] = ()
        self._models: list[dict[str, Any]] | None = None
        self.configure(model=model, base_url=base_url, api_key=api_key, max_retries=max_retries,
                       connect_timeout=connect_timeout, read_timeout=read_timeout)
        if system:
            self.conversation.thread("default").system = system

    def configure(self, **settings: Any) -> None:
        """Apply settings; the connection pool is kept unless where or how it connects changed."""
        self._settings = settings

    @property
    def backend(self) -> Backend:
        """The backend the settings and environment point to; NoBackend if none."""
        return resolve_backend(self._settings, os.environ if self._env is None else self._env)

    @property
    def client(self) -> Client:
        """The HTTP client, reused across requests for keep-alive."""
        backend = self.backend
        s = self._settings
        key = (backend, s.get("max_retries"), s.get("connect_timeout"), s.get("read_timeout"))
        if self._client is None or key != self._client_key:
            if self._client is not None:
                self._client.close()
            self._client = Client(backend, max_retries=s.get("max_retries", 3), connect_timeout=s.get("connect_timeout", 10.0),
                                  read_timeout=s.get("read_timeout", 120.0), transport=self._transport)
            self._client_key = key
            self._models = None
        return self._client

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def models(self, refresh: bool = False) -> list[dict[str, Any]]:
        """The models the server offers (cached)."""
        client = self.client
        if self._models is None or refresh:
            self._models = client.models()
        return self._models

    def model_for(self, options: Options) -> str:
        """The model a request will use: the option, the setting, the backend's default, or the server's first."""
        model = options.model or self.backend.model
        if model:
            return model
        listed = self.models()
        if not listed:
            raise NanoError("The server lists no models: name one with -m NAME or NANO_MODEL.")
        return str(listed[0]["id"])

    def shutdown_date(self, model: str) -> str | None:
        """The shutdown date the server listed for `model`, if the list was already fetched."""
        return next((m.get("shutdown_date") for m in self._models or [] if m.get("id") == model), None)

    def prepare(self, text: str, options: Options, *, thread: Thread, cell_id: str | None = None,
                tools: Toolbox | None = None, schema: OutputSchema | None = None) -> Request:
        """The first request a prompt would send, given the thread as it sees it."""
        validate(options, tools, schema)
        messages = _opening(text, options, thread, cell_id)
        return build_request(self.backend, self.model_for(options), thread.system, messages, options, tools, schema)

    def scratch_thread(self, name: str, *, system: str | None = None, new: bool = False) -> Thread:
        """A copy of a thread as a prompt would see it, leaving the real one untouched."""
        kept = self.conversation.threads.get(name) or Thread(name)
        return Thread(name, kept.system if system is None else system, [] if new else list(kept.turns))

    def ask(
        self,
        text: str,
        on_delta: Callable[[str], None] | None = None,
        *,
        thread: str = "default",
        system: str | None = None,
        new: bool = False,
        once: bool = False,
        cell_id: str | None = None,
        execution_count: int | None = None,
        on_retry: Callable[[Retry], None] | None = None,
        tools: Iterable[Tool | Callable[..., Any]] | Toolbox = (),
        schema: Any = None,
        on_step: Callable[[ToolCall], None] | None = None,
        tool_result_chars: int = RESULT_CHARS,
        **options: Any,
    ) -> Answer:
        """Send `text`, stream the answer to `on_delta`, run the tools it calls, and record the turn once anything arrived.

        `tools` are callables the model may call (each call runs here, in this thread, and `on_step` sees it
        with its result); `schema` is a pydantic model, TypedDict, dataclass or JSON Schema dict for the answer.
        """
        opts = Options(**{"api": self.api, **options})
        if not text.strip():
            raise ValueError("The prompt is empty: write a question in the cell.")
        toolbox = tools if isinstance(tools, Toolbox) else Toolbox(tools, tool_result_chars)
        shape = None if schema is None else OutputSchema.from_object(schema)
        seen = self.scratch_thread(thread, system=system, new=new or once)
        first = self.prepare(text, opts, thread=seen, cell_id=cell_id, tools=toolbox, schema=shape)
        turn = _TurnRun(Answer(model=first.body["model"], thread=thread, request=first), on_delta, on_retry, on_step)
        opening = _opening(text, opts, seen, cell_id)
        started = time.perf_counter()

        def settle(status: str) -> Answer:
            answer = turn.close(status, time.perf_counter() - started)
            self._settle(answer, text, opts, seen, cell_id, execution_count, once, turn.usages, toolbox, shape)
            return answer

        try:
            request = first
            for step in range(1, opts.max_steps + 1):
                calls = turn.send(self.client, request)
                if not calls:
                    break
                turn.run(calls, toolbox if step < opts.max_steps else None, LIMIT_CALL.format(opts.max_steps))
                if step == opts.max_steps:
                    answer = settle("max_steps")
                    answer.error = f"Stopped after {step} requests (--max-steps {step}) while the model was still calling tools; the text so far is kept."
                    return answer
                messages = opening + step_messages(turn.answer.steps, opts.api)
                request = build_request(self.backend, first.body["model"], seen.system, messages, opts, toolbox, shape)
        except KeyboardInterrupt:
            answer = settle("stopped")
            raise Interrupted(answer if answer.text or answer.steps else None) from None
        except StreamError as exc:
            answer = settle("cut")
            answer.error = str(exc)
            exc.answer = answer if answer.text or answer.steps else None
            raise
        except NanoError:
            raise
        except Exception as exc:  # a bug of ours mid-answer: keep what arrived, as for a broken stream
            broken = InternalError(unexpected(exc))
            answer = settle("cut")
            answer.error = str(broken)
            broken.answer = answer if answer.text or answer.steps else None
            raise broken from exc
        if turn.refusal:
            return settle("refused")
        return settle(STATUS_BY_FINISH.get(turn.answer.finish_reason or "stop", "complete"))

    def _settle(self, answer: Answer, prompt: str, options: Options, seen: Thread, cell_id: str | None,
                execution_count: int | None, once: bool, usages: list[Usage], tools: Toolbox, schema: OutputSchema | None) -> None:
        """Account for every request and, once any text or call arrived, write the turn into the real thread."""
        for used in usages:
            self.ledger.append(("(one-shot)" if once else answer.thread, answer.model, used))
        if options.json and answer.status == "complete":
            answer.json, answer.error = _parse_json(answer.text)
        if schema is not None and answer.status == "complete":
            try:
                answer.json = schema.parse(answer.text)
            except SchemaError as exc:
                answer.error = f"The answer does not fit the schema {schema.name}: {exc}. The raw text is kept in .text."
        if not answer.text and not answer.steps:
            return
        self.last = answer
        self.conversation.forget_cell(cell_id, keep=None if once else seen.name)
        if once:
            return
        thread = self.conversation.thread(seen.name)
        thread.system, thread.turns = seen.system, seen.turns
        usage = answer.usage.to_dict() if answer.usage else None
        chosen = {**options.changed(), **({"tools": list(tools.tools)} if tools else {}), **({"schema": schema.name} if schema else {})}
        turn = Turn(prompt, answer.text, answer.model, chosen, usage, answer.status, cell_id, execution_count, answer.steps)
        answer.turn = thread.record(turn)


def _opening(text: str, options: Options, thread: Thread, cell_id: str | None) -> list[dict[str, Any]]:
    """The thread's earlier turns and the new prompt, as messages or input items."""
    return thread.messages(thread.before(cell_id), options.api) + [{"role": "user", "content": text}]


class _TurnRun:
    """One turn in progress: the requests it sends, the text and calls that come back, and the tools it runs."""

    def __init__(self, answer: Answer, on_delta: Callable[[str], None] | None, on_retry: Callable[[Retry], None] | None,
                 on_step: Callable[[ToolCall], None] | None) -> None:
        self.answer = answer
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.usages: list[Usage] = []
        self._on_delta, self._on_retry, self._on_step = on_delta, on_retry, on_step

    def send(self, client: Client, request: Request) -> list[ToolCall]:
        """Send one request and stream its answer; return the calls it asks for."""
        self.answer.request = request
        self.answer.requests += 1
        calls: list[ToolCall] = []
        for event in client.stream(request):
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
                self.usages.append(event.usage)
            elif isinstance(event, Finish):
                self.answer.finish_reason = event.reason
            elif self._on_retry is not None:
                self._on_retry(event)
        return calls

    def run(self, calls: list[ToolCall], toolbox: Toolbox | None, limit: str) -> None:
        """Run a round's calls in order (none when `toolbox` is None: the step limit); each is recorded before it runs."""
        step = {"text": "".join(self.parts), "calls": [_not_run(c, STOPPED_CALL if toolbox else limit) for c in calls]}
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


def _not_run(call: ToolCall, reason: str) -> dict[str, Any]:
    return {**call.to_dict(), "result": f"Error: {reason}", "error": reason}


def _parse_json(text: str) -> tuple[Any, str | None]:
    """The JSON value in an answer (a ```json fence is allowed), or an error message."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    try:
        return json.loads(body), None
    except json.JSONDecodeError as exc:
        return None, f"The answer is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); the raw text is kept in .text."
