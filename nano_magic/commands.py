"""The `%nano SUBCOMMAND` line magic: each subcommand is one function returning what to show, as Markdown and as text.

Thread names, prompts, system messages and model ids come from the model, the server or a shared notebook's
metadata, so every one of them is escaped (`escape_markdown`, `markdown_table`) before it reaches Markdown.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from IPython.core.error import UsageError

from .cell import in_one_line, load_replay, run_cell
from .chat import Chat
from .config import NanoSettings, default_cache_path, mask, turned_off
from .conversation import read_notebook_or_export
from .errors import OFF_MESSAGE, BadBudget, NoBackend
from .explain import (
    CODE_INSTRUCTION,
    INSTRUCTION,
    NO_ERROR,
    env_secrets,
    last_error,
    masked,
)
from .gate import Entry
from .guard import budget_line
from .guide import GUIDE
from .render import escape_markdown, markdown_table
from .replay import current_notebook
from .usage import Spend

__all__ = ["run_command", "COMMANDS", "Shown"]

SUBCOMMANDS = [
    ("%nano reset [THREAD|--all]", "forget a thread's turns (default: default), or every thread"),
    ("%nano history [THREAD]", "show the conversation"),
    ("%nano threads", "list the threads"),
    ("%nano system [--thread T] TEXT", "set a thread's system message (no TEXT: show it)"),
    ("%nano usage", "tokens and cost per thread, and the session total"),
    ("%nano config [KEY=VALUE ...]", "show the backend and settings, or change settings"),
    ("%nano models", "the models the server offers"),
    ("%nano export PATH.json|PATH.md [--thread T]", "save the conversation"),
    ("%nano load [PATH.ipynb|PATH.json]", "rebuild the threads from a saved notebook or an export"),
    ("%nano replay [PATH] [--speed N] [--offline]", "answer matching cells from a notebook's saved turns, with no request (off ends it)"),
    ("%nano explain [--dry-run] [--format code]", "ask why the last error happened and how to fix it"),
    ("%nano batches [cancel ID]", "the batches --batch submitted (status, counts, cost), or cancel one"),
    ("%nano help", "this table"),
]


@dataclass(frozen=True)
class Shown:
    """What a subcommand shows: Markdown for a notebook, plain text for a terminal."""

    markdown: str
    text: str

    @classmethod
    def say(cls, template: str, *values: object) -> Shown:
        """A sentence with values of any origin in it: `{}` in `template` takes each value, escaped in the Markdown."""
        return cls(template.format(*(escape_markdown(str(v)) for v in values)), template.format(*values))

    @classmethod
    def table(cls, header: Sequence[str], rows: Sequence[Sequence[object]], *, before: str = "", after: str = "") -> Shown:
        """A table: escaped cells in Markdown, aligned columns in text; `before` and `after` are plain sentences."""
        markdown = [escape_markdown(before), markdown_table(header, rows), escape_markdown(after)]
        text = [before, _aligned(header, rows), after]
        return cls("\n\n".join(filter(None, markdown)), "\n\n".join(filter(None, text)))


def _aligned(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in header], *([" ".join(str(v).split()) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def _help() -> Shown:
    guide = "; ".join(f"{path} ({what})" for path, what in GUIDE)
    return Shown.table(("subcommand", "what it does"), SUBCOMMANDS, before="%%nano [options] asks the model; %%nano? lists the options.",
                       after=f"The guide, in the repository: {guide}.")


SENDERS = ("models", "explain")


def run_command(line: str, chat: Chat, settings: NanoSettings, shell: Any, parse: Callable[[str], Namespace]) -> Shown | None:
    """Run one subcommand; return what to show, or None when it showed its own output; `parse` reads a cell's options."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%nano: {exc}") from None
    if not words:
        return _help()
    name, rest = words[0], words[1:]
    command = COMMANDS.get(name)
    if command is None:
        raise UsageError(f"%nano {name}: unknown subcommand. Valid: {', '.join(COMMANDS)}.")
    if name in SENDERS and turned_off():
        return Shown.say("{}", OFF_MESSAGE)
    if command is explain:
        return in_one_line(lambda: explain(rest, chat, settings, shell, parse))
    return in_one_line(lambda: command(rest, chat, settings, shell))


