"""Replay: answer cells from a prepared notebook's saved turns, with no request, streamed at a steady pace.

A saved turn matches a cell when their requests are the same: thread, system message, earlier turns,
prompt, model and the options that change what the model reads, the tools offered (names and schemas)
and the output schema among them (`read_options`, which a turn also saves). The match key
(`request_key`, the one function for saving and lookup) is a SHA-256 of canonical JSON (sorted keys)
of the thread name, the system message, a digest of the earlier turns, the prompt and those options. The earlier turns' digest is chained (each turn's digest hashes the one before it with
its prompt and answer), so a whole notebook is indexed in one pass. `stream` is left out of the
options, because it changes how the answer travels and not what the model reads. The model is
compared on its own, so that a cell with no model named and no backend to ask (a demo machine
without a key) still matches the turn its notebook saved.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator, Mapping

from .conversation import METADATA_KEY, Conversation, Turn, saved_turn
from .jsontext import digest, load_json
from .schema import OutputSchema
from .tokens import count_tokens
from .tools import Toolbox
from .usage import Usage
from .wire import Delta, Event, Finish, Options, UsageReport

__all__ = ["DEFAULT_SPEED", "ReplayStore", "current_notebook", "read_options", "request_key", "replay_events"]

DEFAULT_SPEED = 80.0  # tokens a second: about the pace of GPT-4.1 nano on a good day
_NOT_READ = ("model", "stream")
_PIECES = re.compile(r"\s*\S+\s*|\s+")
_FINISH = {"complete": "stop", "length": "length", "content_filter": "content_filter"}


def _chain(before: str, turn: Turn) -> str:
    """The digest of the earlier turns once `turn` is added to them."""
    return digest([before, turn.prompt, turn.answer])


def read_options(options: Options, tools: Toolbox | None = None, schema: OutputSchema | None = None,
                 images: list[str] | None = None) -> dict[str, Any]:
    """The options a turn saves and its key reads: those set, the tools offered and the output schema (by name and
    shape), and the pictures (each one's hash or URL)."""
    read = options.changed()
    if images:
        read["images"] = images
    if tools:
        read["tools"] = list(tools.tools)
    if schema is not None:
        read["schema"] = schema.name
    if tools or schema is not None:  # what the model reads of them, so that an edited tool or schema does not match
        read["offered"] = digest([tools.specs("chat") if tools else [], schema.chat_format() if schema else None])
    return read


def request_key(thread: str, system: str | None, earlier: str, prompt: str, options: Mapping[str, Any]) -> str:
    """The match key of a request; `earlier` is the chained digest of the turns before it."""
    read = {k: v for k, v in options.items() if k not in _NOT_READ}
    return digest([thread, system, earlier, prompt, read])


def earlier_digest(turns: Iterable[Turn]) -> str:
    """The chained digest of a thread's earlier turns, as a live request sees them."""
    digest = ""
    for turn in turns:
        digest = _chain(digest, turn)
    return digest


@dataclass
class ReplayStore:
    """The saved turns of one notebook or export, by match key."""

    source: Path
    turns: dict[str, list[Turn]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ReplayStore:
        """Index a `.ipynb` notebook's saved answers or a `.json` export; ValueError if it is neither."""
        data = load_json(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("it holds no JSON object")
        store = cls(path)
        pairs = _from_notebook(data) if path.suffix == ".ipynb" else _from_export(data)
        for key, turn in pairs:
            store.turns.setdefault(key, []).append(turn)
        return store

    def __len__(self) -> int:
        return sum(len(found) for found in self.turns.values())

    def find(self, thread: str, system: str | None, earlier: list[Turn], prompt: str,
             options: Mapping[str, Any], model: str | None) -> Turn | None:
        """The saved turn for this request, if any; `model` None matches whichever model the turn used."""
        key = request_key(thread, system, earlier_digest(earlier), prompt, options)
        return next((t for t in self.turns.get(key, []) if model is None or t.model == model), None)


def current_notebook(namespace: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Path | None:
    """The open notebook as the frontend names it; a path relative to the server root is tried by its name here."""
    name = namespace.get("__vsc_ipynb_file__") or (os.environ if env is None else env).get("JPY_SESSION_NAME")
    if not name:
        return None
    path = Path(name)
    return path if path.is_file() else Path(path.name)


def _from_notebook(notebook: Mapping[str, Any]) -> Iterator[tuple[str, Turn]]:
    """Keys and turns of a notebook's saved answers, replaying each thread in cell order as Run All built it."""
    chains: dict[str, list[str]] = {}
    for cell in notebook.get("cells") or []:
        for output in (cell.get("outputs") or []) if isinstance(cell, dict) else []:
            meta = output.get("metadata") if isinstance(output, dict) else None
            saved = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
            turn = saved_turn(saved)
            if turn is None or not isinstance(saved, dict):
                continue
            thread = str(saved.get("thread", "default"))
            system = saved.get("system") if isinstance(saved.get("system"), str) else None
            chain = chains.setdefault(thread, [""])
            index = saved.get("turn")
            index = min(index, len(chain) - 1) if isinstance(index, int) and index >= 0 else len(chain) - 1
            del chain[index + 1 :]  # a --new or a re-run cell: the turns after it were not in its request
            yield request_key(thread, system, chain[index], turn.prompt, turn.options), turn
            chain.append(_chain(chain[index], turn))


def _from_export(data: dict[str, Any]) -> Iterator[tuple[str, Turn]]:
    """Keys and turns of a `%nano export` JSON file, each thread in order."""
    for thread in Conversation.from_dict(data).threads.values():
        digest = ""
        for turn in thread.turns:
            yield request_key(thread.name, thread.system, digest, turn.prompt, turn.options), turn
            digest = _chain(digest, turn)


def replay_events(turn: Turn, speed: float, sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic) -> Generator[Event, None, None]:
    """A saved answer as stream events, word by word at `speed` tokens a second (0: at once)."""
    usage = Usage.from_dict(turn.usage)
    tokens = usage.output_tokens if usage and usage.output_tokens else count_tokens(turn.answer)
    duration = tokens / speed if speed > 0 else 0.0
    total = max(len(turn.answer), 1)
    started, done = clock(), 0
    for piece in _PIECES.findall(turn.answer):
        done += len(piece)
        wait = started + duration * done / total - clock()
        if wait > 0:
            sleep(wait)
        yield Delta(piece)
    if usage is not None:
        yield UsageReport(usage)
    if turn.status in _FINISH:
        yield Finish(_FINISH[turn.status])
