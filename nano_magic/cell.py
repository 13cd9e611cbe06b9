"""One `%%nano` cell: check the input, stream the answer into a view, keep the result."""

from __future__ import annotations

import json
import re
from argparse import Namespace
from typing import Any

from IPython.core.error import UsageError

from .chat import Answer, Chat, Interrupted, validate
from .client import NanoError, Options
from .config import NoBackend
from .context import describe, fenced
from .conversation import METADATA_KEY, metadata, step_line
from .display import View, open_view, pick_mode
from .magics import CellFailed
from .render import to_markdown
from .schema import OutputSchema, SchemaError
from .tools import ToolError, Toolbox, tools_from_names
from .usage import format_usage

__all__ = ["run_cell", "parent_cell", "options_from"]

_CODE_BLOCK = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
NOTES = {
    "length": "The answer hit the token limit and is cut short (raise --max-tokens).",
    "content_filter": "The provider's content filter stopped the answer.",
    "stopped": "Stopped by you; the partial answer is kept.",
    "cut": "The answer is incomplete: it broke off.",
    "refused": "The model refused.",
}


def options_from(args: Namespace, default_api: str) -> Options:
    """Cell arguments as request options."""
    return Options(
        model=args.model, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
        seed=args.seed, stop=args.stop, json=args.json, stream=not args.no_stream, api=args.api or default_api,
        tool_choice=args.tool_choice, max_steps=args.max_steps,
    )


def parent_cell(shell: Any) -> tuple[str | None, list[str]]:
    """The running cell's id and the ids of cells deleted since, as the frontend sent them."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None, []
    meta = (kernel.get_parent() or {}).get("metadata") or {}
    return meta.get("cellId"), list(meta.get("deletedCells") or [])


def run_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str) -> Answer | None:
    """Run one cell; UsageError for bad input (nothing sent), CellFailed for a failed answer."""
    prompt = _prompt(shell, args, body)
    options = options_from(args, settings.api)
    try:
        toolbox, schema = _tools_and_schema(shell, args, settings)
        validate(options, toolbox, schema)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cell_id, deleted = parent_cell(shell)
    chat.conversation.drop_cells(deleted)
    try:
        if args.dry_run:
            thread = chat.scratch_thread(args.thread, system=args.system, new=args.new or args.once)
            print(chat.prepare(prompt, options, thread=thread, cell_id=cell_id, tools=toolbox, schema=schema).describe())
            return None
        return _ask(shell, chat, settings, args, prompt, options, cell_id, toolbox, schema)
    except (NoBackend, NanoError) as exc:
        raise CellFailed(str(exc)) from None


def _tools_and_schema(shell: Any, args: Namespace, settings: Any) -> tuple[Toolbox, OutputSchema | None]:
    """The functions `--tools` names and the schema `--schema` names, from the user namespace; ValueError in one line."""
    toolbox = Toolbox(tools_from_names(args.tools, shell.user_ns) if args.tools else (), settings.tool_result_chars)
    if not args.schema:
        return toolbox, None
    if args.schema not in shell.user_ns:
        raise ToolError(f"--schema: there is no variable named {args.schema!r}.")
    try:
        return toolbox, OutputSchema.from_object(shell.user_ns[args.schema], args.schema)
    except SchemaError as exc:
        raise SchemaError(f"--schema {args.schema}: {exc}") from None


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


def _ask(shell: Any, chat: Chat, settings: Any, args: Namespace, prompt: str, options: Options, cell_id: str | None,
         toolbox: Toolbox, schema: OutputSchema | None) -> Answer:
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
            on_retry=lambda retry: view.notice(str(retry)), tools=toolbox, schema=schema,
            on_step=lambda call: view.step(step_line(call.to_dict())), **options.__dict__,
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
    requests = [f"{answer.requests} requests"] if answer.requests > 1 else []
    footer = " · ".join([format_usage(answer.usage, answer.model), *requests, f"{answer.elapsed:.1f} s", *notes])
    markdown = None if args.format == "text" else _steps_markdown(answer.steps) + _body_markdown(answer, args)
    view.finish(markdown, answer.text, saved, footer)
    shell.user_ns["_nano"] = answer
    if args.out:
        shell.user_ns[args.out] = answer.text
    if args.format == "code" and (block := _CODE_BLOCK.search(answer.text)):
        shell.set_next_input(block.group(2).rstrip("\n"), replace=False)


def _steps_markdown(steps: list[dict[str, Any]]) -> str:
    """The tool rounds before the answer: what the model said, then one list item per call, escaped like model text."""
    parts = []
    for step in steps:
        if step.get("text"):
            parts.append(to_markdown(step["text"]))
        parts.append(to_markdown("\n".join(f"- {step_line(call)}" for call in step.get("calls") or [])))
    return "".join(f"{part}\n\n" for part in parts if part)


def _body_markdown(answer: Answer, args: Namespace) -> str:
    """The answer: pretty JSON in a fenced block when it fits a schema, else the Markdown of its text."""
    if args.schema and answer.json is not None:
        return fenced(json.dumps(json.loads(answer.text), indent=2, ensure_ascii=False), "json")
    return to_markdown(answer.text)
