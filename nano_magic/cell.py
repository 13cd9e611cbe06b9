"""One `%%nano` cell: check the input, stream the answer into a view, keep the result."""

from __future__ import annotations

import json
import re
import signal
import threading
from argparse import Namespace
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from IPython.core.error import UsageError

from .chat import Answer, Chat, Interrupted, validate
from .config import turned_off
from .context import describe, fence_for
from .conversation import METADATA_KEY, metadata, step_line
from .display import Final, View, answer_source, open_view, pick_mode
from .errors import OFF_MESSAGE, CellFailed, NanoError, NoBackend, unexpected
from .figures import LAST_FIGURE
from .images import BadImage, Picture, picture_from
from .jsontext import load_json
from .render import first_code_block, to_markdown
from .replay import ReplayStore, current_notebook
from .schema import OutputSchema, SchemaError
from .tools import Toolbox, tools_from_names
from .usage import format_usage
from .wire import Options

__all__ = ["in_one_line", "run_cell", "parent_cell", "options_from", "load_replay", "schema_named", "pictures_named", "ask_once"]

NOTES = {
    "length": "The answer hit the token limit and is cut short (raise --max-tokens).",
    "content_filter": "The provider's content filter stopped the answer.",
    "stopped": "Stopped by you; the partial answer is kept.",
    "cut": "The answer is incomplete: it broke off.",
    "refused": "The model refused.",
    "budget": "Stopped at the budget cap; the partial answer is kept.",
}
NOTHING_ARRIVED = "Stopped before any answer arrived."
LATE_STOP = "Stopped by you as the answer ended; what arrived is kept."
T = TypeVar("T")


def options_from(args: Namespace, default_api: str, default_effort: str | None = None) -> Options:
    """Cell arguments as request options, over the API and reasoning effort of the settings."""
    return Options(
        model=args.model, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
        seed=args.seed, stop=args.stop, json=args.json, stream=not args.no_stream, api=args.api or default_api,
        tool_choice=args.tool_choice, max_steps=args.max_steps, reasoning_effort=args.reasoning_effort or default_effort,
    )


def parent_cell(shell: Any) -> tuple[str | None, list[str]]:
    """The running cell's id and the ids of cells deleted since, as the frontend sent them."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return None, []
    meta = (kernel.get_parent() or {}).get("metadata") or {}
    return meta.get("cellId"), list(meta.get("deletedCells") or [])


def run_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str) -> Any:
    """Run one cell; UsageError for bad input (nothing sent), CellFailed (one line) for anything else that goes wrong."""
    if turned_off():
        print(OFF_MESSAGE)
        return None
    if args.batch or args.wait:
        raise UsageError("--batch sends one request per row of a --map VAR: add --map.")
    prompt = _prompt(shell, args, body)
    options = options_from(args, settings.api, settings.reasoning_effort)
    try:
        toolbox, schema = _tools_and_schema(shell, args, settings)
        validate(options, toolbox, schema)
        pictures = pictures_named(shell, args.image, args.image_detail)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def ask() -> Answer | None:
        cell_id, deleted = parent_cell(shell)
        chat.conversation.drop_cells(deleted)
        if args.dry_run:
            thread = chat.scratch_thread(args.thread, system=args.system, new=args.new or args.once)
            print(chat.prepare(prompt, options, thread=thread, cell_id=cell_id, tools=toolbox, schema=schema, pictures=pictures).describe())
            return None
        if chat.replay_mode != "off" and chat.replay_store is None:
            chat.replay_store = load_replay(current_notebook(shell.user_ns), "NanoMagics.replay is on")
        return _ask(shell, chat, settings, args, prompt, options, cell_id, toolbox, schema, pictures)

    return in_one_line(ask)


def in_one_line(work: Callable[[], T]) -> T:
    """Run the cell's work; whatever goes wrong becomes a UsageError or a one-line CellFailed."""
    try:
        return work()
    except (CellFailed, UsageError):
        raise
    except (NoBackend, NanoError) as exc:
        raise CellFailed(str(exc)) from None
    except KeyboardInterrupt:
        raise CellFailed(NOTHING_ARRIVED) from None
    except Exception as exc:
        raise CellFailed(unexpected(exc)) from exc


