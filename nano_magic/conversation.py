"""Named threads of turns: replace-on-rerun, and saving to and loading from JSON, Markdown and notebooks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from .images import from_record, record_line, record_ok, thumbnail_markdown, user_message
from .imagestore import default_store
from .jsontext import load_json

__all__ = ["Turn", "Thread", "Conversation", "METADATA_KEY", "metadata", "read_notebook_or_export", "saved_turn", "step_messages", "step_line"]

METADATA_KEY = "nano_magic"
FORMAT_VERSION = 1


@dataclass
class Turn:
    """One prompt and its answer."""

    prompt: str
    answer: str
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] | None = None
    status: str = "complete"
    cell_id: str | None = None
    execution_count: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # the rounds that called tools: {"text", "calls": [...]}
    # The prompt's pictures as `Picture.record` gives them: SHA-256, media type, size (the bytes are in the image
    # store), or a URL; replay and cache keys that cover earlier turns see these hashes.
    images: list[dict[str, Any]] = field(default_factory=list)

    def messages(self, api: str = "chat") -> list[dict[str, Any]]:
        """This turn as the API saw it: the prompt (with its pictures, from the store), the tool calls and their results, the answer."""
        answer = [{"role": "assistant", "content": self.answer}] if self.answer or not self.steps else []
        return [self.user_message(api), *step_messages(self.steps, api), *answer]

    def user_message(self, api: str) -> dict[str, Any]:
        """The prompt as sent: its pictures read back from the store, "[image not available]" for any the store lacks."""
        if not self.images:
            return {"role": "user", "content": self.prompt}
        store = default_store()
        return user_message(self.prompt, (from_record(r, store) for r in self.images), api)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        """A turn from saved data, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        turn = cls(**{k: v for k, v in data.items() if k in names})
        turn.steps = _steps_from(turn.steps)
        turn.images = [dict(r) for r in turn.images if record_ok(r)] if isinstance(turn.images, list) else []
        return turn


@dataclass
class Thread:
    """A system message and the turns that follow it."""

    name: str
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def index_of(self, cell_id: str | None) -> int | None:
        """The position of the turn that `cell_id` made, if any."""
        if cell_id is None:
            return None
        return next((i for i, t in enumerate(self.turns) if t.cell_id == cell_id), None)

    def before(self, cell_id: str | None) -> list[Turn]:
        """The turns a cell's request carries: those before its own turn, or all of them."""
        index = self.index_of(cell_id)
        return self.turns[:index] if index is not None else list(self.turns)

    def record(self, turn: Turn) -> int:
        """Store a turn, replacing the one from the same cell; return its index."""
        index = self.index_of(turn.cell_id)
        if index is None:
            self.turns.append(turn)
            return len(self.turns) - 1
        self.turns[index] = turn
        return index

    def messages(self, turns: Iterable[Turn], api: str = "chat") -> list[dict[str, Any]]:
        """Turns as messages or input items (the system message travels separately)."""
        return [m for t in turns for m in t.messages(api)]


