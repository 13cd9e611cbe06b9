"""The `%nano SUBCOMMAND` line magic: each subcommand is one function returning Markdown to show."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from IPython.core.error import UsageError

from .chat import Chat
from .config import NanoSettings, mask
from .conversation import read_notebook_or_export
from .errors import CellFailed, NanoError, NoBackend
from .render import to_markdown
from .usage import Usage

__all__ = ["run_command", "COMMANDS"]

HELP = """\
`%%nano [options]` asks the model; `%%nano?` lists the options.

| subcommand | what it does |
| --- | --- |
| `%nano reset [THREAD\\|--all]` | forget a thread's turns (default: `default`), or every thread |
| `%nano history [THREAD]` | show the conversation |
| `%nano threads` | list the threads |
| `%nano system [--thread T] TEXT` | set a thread's system message (no TEXT: show it) |
| `%nano usage` | tokens and cost per thread, and the session total |
| `%nano config [KEY=VALUE ...]` | show the backend and settings, or change settings |
| `%nano models` | the models the server offers |
| `%nano export PATH.json\\|PATH.md [--thread T]` | save the conversation |
| `%nano load [PATH.ipynb\\|PATH.json]` | rebuild the threads from a saved notebook or an export |
| `%nano help` | this table |
"""


def run_command(line: str, chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Run one subcommand; return Markdown to show."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%nano: {exc}") from None
    if not words:
        return HELP
    name, rest = words[0], words[1:]
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"%nano {name}: unknown subcommand. Valid: {', '.join(COMMANDS)}.")
    try:
        return command(rest, chat, settings, shell)
    except (NanoError, NoBackend) as exc:
        raise CellFailed(str(exc)) from None


def _thread_flag(rest: list[str]) -> tuple[str | None, list[str]]:
    if "--thread" in rest:
        i = rest.index("--thread")
        if i + 1 >= len(rest):
            raise UsageError("--thread needs a name.")
        return rest[i + 1], rest[:i] + rest[i + 2 :]
    return None, rest


def reset(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Forget turns."""
    if rest == ["--all"]:
        chat.conversation.reset()
        return "All threads are cleared."
    name = rest[0] if rest else "default"
    chat.conversation.reset(name)
    return f"Thread `{name}` is cleared (its system message stays)."


