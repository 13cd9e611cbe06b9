"""Named threads of turns: replace-on-rerun, and saving to and loading from JSON, Markdown and notebooks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["Turn", "Thread", "Conversation", "METADATA_KEY", "metadata", "read_notebook_or_export"]

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

    def messages(self) -> list[dict[str, str]]:
        """This turn as a user and an assistant message."""
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer}]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        """A turn from saved data, ignoring unknown keys."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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

    def messages(self, turns: Iterable[Turn]) -> list[dict[str, str]]:
        """Turns as chat messages (the system message travels separately)."""
        return [m for t in turns for m in t.messages()]


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
        """Rebuild from `to_dict` output."""
        if data.get("format") != METADATA_KEY:
            raise ValueError("this JSON file is not a nano_magic export")
        return cls(
            Thread(t["name"], t.get("system"), [Turn.from_dict(x) for x in t.get("turns", [])])
            for t in data.get("threads", [])
        )

    @classmethod
    def from_notebook(cls, notebook: dict[str, Any]) -> Conversation:
        """Rebuild the threads from the `nano_magic` metadata of a notebook's saved answers."""
        conversation = cls()
        for cell in notebook.get("cells", []):
            for output in cell.get("outputs", []):
                saved = (output.get("metadata") or {}).get(METADATA_KEY)
                if not isinstance(saved, dict) or "prompt" not in saved:
                    continue
                thread = conversation.thread(saved.get("thread", "default"))
                thread.system = saved.get("system", thread.system)
                turn = Turn.from_dict(saved)
                turn.cell_id = cell.get("id") or turn.cell_id
                thread.record(turn)
        return conversation

    def merge(self, other: Conversation) -> None:
        """Take over every thread of `other`."""
        self.threads.update(other.threads)

    def to_markdown(self, only: str | None = None, render: Callable[[str], str] = str) -> str:
        """A readable transcript; `render` turns an answer into portable Markdown."""
        parts = []
        for thread in self.threads.values():
            if only is not None and thread.name != only:
                continue
            parts.append(f"# Thread: {thread.name}\n")
            if thread.system:
                parts.append(f"*System:* {thread.system}\n")
            for number, turn in enumerate(thread.turns, 1):
                status = "" if turn.status == "complete" else f" ({turn.status})"
                parts.append(f"## Turn {number}{status}\n\n**You:**\n\n{turn.prompt}\n\n**{turn.model or 'Model'}:**\n\n{render(turn.answer)}\n")
        return "\n".join(parts)


def metadata(thread: Thread, index: int) -> dict[str, Any]:
    """What a saved answer carries so that `%nano load` can rebuild its turn."""
    turn = thread.turns[index]
    return {METADATA_KEY: {"version": FORMAT_VERSION, "thread": thread.name, "turn": index, "system": thread.system, **asdict(turn)}}


def read_notebook_or_export(path: Path) -> Conversation:
    """Load a `.ipynb` notebook or a `.json` export."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if path.suffix == ".ipynb":
        return Conversation.from_notebook(data)
    return Conversation.from_dict(data)