def _tools_and_schema(shell: Any, args: Namespace, settings: Any) -> tuple[Toolbox, OutputSchema | None]:
    """The functions `--tools` names and the schema `--schema` names, from the user namespace; ValueError in one line."""
    toolbox = Toolbox(tools_from_names(args.tools, shell.user_ns) if args.tools else (), settings.tool_result_chars)
    return toolbox, schema_named(shell, args.schema)


def schema_named(shell: Any, name: str | None) -> OutputSchema | None:
    """The schema of the variable `--schema` names, or None without one; ValueError in one line."""
    if not name:
        return None
    if name not in shell.user_ns:
        raise SchemaError(f"--schema: there is no variable named {name!r}.")
    try:
        return OutputSchema.from_object(shell.user_ns[name], name)
    except SchemaError as exc:
        raise SchemaError(f"--schema {name}: {exc}") from None


def pictures_named(shell: Any, names: str | None, detail: str) -> tuple[Picture, ...]:
    """The pictures `--image` names: `_` (the last figure shown), notebook variables, files and http(s) URLs; BadImage in one line."""
    pictures = []
    for name in [n.strip() for n in (names or "").split(",") if n.strip()]:
        if name == "_":
            value = LAST_FIGURE.last if LAST_FIGURE.last is not None else shell.user_ns.get("_")
            if value is None or isinstance(value, str):
                raise BadImage("--image _: no figure has been shown in this kernel yet.")
        elif name in shell.user_ns:
            value = shell.user_ns[name]
        elif re.match(r"https?://", name) or Path(name).expanduser().is_file():
            value = name
        else:
            raise BadImage(f"--image {name}: there is no variable or file named {name}.")
        pictures.append(picture_from(value, name, detail))
    return tuple(pictures)


def load_replay(path: Path | None, what: str) -> ReplayStore:
    """The saved turns of a notebook or export; UsageError in one line when there are none to read."""
    if path is None:
        raise UsageError(f"{what}, but this frontend does not say which notebook is open; give a path: %nano replay PATH.ipynb")
    if not path.is_file():
        raise UsageError(f"{what}: {path} does not exist.")
    try:
        return ReplayStore.load(path)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{what}: {path} is not a notebook or a nano_magic export ({exc}).") from None


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


def ask_once(shell: Any, chat: Chat, settings: Any, args: Namespace, prompt: str, options: Options,
             then: Callable[[Answer], None]) -> Answer:
    """An answer streamed into the live view like any cell's (a --reduce cell's last round); `then` sees it before it shows."""
    return _ask(shell, chat, settings, args, prompt, options, None, Toolbox(), None, then=then)


def _ask(shell: Any, chat: Chat, settings: Any, args: Namespace, prompt: str, options: Options, cell_id: str | None,
         toolbox: Toolbox, schema: OutputSchema | None, pictures: tuple[Picture, ...] = (),
         then: Callable[[Answer], None] | None = None) -> Answer:
    pending = chat.start(
        prompt, thread=args.thread, system=args.system, new=args.new, once=args.once, cell_id=cell_id,
        execution_count=_execution_count(shell), tools=toolbox, schema=schema, images=pictures, **options.__dict__,
    )
    model = pending.answer.model
    if warning := chat.shutdown_warning(model):
        print(warning)
    turn = len(chat.scratch_thread(args.thread, new=args.new or args.once).before(cell_id)) + 1
    header = f"{model} · {args.thread} · turn {turn}" if not args.once else f"{model} · one-shot"
    header += " · replay" if pending.answer.replayed else ""
    answer: Answer | None = None
    failure: str | None = None
    cause: BaseException | None = None
    view = open_view(pick_mode(settings.display, shell), header, settings.refresh_rate)
    try:
        answer = pending.run(view.delta, on_retry=lambda retry: view.notice(str(retry)),
                             on_step=lambda call: view.step(step_line(call.to_dict())))
        failure = answer.error
    except Interrupted as stop:
        answer, failure = stop.answer, NOTES["stopped"] if stop.answer else NOTHING_ARRIVED
    except KeyboardInterrupt:
        failure = NOTHING_ARRIVED
    except NanoError as exc:
        answer, failure, cause = exc.answer, str(exc), exc.__cause__
    except Exception as exc:
        failure, cause = unexpected(exc), exc
    if answer is not None and then is not None:
        then(answer)
    return _end_cell(shell, chat, view, args, answer, failure, cause)


