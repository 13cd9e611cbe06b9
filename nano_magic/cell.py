"""One `%%nano` cell: check the input, stream the answer into a view, keep the result."""

from __future__ import annotations

import re
from argparse import Namespace
from typing import Any

from IPython.core.error import UsageError

from .chat import Answer, Chat, Interrupted, validate
from .client import NanoError, Options
from .config import NoBackend
from .context import describe
from .conversation import METADATA_KEY, metadata
from .display import View, open_view, pick_mode
from .magics import CellFailed
from .render import to_markdown
from .usage import format_usage

__all__ = ["run_cell", "parent_cell", "options_from"]

_CODE_BLOCK = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
NOTES = {
    "length": "The answer hit the token limit and is cut short (raise --max-tokens).",
    "content_filter": "The provider's content filter stopped the answer.",
    "stopped": "Stopped by you; the partial answer is kept.",
    "cut": "The answer is incomplete: it broke off.",
}


def options_from(args: Namespace, default_api: str) -> Options:
    """Cell arguments as request options."""
    return Options(
        model=args.model, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
        seed=args.seed, stop=args.stop, json=args.json, stream=not args.no_stream, api=args.api or default_api,
    )


def parent_cell(shell: Any) -> tuple[str | None, list[str]]:
    """The running cell's id and the ids of cells deleted since, as the frontend sent them."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None, []
    meta = (kernel.get_parent() or {}).get("metadata") or {}
    return meta.get("cellId"), list(meta.get("deletedCells") or [])


def run_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str) -> Any:
    """Run one cell; UsageError for bad input (nothing sent), CellFailed for a failed answer."""
    if args.map:
        from .map_cell import run_map_cell

        try:
            return run_map_cell(shell, chat, settings, args, body, options_from(args, settings.api))
        except (NoBackend, NanoError) as exc:
            raise CellFailed(str(exc)) from None
    prompt = _prompt(shell, args, body)
    options = options_from(args, settings.api)
    try:
        validate(options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cell_id, deleted = parent_cell(shell)
    chat.conversation.drop_cells(deleted)
    try:
        if args.dry_run:
            thread = chat.scratch_thread(args.thread, system=args.system, new=args.new or args.once)
            print(chat.prepare(prompt, options, thread=thread, cell_id=cell_id).describe())
            return None
        return _ask(shell, chat, settings, args, prompt, options, cell_id)
    except (NoBackend, NanoError) as exc:
        raise CellFailed(str(exc)) from None


def _prompt(shell: Any, args: Namespace, body: str) -> str:
    prompt = body.strip()
    if not prompt:
        raise UsageError("The cell is empty: write a question under %%nano.")
    if args.context:
        try:
            prompt += describe([n.strip() for n in args.context.split(",") if n.strip()], shell.user_ns)
        except KeyError as exc:
            raise UsageError(f"--context: there is no variable named {exc.args[0]!r}.") from None
    return prompt


def _ask(shell: Any, chat: Chat, settings: Any, args: Namespace, prompt: str, options: Options, cell_id: str | None) -> Answer:
    model = chat.model_for(options)
    if shutdown := chat.shutdown_date(model):
        print(f"Warning: the server lists {model} as shutting down on {shutdown}; choose another with -m.")
    turn = len(chat.scratch_thread(args.thread, new=args.new or args.once).before(cell_id)) + 1
    header = f"{model} · {args.thread} · turn {turn}" if not args.once else f"{model} · one-shot"
    view = open_view(pick_mode(settings.display, shell), header, settings.refresh_rate)
    try:
        answer = chat.ask(
            prompt, view.delta, thread=args.thread, system=args.system, new=args.new, once=args.once,
            cell_id=cell_id, execution_count=getattr(shell, "execution_count", None),
            on_retry=lambda retry: view.notice(str(retry)), **options.__dict__,
        )
    except Interrupted as stop:
        _end(shell, chat, view, stop.answer, args)
        raise CellFailed(NOTES["stopped"] if stop.answer else "Stopped before any answer arrived.") from None
    except NanoError as exc:
        _end(shell, chat, view, getattr(exc, "answer", None), args)
        raise CellFailed(str(exc)) from None
    _end(shell, chat, view, answer, args)
    if answer.error:
        raise CellFailed(answer.error)
    return answer


def _end(shell: Any, chat: Chat, view: View, answer: Answer | None, args: Namespace) -> None:
    """Swap in the final output and store the answer where the user can reach it."""
    if answer is None:
        view.abandon()
        return
    thread = chat.conversation.threads.get(answer.thread)
    saved = metadata(thread, answer.turn) if thread is not None and answer.turn is not None else {METADATA_KEY: {"once": True, "model": answer.model}}
    notes = [NOTES[answer.status]] if answer.status in NOTES else []
    footer = " · ".join([format_usage(answer.usage, answer.model), f"{answer.elapsed:.1f} s", *notes])
    markdown = None if args.format == "text" else to_markdown(answer.text)
    view.finish(markdown, answer.text, saved, footer)
    shell.user_ns["_nano"] = answer
    if args.out:
        shell.user_ns[args.out] = answer.text
    if args.format == "code" and (block := _CODE_BLOCK.search(answer.text)):
        shell.set_next_input(block.group(2).rstrip("\n"), replace=False)
