"""The one gate every request passes, whatever path made it: the off switch, replay, the budget, the send, the ledger.

Every path (a cell, each tool step, each `--map` item, `Chat.ask`/`map`/`amap`, `%nano explain`, `%nano models`)
sends through one `Gate`, which applies, in this order:

1. the off switch (`NANO_MAGIC_DISABLED`): `TurnedOff`, nothing sent;
2. replay: `replayed(...)` answers from a saved turn, or refuses (`NoSavedAnswer`) when replay is offline;
3. the budget: `NANO_BUDGET` or `budget` must be a non-negative finite number (`BadBudget` otherwise), and each
   request reserves its worst case (input tokens plus its output bound) before it is sent (`OverBudget`);
4. the send: only this module constructs `client.Client` and `client.AsyncClient`;
5. the ledger: what each request cost, settled from the reservation to the server's usage, or, when none came
   but some of the answer did, to the input estimate plus the tokens counted in what arrived ("estimated").

The API:
- `Gate.send(request, label)`: one request as a `Stream` of events (sync; a cell, a tool step, `Chat.ask`);
- `Gate.begin_many(missing, total)` then `Gate.complete(client, request, hold)` per item (async; many-row runs),
  with `Gate.hold(...)` reserving an item's worst case, or None when it would pass the cap;
- `Gate.hold(...)` alone for a batch submission: `Hold.charge` what it cost, `Hold.release` what was not used.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import httpx

from .client import AsyncClient, AttemptFailed, Client, Completion
from .config import CREDENTIALS, Backend, resolve_backend, turned_off
from .conversation import Turn
from .errors import BadBudget, NanoError, NoBackend, NoSavedAnswer, TurnedOff
from .guard import RAISE_HINT, Meter, check_budget
from .replay import ReplayStore
from .tokens import Estimate, count_tokens, estimate_request
from .tools import ToolCall
from .usage import Spend, Usage, max_output_for
from .wire import Delta, Event, Refusal, Request, Retry, UsageReport

__all__ = ["Entry", "Ledger", "Hold", "Stream", "Gate", "parse_budget", "MAP_LABEL"]

MAP_LABEL = "--map"


def parse_budget(value: object, name: str) -> float | None:
    """A cap in dollars from a setting or the environment; None when unset; BadBudget naming the value otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        cap = float(value.strip().removeprefix("$")) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        cap = math.nan
    if not (math.isfinite(cap) and cap >= 0):
        raise BadBudget(f"{name} = {value!r} is not a number of dollars 0 or more (write it like 0.50, no unit or comma): "
                        "nothing is sent until it is fixed.")
    return cap


@dataclass(frozen=True)
class Entry:
    """One request in the ledger: what it was for (a thread, `(one-shot)` or `--map`), its model, its tokens."""

    label: str
    model: str
    usage: Usage
    estimated: bool = False  # no usage came from the server: the input estimate plus the tokens counted in what arrived


class Ledger:
    """Every request this kernel paid for, and the worst cases of those in flight; safe across threads."""

    def __init__(self) -> None:
        self.reserved = 0.0
        self._entries: list[Entry] = []
        self._spent = Spend()
        self._deferred: list[tuple[str, str, Callable[[], Usage]]] = []
        self._lock = threading.Lock()

    @property
    def entries(self) -> list[Entry]:
        """Every request so far, in the order they were counted."""
        self._count_deferred()
        return list(self._entries)

    @property
    def spent(self) -> Spend:
        """What every request so far cost."""
        self._count_deferred()
        return self._spent

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self._entries) + len(self._deferred)

    def add(self, entry: Entry) -> None:
        """Record one request's cost."""
        with self._lock:
            self._entries.append(entry)
            self._spent.add(entry.model, entry.usage)

    def defer(self, label: str, model: str, count: Callable[[], Usage]) -> None:
        """Record an estimated cost to be counted when the ledger is next read (so that Ctrl-C never waits for the tokenizer)."""
        with self._lock:
            self._deferred.append((label, model, count))

    def _count_deferred(self) -> None:
        while self._deferred:
            with self._lock:
                label, model, count = self._deferred.pop(0)
            self.add(Entry(label, model, count(), estimated=True))

    def reserve(self, dollars: float, cap: float | None) -> Spend | None:
        """Hold `dollars` if spent and held stay within `cap` (None: no cap); otherwise hold nothing and return what counts against it."""
        self._count_deferred()
        with self._lock:
            held = self._spent.dollars + self.reserved
            if cap is not None and held + dollars > cap:
                return replace(self._spent, dollars=held)
            self.reserved += dollars
            return None

    def release(self, dollars: float) -> None:
        """Give a held worst case back."""
        with self._lock:
            self.reserved -= dollars