def reset(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """Forget turns."""
    if rest == ["--all"]:
        chat.conversation.reset()
        return Shown.say("All threads are cleared.")
    name = rest[0] if rest else "default"
    chat.conversation.reset(name)
    return Shown.say("Thread {} is cleared (its system message stays).", name)


def history(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """The conversation: Markdown with every string escaped, or plain text."""
    only = rest[0] if rest else None
    text = chat.conversation.to_text(only)
    if not text:
        return Shown.say("No conversation yet.")
    shown = Shown(chat.conversation.to_markdown(only), text)
    dropped = chat.conversation.dropped
    if not dropped:
        return shown
    note = f"{dropped} turns left the history because their cells were deleted."
    return Shown(f"{shown.markdown}\n\n*{note}*", f"{shown.text}\n\n{note}")


def threads(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """The threads in a table."""
    rows = [(t.name, len(t.turns), (t.system or "")[:80]) for t in chat.conversation.threads.values()]
    return Shown.table(("thread", "turns", "system"), rows) if rows else Shown.say("No threads yet.")


def system(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """Set or show a system message."""
    name, rest = _flag(rest, "--thread")
    thread = chat.conversation.thread(name or "default")
    if rest:
        thread.system = " ".join(rest)
        return Shown.say("System message of {} set.", thread.name)
    return Shown.say("System message of {}: {}", thread.name, thread.system or "(none)")


def usage(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """Tokens and cost per thread in this session, and what was spent against the budget."""
    try:
        cap = chat.gate.cap()
        line = "" if cap is None else budget_line(cap, chat.ledger.spent)
    except BadBudget as exc:
        line = str(exc)
    if not len(chat.ledger):
        return Shown.say("No tokens used yet in this session." + ("\n\n{}" if line else ""), *([line] if line else []))
    per_label: dict[str, list[Entry]] = {}
    for entry in chat.ledger:
        per_label.setdefault(entry.label, []).append(entry)
    rows: list[tuple[object, ...]] = []
    for name, entries in per_label.items():
        turns = len(chat.conversation.threads[name].turns) if name in chat.conversation.threads else ""
        rows.append((name, turns, *_cells(entries)))
    rows.append(("total", "", *_cells(list(chat.ledger))))
    after = "\n\n".join(filter(None, [ESTIMATED if any(e.estimated for e in chat.ledger) else "", line]))
    return Shown.table(("thread", "turns", "requests", "input tokens", "output tokens", "cost"), rows, after=after)


ESTIMATED = ("* estimated: answers stopped, cut or capped before the server reported usage are counted "
             "as their input estimate plus the tokens that arrived.")


def _cells(entries: list[Entry]) -> tuple[int, int, int, str]:
    spend = Spend()
    for entry in entries:
        spend.add(entry.model, entry.usage)
    if spend.unpriced and not spend.dollars:
        money = "price unknown"
    else:
        money = f"${spend.dollars:.6f}" + (" (price unknown for some models)" if spend.unpriced else "")
    money += " *" if any(e.estimated for e in entries) else ""
    return spend.requests, spend.tokens.input_tokens, spend.tokens.output_tokens, money


def config(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
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
        return Shown.say("{}", exc)
    rows = [
        ("backend", backend.name), ("chosen because", backend.reason),
        ("ignored", ", ".join(backend.ignored) + " (set, but not used by this backend)" if backend.ignored else "nothing"),
        ("base URL", backend.shown_url()), ("model", backend.model or "(the server's first model)"),
        ("API", settings.api), ("key", f"{mask(backend.api_key)} from {backend.key_source}" if backend.api_key else "(none)"),
        *((n, str(getattr(settings, n))) for n in ("max_retries", "connect_timeout", "read_timeout", "refresh_rate", "display")),
    ]
    return Shown.table(("setting", "value"), rows)


def models(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """The server's models, with shutdown dates where it gives them."""
    listed = chat.models(refresh=True)
    rows = [(("⚠ " if m.get("shutdown_date") else "") + str(m.get("id")), m.get("owned_by", ""), m.get("shutdown_date") or "")
            for m in listed]
    retiring = sum(1 for m in listed if m.get("shutdown_date"))
    note = f"⚠ marks {retiring} models the server says will shut down." if retiring else ""
    return Shown.table(("model", "owner", "shutdown date"), rows, after=note) if rows else Shown.say("The server lists no models.")


def export(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
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
        path.write_text(chat.conversation.to_markdown(only), encoding="utf-8")
    return Shown.say("Saved to {}.", path)


def load(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
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
    return Shown.say("Loaded {} turns in {} threads from {}.", turns, len(loaded.threads), path)


def replay(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """Answer matching cells from a notebook's saved turns, or `off`."""
    if rest == ["off"]:
        settings.replay, chat.replay_store = "off", None
        return Shown.say("Replay is off: every cell goes to the model.")
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
    return Shown.say("Replaying {} saved answers from {} at {} tokens/s; other cells {}.", len(store), store.source, f"{pace:g}", others)


def explain(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any, parse: Callable[[str], Namespace]) -> None:
    """Ask, one-shot, why the last error happened and how to fix it; secrets are masked in what is sent."""
    fmt, rest = _flag(rest, "--format")
    dry_run = "--dry-run" in rest
    if [word for word in rest if word != "--dry-run"] or fmt not in (None, "markdown", "text", "code"):
        raise UsageError("%nano explain [--dry-run] [--format markdown|text|code]")
    error = last_error(shell)
    if error is None:
        print(NO_ERROR)
        return None
    args = parse("--once")
    args.format, args.dry_run = fmt or "markdown", dry_run
    args.system = CODE_INSTRUCTION if fmt == "code" else INSTRUCTION
    run_cell(shell, chat, settings, args, masked(error.prompt(), [*_known_secrets(chat), *env_secrets(os.environ)]))
    return None


def batches(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """The recorded batches, newest first, or `cancel ID`: what the batch finished is kept for collecting."""
    from .batch_records import BatchRecords
    from .provider_batch import cancel, counts

    if rest and (rest[0] != "cancel" or len(rest) != 2):
        raise UsageError("%nano batches [cancel ID]")
    with BatchRecords(settings.cache_path or default_cache_path()) as records:
        if rest:
            record = records.get(rest[1])
            if record is None:
                raise UsageError(f"%nano batches cancel: no recorded batch {rest[1]!r}; %nano batches lists them.")
            if turned_off():
                return Shown.say("{}", OFF_MESSAGE)
            if record.base_url != chat.backend.base_url:
                raise UsageError(f"%nano batches cancel: {record.id} went to another server; set the base URL it went to first.")
            batch = cancel(chat.gate.batch_client(), record.id)
            completed, failed = counts(batch)
            records.update(record.id, str(batch.get("status") or "cancelling"), completed, failed)
            return Shown.say("Batch {} is {}: what it finished is kept; run its cell again to collect that and resubmit the rest.",
                             record.id, batch.get("status") or "cancelling")
        rows = [(r.id, r.label, r.status, f"{r.completed:,}/{r.failed:,}/{r.total:,}",
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)), _batch_cost(r.cost, r.reserved))
                for r in records.all()]
    if not rows:
        return Shown.say("No batches yet: %%nano --map VAR --batch submits one.")
    return Shown.table(("batch", "cell", "status", "completed/failed/total", "created", "cost so far"), rows)


def _batch_cost(cost: float | None, reserved: float | None) -> str:
    if cost is not None:
        return f"${cost:.6f}"
    return f"not collected (up to ${reserved:.6f})" if reserved else "not collected"


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


def help_(rest: list[str], chat: Chat, settings: NanoSettings, shell: Any) -> Shown:
    """The subcommands."""
    return _help()


COMMANDS: dict[str, Callable[..., Shown | None]] = {  # each takes (rest, chat, settings, shell); explain also a parser
    "reset": reset, "history": history, "threads": threads, "system": system, "usage": usage,
    "config": config, "models": models, "export": export, "load": load, "replay": replay,
    "explain": explain, "batches": batches, "help": help_,
}