def history(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """The conversation as Markdown."""
    only = rest[0] if rest else None
    text = chat.conversation.to_markdown(only, render=to_markdown) or "No conversation yet."
    dropped = chat.conversation.dropped
    return text + (f"\n\n*{dropped} turns left the history because their cells were deleted.*" if dropped else "")


def threads(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """The threads in a table."""
    rows = [f"| `{t.name}` | {len(t.turns)} | {_cell(t.system or '')} |" for t in chat.conversation.threads.values()]
    return "| thread | turns | system |\n| --- | --- | --- |\n" + "\n".join(rows) if rows else "No threads yet."


def system(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Set or show a system message."""
    name, rest = _thread_flag(rest)
    thread = chat.conversation.thread(name or "default")
    if rest:
        thread.system = " ".join(rest)
        return f"System message of `{thread.name}` set."
    return f"System message of `{thread.name}`: {thread.system or '(none)'}"


@dataclass
class _Spend:
    """Requests, tokens and dollars added up."""

    requests: int = 0
    tokens: Usage = field(default_factory=Usage)
    dollars: float = 0.0
    unpriced: bool = False

    def add(self, model: str, used: Usage) -> None:
        cost = used.cost(model)
        self.requests += 1
        self.tokens = self.tokens + used
        self.dollars += cost or 0.0
        self.unpriced = self.unpriced or cost is None

    def cells(self) -> str:
        money = f"\\${self.dollars:.6f}" + (" (some models unpriced)" if self.unpriced else "")
        return f"{self.requests} | {self.tokens.input_tokens} | {self.tokens.output_tokens} | {money} |"


def usage(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Tokens and cost per thread in this session."""
    if not chat.ledger:
        return "No tokens used yet in this session."
    per_thread: dict[str, _Spend] = {}
    total = _Spend()
    for thread, model, used in chat.ledger:
        per_thread.setdefault(thread, _Spend()).add(model, used)
        total.add(model, used)
    lines = ["| thread | turns | requests | input tokens | output tokens | cost |", "| --- | --- | --- | --- | --- | --- |"]
    for name, spend in per_thread.items():
        turns = len(chat.conversation.threads[name].turns) if name in chat.conversation.threads else 0
        lines.append(f"| `{name}` | {turns} | {spend.cells()}")
    lines.append(f"| **total** | | {total.cells()}")
    return "\n".join(lines)


def config(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Show the backend and settings, or set `KEY=VALUE` settings."""
    names = settings.trait_names(config=True)
    for pair in rest:
        key, sep, value = pair.partition("=")
        if not sep or key not in names:
            raise UsageError(f"%nano config {pair}: use KEY=VALUE with KEY one of {', '.join(sorted(names))}.")
        try:
            setattr(settings, key, None if value in ("", "None") else value)
        except Exception as exc:  # traitlets raises TraitError with the allowed values
            raise UsageError(f"%nano config {key}: {str(exc).splitlines()[0]}") from None
    chat.configure(**settings.connection())
    try:
        backend = chat.backend
    except NoBackend as exc:
        return "```text\n" + str(exc) + "\n```"
    rows = [
        ("backend", backend.name), ("chosen because", backend.reason),
        ("ignored", ", ".join(backend.ignored) + " (set, but not used by this backend)" if backend.ignored else "nothing"),
        ("base URL", backend.base_url), ("model", backend.model or "(the server's first model)"),
        ("API", settings.api), ("key", f"{mask(backend.api_key)} from {backend.key_source}" if backend.api_key else "(none)"),
        *((n, str(getattr(settings, n))) for n in ("max_retries", "connect_timeout", "read_timeout", "refresh_rate", "display")),
    ]
    return "| setting | value |\n| --- | --- |\n" + "\n".join(f"| {k} | `{v}` |" for k, v in rows)


def models(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """The server's models, with shutdown dates where it gives them."""
    listed = chat.models(refresh=True)
    rows = [f"| `{m.get('id')}` | {m.get('owned_by', '')} | {m.get('shutdown_date') or ''} |" for m in listed]
    return "| model | owner | shutdown date |\n| --- | --- | --- |\n" + "\n".join(rows) if rows else "The server lists no models."


def export(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Save threads to `.json` (lossless) or `.md` (a readable transcript)."""
    only, rest = _thread_flag(rest)
    if len(rest) != 1 or Path(rest[0]).suffix not in (".json", ".md"):
        raise UsageError("%nano export PATH.json|PATH.md [--thread T]")
    if only is not None and only not in chat.conversation.threads:
        raise UsageError(f"%nano export: there is no thread named {only!r}.")
    path = Path(rest[0]).expanduser()
    if path.suffix == ".json":
        path.write_text(json.dumps(chat.conversation.to_dict(only), indent=1, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text(chat.conversation.to_markdown(only, render=to_markdown), encoding="utf-8")
    return f"Saved to `{path}`."


def load(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Rebuild threads from a saved notebook or a JSON export, without any request."""
    path = Path(rest[0]).expanduser() if rest else _current_notebook(shell)
    if path is None:
        raise UsageError("%nano load: this frontend does not say which notebook is open; give a path: %nano load PATH.ipynb")
    if not path.is_file():
        raise UsageError(f"%nano load: {path} does not exist.")
    try:
        loaded = read_notebook_or_export(path)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"%nano load: {path} is not a notebook or a nano_magic export ({exc}).") from None
    chat.conversation.merge(loaded)
    turns = sum(len(t.turns) for t in loaded.threads.values())
    return f"Loaded {turns} turns in {len(loaded.threads)} threads from `{path}`."


def _current_notebook(shell: Any) -> Path | None:
    """The open notebook as the frontend names it; a path relative to the server root is tried by its name here."""
    name = shell.user_ns.get("__vsc_ipynb_file__") or os.environ.get("JPY_SESSION_NAME")
    if not name:
        return None
    path = Path(name)
    return path if path.is_file() else Path(path.name)


def help_(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """The subcommands."""
    return HELP


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:80]


COMMANDS: dict[str, Callable[[list[str], Chat, NanoSettings, Any], str]] = {
    "reset": reset, "history": history, "threads": threads, "system": system, "usage": usage,
    "config": config, "models": models, "export": export, "load": load, "help": help_,
}
