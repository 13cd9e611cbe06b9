"""The `%nano SUBCOMMAND` line magic: each subcommand is one function returning Markdown to show."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

from .chat import Chat
from .config import NanoSettings, mask, turned_off
from .conversation import read_notebook_or_export
from .errors import OFF_MESSAGE, CellFailed, NanoError, NoBackend
from .explain import CODE_INSTRUCTION, INSTRUCTION, NO_ERROR, env_secrets, last_error, masked
from .guard import budget_line, spent
from .magics import NanoMagics
from .render import to_markdown
from .replay import current_notebook
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
| `%nano replay [PATH] [--speed N] [--offline]` | answer matching cells from a notebook's saved turns, with no request (`off` ends it) |
| `%nano explain [--dry-run] [--format code]` | ask why the last error happened and how to fix it |
| `%nano help` | this table |
"""


SENDERS = ("models", "explain")


def run_command(line: str, chat: Chat, settings: NanoSettings, shell: Any) -> str | None:
    """Run one subcommand; return Markdown to show, or None when it showed its own output."""
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
    if name in SENDERS and turned_off():
        return OFF_MESSAGE
    try:
        return command(rest, chat, settings, shell)
    except (NanoError, NoBackend) as exc:
        raise CellFailed(str(exc)) from None


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
    name, rest = _flag(rest, "--thread")
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
    """Tokens and cost per thread in this session, and what was spent against the budget."""
    cap = "" if chat.budget is None else "\n\n" + budget_line(chat.budget, spent(chat.ledger)).replace("$", "\\$")
    if not chat.ledger:
        return "No tokens used yet in this session." + cap
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
    return "\n".join(lines) + cap


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
    only, rest = _flag(rest, "--thread")
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
    path = Path(rest[0]).expanduser() if rest else current_notebook(shell.user_ns)
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


def replay(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """Answer matching cells from a notebook's saved turns, or `off`."""
    from .cell import load_replay

    if rest == ["off"]:
        settings.replay, chat.replay_store = "off", None
        return "Replay is off: every cell goes to the model."
    usage = "%nano replay [PATH.ipynb|PATH.json] [--speed TOKENS_PER_S] [--offline], or %nano replay off"
    speed, rest = _flag(rest, "--speed")
    offline = "--offline" in rest
    rest = [word for word in rest if word != "--offline"]
    if len(rest) > 1 or any(word.startswith("-") for word in rest):
        raise UsageError(usage)
    try:
        pace = settings.replay_speed if speed is None else float(speed)
        if pace < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--speed {speed}: give tokens a second, 0 or more (0: at once).") from None
    path = Path(rest[0]).expanduser() if rest else current_notebook(shell.user_ns)
    store = load_replay(path, "%nano replay")
    chat.replay_store = store
    settings.replay, settings.replay_speed = ("offline" if offline else "on"), pace
    others = "are refused (offline)" if offline else "go to the model"
    return f"Replaying {len(store)} saved answers from `{store.source}` at {pace:g} tokens/s; other cells {others}."


def explain(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> None:
    """Ask, one-shot, why the last error happened and how to fix it; secrets are masked in what is sent."""
    from .cell import run_cell

    fmt, rest = _flag(rest, "--format")
    dry_run = "--dry-run" in rest
    if [word for word in rest if word != "--dry-run"] or fmt not in (None, "markdown", "text", "code"):
        raise UsageError("%nano explain [--dry-run] [--format markdown|text|code]")
    error = last_error(shell)
    if error is None:
        print(NO_ERROR)
        return None
    args = parse_argstring(NanoMagics.nano_cell, "--once")
    args.format, args.dry_run = fmt or "markdown", dry_run
    args.system = CODE_INSTRUCTION if fmt == "code" else INSTRUCTION
    run_cell(shell, chat, settings, args, masked(error.prompt(), [*_known_secrets(chat), *env_secrets(os.environ)]))
    return None


def _known_secrets(chat: Chat) -> list[str]:
    try:
        return chat.backend.secrets()
    except NoBackend:
        return []


def _flag(rest: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value after `name`, and the other words."""
    if name not in rest:
        return None, rest
    i = rest.index(name)
    if i + 1 >= len(rest):
        raise UsageError(f"{name} needs a value.")
    return rest[i + 1], rest[:i] + rest[i + 2 :]


def help_(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> str:
    """The subcommands."""
    return HELP


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:80]


COMMANDS: dict[str, Callable[[list[str], Chat, NanoSettings, Any], str | None]] = {
    "reset": reset, "history": history, "threads": threads, "system": system, "usage": usage,
    "config": config, "models": models, "export": export, "load": load, "replay": replay,
    "explain": explain, "help": help_,
}