def _end_cell(shell: Any, chat: Chat, view: View, args: Namespace, answer: Answer | None, failure: str | None,
              cause: BaseException | None) -> Answer:
    """The one place a cell ends: the final output (or nothing), the refresh thread joined, one line if it failed."""
    with _interrupts_held() as interrupted:
        try:
            trouble = _settle_view(shell, chat, view, args, answer)
        finally:
            view.close()
    if interrupted and not trouble:
        trouble = LATE_STOP
    if failure or trouble or answer is None:
        raise CellFailed(failure or trouble or NOTHING_ARRIVED) from cause
    return answer


def _settle_view(shell: Any, chat: Chat, view: View, args: Namespace, answer: Answer | None) -> str | None:
    """Show the final output, or remove the view when no text arrived; a line saying what went wrong, if anything did."""
    if answer is None:
        view.abandon()
        return None
    try:
        _keep(shell, answer, args)
        view.finish(_final(chat, answer, args))
        return None
    except (Exception, KeyboardInterrupt) as exc:
        trouble = LATE_STOP if isinstance(exc, KeyboardInterrupt) else unexpected(exc)
    try:
        view.finish(Final(None, None, answer.text, {}, ""))  # the plain text, at least
    except (Exception, KeyboardInterrupt):
        view.abandon()
    return trouble


@contextmanager
def _interrupts_held() -> Iterator[list[int]]:
    """Hold Ctrl-C and kernel interrupts while the cell ends, so that no view is left half-swapped."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield held
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


def _execution_count(shell: Any) -> int | None:
    """The running cell's `In[n]`, as IPython records it for this execution (None when it is not stored)."""
    running = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    return running.execution_count if running is not None else getattr(shell, "execution_count", None)


def _final(chat: Chat, answer: Answer, args: Namespace) -> Final:
    """The final output: Markdown and HTML source (None for plain text), text, the saved metadata and the footer line."""
    thread = chat.conversation.threads.get(answer.thread)
    saved = metadata(thread, answer.turn) if thread is not None and answer.turn is not None else {METADATA_KEY: {"once": True, "model": answer.model}}
    notes = [NOTES[answer.status]] if answer.status in NOTES else []
    replayed = ["replayed"] if answer.replayed else []
    requests = [f"{answer.requests} requests"] if answer.requests > 1 else []
    footer = " · ".join([*replayed, format_usage(answer.usage, answer.model), *requests, f"{answer.elapsed:.1f} s", *notes])
    if args.format == "text":
        return Final(None, None, answer.text, saved, footer)
    markdown = _steps_markdown(answer.steps) + _body_markdown(answer, args)
    rounds = [(step.get("text", ""), [step_line(call) for call in step.get("calls") or []]) for step in answer.steps]
    return Final(markdown, answer_source(rounds, _pretty_json(answer, args) or answer.text), answer.text, saved, footer)


def _keep(shell: Any, answer: Answer, args: Namespace) -> None:
    """Store the answer where the user can reach it."""
    shell.user_ns["_nano"] = answer
    if args.out:
        shell.user_ns[args.out] = answer.text
    if args.format == "code" and (code := first_code_block(answer.text)) is not None:
        shell.set_next_input(code, replace=False)


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
    return _pretty_json(answer, args) or to_markdown(answer.text)


def _pretty_json(answer: Answer, args: Namespace) -> str | None:
    """A schema's answer as pretty JSON in a fenced block; None without a schema or valid JSON."""
    if not args.schema or answer.json is None:
        return None
    pretty = json.dumps(load_json(answer.text), indent=2, ensure_ascii=False)
    fence = fence_for(pretty)
    return f"{fence}json\n{pretty}\n{fence}"