@dataclass
class Hold:
    """The worst case of one request, held against the cap until it is settled to what the request cost."""

    gate: Gate = field(repr=False)
    label: str
    model: str
    input_tokens: int | None  # None: counted from `request` only if a partial answer needs it (no budget set)
    dollars: float
    request: Request | None = field(default=None, repr=False)
    released: bool = False

    def charge(self, usage: Usage, estimated: bool = False) -> None:
        """Record what an attempt cost; the hold stays for a retry."""
        self.gate.ledger.add(Entry(self.label, self.model, usage, estimated))

    def charge_partial(self, text: str) -> Usage | None:
        """Charge an answer that arrived in part with no usage from the server: the input estimate plus the tokens in `text`.

        With no input count yet (no budget set), the count waits until the ledger is read, and None is returned.
        """
        if self.input_tokens is None:
            body = self.request.body if self.request is not None else {}
            model = self.model
            self.gate.ledger.defer(self.label, model, lambda: Usage(estimate_request(body, model, 0).input_tokens, count_tokens(text)))
            return None
        usage = Usage(self.input_tokens, count_tokens(text))
        self.charge(usage, estimated=True)
        return usage

    def release(self) -> None:
        """Give the worst case back to the cap (once)."""
        if self.released:
            return
        self.released = True
        self.gate.ledger.release(self.dollars)


class Stream:
    """One sent request's events; however it ends (finished, stopped, cut, capped), its cost enters the ledger once."""

    def __init__(self, hold: Hold, events: Iterator[Event], meter: Meter | None) -> None:
        self.hold = hold
        self.meter = meter
        self.capped = False
        self.charged: Usage | None = None
        self._parts: list[str] = []
        self._usage: Usage | None = None
        self._began = False
        self._ended = False
        self._metered = 0  # the parts the meter has counted
        self._events = self._watch(events)

    def __iter__(self) -> Iterator[Event]:
        return self._events

    def __next__(self) -> Event:
        return next(self._events)

    def close(self) -> None:
        """Close the response (the server sees the client go away) and settle the cost."""
        self._events.close()  # type: ignore[attr-defined]
        self._end()

    def _watch(self, events: Iterator[Event]) -> Iterator[Event]:
        """The events as they arrive, counted; the end, a failure, Ctrl-C or a close settles the cost.

        A generator rather than `__next__`, so that a chunk costs one resumed frame (measured in benchmarks/gate.py).
        """
        parts, meter = self._parts, self.meter
        chars, limit = 0, meter.headroom() if meter is not None else math.inf  # the meter is asked only near the cap
        try:
            for event in events:
                kind = type(event)
                if kind is Delta or kind is Refusal:  # most events: kept short
                    parts.append(event.text)  # type: ignore[union-attr]
                    chars += len(event.text)  # type: ignore[union-attr]
                    if chars >= limit and meter is not None:
                        capped = meter.add("".join(parts[self._metered:]))
                        self._metered, chars, limit = len(parts), 0, meter.headroom()
                        if capped:
                            self.capped = True
                            yield event  # this text is shown; then the response is closed
                            return
                    if kind is Refusal:
                        self._began = True
                elif kind is not Retry:
                    self._began = True
                    if kind is UsageReport:
                        self._usage = event.usage  # type: ignore[union-attr]
                    elif kind is ToolCall:  # its name and arguments are output too
                        parts.append(event.name + event.arguments)  # type: ignore[union-attr]
                yield event
        finally:
            try:
                events.close()  # type: ignore[attr-defined]
            finally:
                self._end()

    def cap_message(self) -> str:
        """Why the answer stopped at the cap, in one line."""
        return self.meter.message() if self.meter is not None else ""

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        hold = self.hold
        try:
            if self._usage is not None:
                hold.charge(self._usage)
                self.charged = self._usage
            elif (self._began or self._parts) and self.meter is not None:  # the meter counted the text as it arrived
                self.meter.add("".join(self._parts[self._metered:]))
                self.charged = self.meter.usage()
                hold.charge(self.charged, estimated=True)
            elif self._began or self._parts:
                self.charged = hold.charge_partial("".join(self._parts))
        finally:
            hold.release()