class Conversation:
    """Every thread of one kernel."""

    def __init__(self, threads: Iterable[Thread] = ()) -> None:
        self.threads: dict[str, Thread] = {t.name: t for t in threads}
        self.dropped = 0  # turns removed because their cells were deleted

    def thread(self, name: str) -> Thread:
        """The thread called `name`, created empty if new."""
        return self.threads.setdefault(name, Thread(name))

    def reset(self, name: str | None = None) -> None:
        """Forget one thread's turns (keeping its system message), or every thread."""
        if name is None:
            self.threads.clear()
        elif name in self.threads:
            self.threads[name].turns.clear()

    def forget_cell(self, cell_id: str | None, keep: str | None = None) -> None:
        """Remove a cell's turn from every thread but `keep`: one cell has at most one turn."""
        if cell_id is None:
            return
        for thread in self.threads.values():
            if thread.name != keep:
                thread.turns = [t for t in thread.turns if t.cell_id != cell_id]

    def drop_cells(self, cell_ids: Iterable[str]) -> int:
        """Remove the turns of deleted cells; return how many went."""
        gone = set(cell_ids)
        removed = 0
        for thread in self.threads.values():
            kept = [t for t in thread.turns if t.cell_id not in gone]
            removed += len(thread.turns) - len(kept)
            thread.turns = kept
        self.dropped += removed
        return removed

    def to_dict(self, only: str | None = None) -> dict[str, Any]:
        """A JSON-ready copy: one thread, or all."""
        chosen = [t for t in self.threads.values() if only is None or t.name == only]
        return {"format": METADATA_KEY, "version": FORMAT_VERSION, "threads": [asdict(t) for t in chosen]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        """Rebuild from `to_dict` output; ValueError when a thread or turn in it does not have the shape of one."""
        if data.get("format") != METADATA_KEY:
            raise ValueError("this JSON file is not a nano_magic export")
        threads = []
        for t in data.get("threads") or []:
            t = t if isinstance(t, dict) else {}
            turns = [saved_turn(x) for x in t.get("turns") or []] if isinstance(t.get("turns") or [], list) else [None]
            if None in turns or not isinstance(t.get("name"), str) or not _text_or_none(t.get("system")):
                raise ValueError("a thread in it does not have the shape of a nano_magic thread")
            threads.append(Thread(t["name"], t.get("system"), turns))  # type: ignore[arg-type]
        return cls(threads)

    @classmethod
    def from_notebook(cls, notebook: dict[str, Any]) -> Conversation:
        """Rebuild the threads from the `nano_magic` metadata of a notebook's saved answers; an output of another shape is skipped."""
        conversation = cls()
        for cell in notebook.get("cells") or []:
            for output in (cell.get("outputs") or []) if isinstance(cell, dict) else []:
                meta = output.get("metadata") if isinstance(output, dict) else None
                saved = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
                turn = saved_turn(saved)
                if turn is None or not isinstance(saved, dict) or not isinstance(saved.get("thread", "default"), str) or not _text_or_none(saved.get("system")):
                    continue
                thread = conversation.thread(saved.get("thread", "default"))
                thread.system = saved.get("system", thread.system)
                turn.cell_id = cell.get("id") or turn.cell_id
                thread.record(turn)
        return conversation

    def merge(self, other: Conversation) -> None:
        """Take over every thread of `other`."""
        self.threads.update(other.threads)

    def to_markdown(self, only: str | None = None) -> str:
        """A readable transcript in Markdown: names, prompts and system messages escaped, answers as saved."""
        from .render import escape_markdown, to_markdown

        store = default_store()

        def picture(record: dict[str, Any]) -> str:
            return thumbnail_markdown(record, store) or escape_markdown(record_line(record))

        return self._transcript(only, escape_markdown, to_markdown, "**", "# ", "## ", picture)

    def to_text(self, only: str | None = None) -> str:
        """The same transcript as plain text, for a terminal."""
        return self._transcript(only, str, str, "", "", "", record_line)

    def _transcript(self, only: str | None, escape: Callable[[str], str], answer: Callable[[str], str],
                    strong: str, title: str, heading: str, picture: Callable[[dict[str, Any]], str]) -> str:
        parts = []
        for thread in self.threads.values():
            if only is not None and thread.name != only:
                continue
            parts.append(f"{title}Thread: {escape(thread.name)}\n")
            if thread.system:
                parts.append(f"{strong}System:{strong} {escape(thread.system)}\n")
            for number, turn in enumerate(thread.turns, 1):
                status = "" if turn.status == "complete" else f" ({escape(turn.status)})"
                model = escape(turn.model or "Model")
                steps = "".join(f"{answer(s['text'])}\n\n" if s.get("text") else "" for s in turn.steps)
                calls = [step_line(c) for s in turn.steps for c in s.get("calls") or []]
                listed = "".join(f"- {escape(line)}\n" for line in calls) + ("\n" if calls else "")
                pictures = "".join(f"{picture(record)}\n\n" for record in turn.images)
                parts.append(f"{heading}Turn {number}{status}\n\n{strong}You:{strong}\n\n{escape(turn.prompt)}\n\n{pictures}"
                             f"{strong}{model}:{strong}\n\n{steps}{listed}{answer(turn.answer)}\n")
        return "\n".join(parts)


def saved_turn(saved: Any) -> Turn | None:
    """A turn from untrusted saved data (a shared notebook's metadata, an export), or None when it does not have the shape of one."""
    if not isinstance(saved, dict) or not isinstance(saved.get("prompt"), str) or not isinstance(saved.get("answer"), str):
        return None
    turn = Turn.from_dict(saved)
    if not isinstance(turn.options, dict) or not isinstance(turn.model, str) or not isinstance(turn.status, str):
        return None
    return turn


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _steps_from(saved: Any) -> list[dict[str, Any]]:
    """Saved steps in their shape, whatever a shared notebook's metadata held: each a text and a list of calls."""
    if not isinstance(saved, list):
        return []
    keys = ("id", "name", "arguments", "result")
    return [
        {"text": str(step.get("text") or ""), "calls": [
            {**{k: str(call.get(k) or "") for k in keys}, "error": None if call.get("error") is None else str(call["error"])}
            for call in step.get("calls") or [] if isinstance(call, dict)
        ]}
        for step in saved if isinstance(step, dict) and isinstance(step.get("calls", []), list)
    ]


def step_messages(steps: list[dict[str, Any]], api: str) -> list[dict[str, Any]]:
    """Tool rounds as the API takes them back: assistant `tool_calls` and `tool` messages, or `function_call` and `function_call_output` items."""
    out: list[dict[str, Any]] = []
    for step in steps:
        calls = [c for c in step.get("calls") or [] if isinstance(c, dict)]
        text = str(step.get("text") or "")
        if api == "responses":
            out += [{"role": "assistant", "content": text}] if text else []
            out += [{"type": "function_call", "call_id": str(c.get("id")), "name": str(c.get("name")), "arguments": str(c.get("arguments"))} for c in calls]
            out += [{"type": "function_call_output", "call_id": str(c.get("id")), "output": str(c.get("result"))} for c in calls]
            continue
        wire = [{"id": str(c.get("id")), "type": "function", "function": {"name": str(c.get("name")), "arguments": str(c.get("arguments"))}} for c in calls]
        # No text: `content` is left out, which OpenAI reads as null and stricter servers (llama-cpp-python) accept.
        out.append({"role": "assistant", **({"content": text} if text else {}), "tool_calls": wire})
        out += [{"role": "tool", "tool_call_id": str(c.get("id")), "content": str(c.get("result"))} for c in calls]
    return out


def step_line(call: dict[str, Any], width: int = 40) -> str:
    """One call for people: `→ area(r=3) = 28.27`, each value shortened to `width` characters."""
    try:
        given = load_json(call.get("arguments") or "{}")
    except json.JSONDecodeError:
        given = None
    if isinstance(given, dict):
        shown = ", ".join(f"{k}={_short(json.dumps(v, ensure_ascii=False), width)}" for k, v in given.items())
    else:
        shown = _short(str(call.get("arguments")), width)
    head = f"→ {call.get('name')}({shown})"
    if call.get("error"):
        return f"{head} failed: {_short(str(call['error']), 2 * width)}"
    return f"{head} = {_short(str(call.get('result')), width)}"


def _short(text: str, width: int) -> str:
    text = " ".join(text[: 4 * width].split())  # bounded work however long the value
    return text if len(text) <= width else text[: width - 1] + "…"


def metadata(thread: Thread, index: int) -> dict[str, Any]:
    """What a saved answer carries so that `%nano load` can rebuild its turn."""
    turn = thread.turns[index]
    return {METADATA_KEY: {"version": FORMAT_VERSION, "thread": thread.name, "turn": index, "system": thread.system, **asdict(turn)}}


def read_notebook_or_export(path: Path) -> Conversation:
    """Load a `.ipynb` notebook or a `.json` export."""
    data = load_json(path.read_text(encoding="utf-8"))
    if path.suffix == ".ipynb":
        return Conversation.from_notebook(data)
    return Conversation.from_dict(data)