class Gate:
    """The one way out for requests of one Chat: off switch, replay, budget, send, and the one ledger."""

    def __init__(self, env: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.env = env
        self.ledger = Ledger()
        self.budget: float | None = None  # dollars; None: NANO_BUDGET's cap, or none
        self.replay_store: ReplayStore | None = None
        self.replay_mode = "off"  # off, on (unmatched requests go live) or offline (they are refused)
        self._transport = transport
        self._settings: dict[str, Any] = {}
        self._backend: tuple[tuple[str | None, ...], Backend] | None = None  # the last one resolved, by the variables it read
        self._client: Client | None = None
        self._client_key: tuple[Any, ...] = ()
        self._models: list[dict[str, Any]] | None = None

    # Where requests go

    def configure(self, settings: dict[str, Any]) -> None:
        """Apply connection settings; the connection pool is kept unless where or how it connects changed."""
        self._settings = settings
        self._backend = None

    @property
    def backend(self) -> Backend:
        """The backend the settings and environment point to (resolved again when they change); NoBackend if none."""
        env = os.environ if self.env is None else self.env
        seen = tuple(env.get(name) for name in CREDENTIALS)
        if self._backend is None or self._backend[0] != seen:
            self._backend = (seen, resolve_backend(self._settings, env))
        return self._backend[1]

    @property
    def max_retries(self) -> int:
        """Retries of a failed request before it counts as failed."""
        return int(self._settings.get("max_retries", 3))

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def models(self, refresh: bool = False) -> list[dict[str, Any]]:
        """The server's model list (cached): off switch, then `GET /models`, which costs nothing."""
        client = self._open()
        if self._models is None or refresh:
            self._models = client.models()
        return self._models

    def model_for(self, model: str | None) -> str:
        """The model a request will use: the one named, the backend's default, or the server's first."""
        model = model or self.backend.model
        if model:
            return model
        listed = self.models()
        if not listed:
            raise NanoError("The server lists no models: name one with -m NAME or NANO_MODEL.")
        return str(listed[0]["id"])

    def known_model(self, model: str | None) -> str | None:
        """The model a request would name, when that is known without asking the server; None otherwise."""
        try:
            return model or self.backend.model
        except NoBackend:
            return None

    def shutdown_date(self, model: str) -> str | None:
        """The shutdown date the server listed for `model`, if the list was already fetched."""
        return next((m.get("shutdown_date") for m in self._models or [] if m.get("id") == model), None)

    # 1. The off switch

    def check_on(self) -> None:
        """TurnedOff when an instructor switched nano_magic off."""
        if turned_off(self.env):
            raise TurnedOff()

    # 2. Replay

    def replayed(self, thread: str, system: str | None, earlier: list[Turn], prompt: str | None, read: Mapping[str, Any],
                 model: str | None) -> Turn | None:
        """The saved turn that answers this request (off switch first); NoSavedAnswer when offline and none matches.

        `prompt` None (a one-shot request, saved without its prompt) matches nothing.
        """
        self.check_on()
        if self.replay_mode == "off" or self.replay_store is None:
            return None
        found = None if prompt is None else self.replay_store.find(thread, system, earlier, prompt, read, model)
        if found is None and self.replay_mode == "offline":
            raise NoSavedAnswer()
        return found

    # 3. The budget

    def cap(self) -> float | None:
        """The cap in force: `budget`, else NANO_BUDGET; BadBudget when either is not a number of dollars."""
        env = os.environ if self.env is None else self.env
        from_env = parse_budget(env.get("NANO_BUDGET"), "NANO_BUDGET")
        own = parse_budget(self.budget, "the budget")
        return own if own is not None else from_env

    def hold(self, model: str, input_tokens: int | None, output_tokens: int, label: str, *, strict: bool = True,
             request: Request | None = None) -> Hold | None:
        """Reserve a request's worst case against the cap (off switch and a valid budget first).

        Over the cap: OverBudget in one line, or None when not `strict` (many rows: the run stops sending).
        """
        self.check_on()
        cap = self.cap()
        worst = Usage(input_tokens or 0, output_tokens).cost(model) if cap is not None else 0.0
        dollars = worst or 0.0
        over = self.ledger.reserve(dollars, cap)
        if over is not None:
            if not strict:
                return None
            check_budget(cap, over, Estimate(input_tokens or 0, output_tokens, worst, True))  # raises OverBudget
        return Hold(self, label, model, input_tokens, dollars, request)

    def spent_line(self) -> str:
        """What was spent against the cap, and how to raise it, for a run that stopped sending."""
        cap = self.cap()
        return f"${self.ledger.spent.dollars:.6f} of the ${cap or 0:.6f} cap is spent; {RAISE_HINT}"

    # 4 and 5. The send, and the ledger

    def send(self, request: Request, label: str, max_output: int | None = None) -> Stream:
        """Send one request (off switch, budget, then the stream); its cost enters the ledger however it ends.

        Nothing goes out until the stream is iterated; OverBudget, BadBudget and TurnedOff are raised here.
        """
        body = request.body
        model = str(body.get("model", ""))
        bound = max_output or max_output_for(model)
        cap = self.cap()
        estimate = estimate_request(body, model, bound) if cap is not None else None
        hold = self.hold(model, estimate.input_tokens if estimate else None, bound, label, request=request)
        assert hold is not None  # strict: over the cap raised
        meter = None
        if cap is not None and estimate is not None and body.get("stream"):  # a whole answer: only the estimate guards it
            meter = Meter(cap, self.ledger.spent.dollars + self.ledger.reserved - hold.dollars, model, estimate.input_tokens)
        return Stream(hold, self._open().stream(request), meter)

    def begin_many(self, missing: int, total: int) -> None:
        """Before a many-row run: the off switch, offline replay (only cached answers), and a valid budget."""
        self.check_on()
        if missing and self.replay_mode == "offline":
            raise NanoError(f"Replay is offline and {missing:,} of {total:,} items have no cached answer; nothing was sent. "
                            "`%nano replay` without --offline lets them go live.")
        self.cap()

    def async_client(self, connections: int, transport: httpx.AsyncBaseTransport | None = None) -> AsyncClient:
        """A new async client for many requests at once (off switch and a valid budget first), with this gate's backend and timeouts."""
        self.check_on()
        self.cap()
        s = self._settings
        return AsyncClient(self.backend, connections=connections, connect_timeout=s.get("connect_timeout", 10.0),
                           read_timeout=s.get("read_timeout", 120.0), transport=transport)

    async def complete(self, client: AsyncClient, request: Request, hold: Hold) -> Completion:
        """One attempt of a held request; what it cost enters the ledger (nothing when it failed before any byte)."""
        try:
            completion = await client.complete(request)
        except AttemptFailed as failure:
            if failure.partial is not None:
                hold.charge_partial(failure.partial)
            raise
        if completion.usage is not None:
            hold.charge(completion.usage)
        else:
            completion.usage = hold.charge_partial(completion.text + completion.refusal)
        return completion

    def batch_client(self) -> Client:
        """The client for the Batch API's Files and Batches calls (off switch and a valid budget first); their cost is
        held by `reserve_batch` and charged by `charge_batch`."""
        return self._open()

    def reserve_batch(self, worst: Estimate, outstanding: float) -> None:
        """Refuse a batch submission whose worst case, with the batches not yet collected (`outstanding` dollars), passes the cap."""
        cap = self.cap()
        if cap is None:
            return
        spent = self.ledger.spent
        so_far = replace(spent, dollars=spent.dollars + self.ledger.reserved + outstanding)
        check_budget(cap, so_far, worst)  # raises OverBudget

    def charge_batch(self, model: str, usage: Usage) -> None:
        """One batch answer into the ledger, at the price of `model` (a `usage.batch_model` id)."""
        self.ledger.add(Entry("(batch)", model, usage))

    def _open(self) -> Client:
        """The kept-alive HTTP client (off switch, then a valid budget: nothing goes out with a bad one)."""
        self.check_on()
        self.cap()
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

