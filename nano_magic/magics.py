"""The `%%nano` cell magic and the `%nano` line magic: argument parsing and dispatch only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .config import NanoSettings

if TYPE_CHECKING:
    from .chat import Chat
    from .errors import FailureDisplay

__all__ = ["NanoMagics"]

_QUOTED = ("model", "system", "thread", "stop", "out", "context", "tools", "tool_choice", "schema", "reasoning_effort", "image",
           "image_detail", "labels")


@magics_class
class NanoMagics(Magics, NanoSettings):
    """`%%nano` asks GPT-4.1 nano (or any OpenAI-compatible model) and streams the answer into the cell."""

    _chat: Chat | None = None
    failures: FailureDisplay | None = None

    @property
    def chat(self) -> Chat:
        """The conversation engine, created on first use so that `%load_ext` stays light."""
        from .chat import Chat

        if self._chat is None:
            self._chat = Chat()
        chat = self._chat
        chat.api, chat.budget, chat.replay_mode, chat.replay_speed = self.api, self.budget, self.replay, self.replay_speed
        chat.reasoning_effort = self.reasoning_effort
        chat.configure(**self.connection())
        return chat

    @magic_arguments(name="%nano")
    @argument("-m", "--model", help="Model id (default: the backend's, e.g. openai/gpt-4.1-nano).")
    @argument("-t", "--temperature", type=float, help="Sampling temperature, 0 to 2.")
    @argument("--top-p", type=float, help="Nucleus sampling, 0 to 1.")
    @argument("--max-tokens", type=int, help="Longest answer in tokens (> 0).")
    @argument("-s", "--system", help="System message; it sticks to the thread for later cells.")
    @argument("--thread", default="default", help="The conversation to continue (default: default).")
    @argument("--new", action="store_true", help="Start this thread afresh (keeps its system message unless -s is given).")
    @argument("--once", action="store_true", help="One-shot: no history read or written.")
    @argument("--api", choices=["chat", "responses"], help="Chat Completions (default) or the Responses API.")
    @argument("--seed", type=int, help="Seed for sampling, passed through.")
    @argument("--stop", help="Stop sequence, passed through.")
    @argument("--json", action="store_true", help="Ask for a JSON object; the parsed value is in _nano.json.")
    @argument("--format", choices=["markdown", "text", "code"], default="markdown",
              help="Show the answer as Markdown, as plain text, or put its first code block in a new cell below.")
    @argument("--out", help="Store the answer text in this variable (with --map: a Series, or a DataFrame with --schema).")
    @argument("--context", help="Comma-separated variables to describe to the model (DataFrame: shape, dtypes, head).")
    @argument("--tools", help="Comma-separated notebook functions the model may call (dotted names allowed); "
              "each one's schema comes from its type hints and docstring.")
    @argument("--tool-choice", help="auto (default), required, none, or the name of the one function the model must call.")
    @argument("--max-steps", type=int, default=8, help="The most requests one cell sends while the model calls tools (default 8).")
    @argument("--schema", help="A pydantic model, TypedDict, dataclass or JSON Schema dict the answer must fit; "
              "the validated value is in _nano.json.")
    @argument("--reasoning-effort", metavar="WORD", help="For reasoning models: none, minimal, low, medium, high, xhigh, ... "
              "(passed on as it is; default: NanoMagics.reasoning_effort, else the model's own).")
    @argument("--image", metavar="NAME[,NAME]", help="Images sent with the prompt: variables holding a matplotlib figure, "
              "a PIL image, an (H, W, 3|4) uint8 array or image bytes; file paths; http(s) URLs; _ for the last figure shown.")
    @argument("--image-detail", metavar="WORD", default="auto", help="How closely the model looks: low, high, auto "
              "(default), original, ... (passed on as it is).")
    @argument("--dry-run", action="store_true", help="Show the exact request (secrets masked) and send nothing.")
    @argument("--no-stream", action="store_true", help="One non-streamed request.")
    @argument("--map", metavar="VAR", help="One one-shot request per row or item of VAR (DataFrame, Series, list, dict); "
              "the cell is a template with {column}, {item}, {key}/{value} placeholders.")
    @argument("--concurrency", type=int, help="--map: requests in flight at once (default: NanoMagics.concurrency, 8).")
    @argument("--yes", action="store_true", help="--map: send even when the estimate is above NanoMagics.confirm_above.")
    @argument("--no-cache", action="store_true", help="--map: ask afresh instead of reusing cached answers.")
    @argument("--filter", metavar="VAR", help="Keep the rows of VAR for which the model answers yes to the cell's question "
              "(a strict boolean per row); as --map for templates, options, cache and progress.")
    @argument("--classify", metavar="VAR", help="One of --labels per row of VAR (a strict enum per row): a Categorical Series.")
    @argument("--labels", help="--classify: comma-separated labels, or the name of a list, tuple or Enum in the notebook.")
    @argument("--reduce", metavar="VAR", help="One answer from all rows of VAR: the lines with placeholders repeat per row, "
              "rows go in chunks, and the chunks' answers are combined in rounds.")
    @argument("--chunk-tokens", type=int, help="--reduce: the most tokens (o200k_base) in one request (default 4000).")
    @argument("--sample", type=int, metavar="N", help="--map, --filter, --classify, --reduce: run on N rows picked at random, "
              "then estimate the whole input from their measured output.")
    @argument("--sample-seed", type=int, metavar="S", help="--sample: the seed that picks the rows (default 0).")
    @argument("--batch", action="store_true", help="--map, --filter, --classify, --reduce's first round: submit the requests to the provider's Batch API "
              "(half price, within 24 h); "
              "run the cell again to collect the answers.")
    @argument("--wait", action="store_true", help="--batch: wait for the batches to finish, with a progress bar (Ctrl-C stops waiting).")
    @cell_magic("nano")
    def nano_cell(self, line: str, cell: str) -> None:
        """Ask the model about the cell's text; the answer streams in as Markdown with LaTeX.

        The answer is kept in `_nano` (.text, .usage, .cost, .status, .json), and the
        conversation carries on in the next %%nano cell of the same thread.

        The guide, in the repository: docs/options.md (every option and setting), docs/tools-and-schemas.md,
        docs/many-rows.md (--map and its verbs), docs/teaching.md (replay, budget, explain), docs/troubleshooting.md;
        `%nano help` lists every page.
        """
        args = self._parse(line)
        if args.map or args.filter or args.classify or args.reduce:
            from .verb_cell import rows_cell

            rows_cell(self.shell, self.chat, self, args, cell, self._parse(""))
            return
        from .cell import run_cell

        run_cell(self.shell, self.chat, self, args, cell)

    @line_magic("nano")
    def nano_line(self, line: str) -> None:
        """%nano SUBCOMMAND: reset, history, threads, system, usage, config, models, export, load, replay, explain, batches, help."""
        from IPython.display import display

        from .commands import run_command

        shown = run_command(line, self.chat, self, self.shell, self._parse)
        if shown is not None:
            display({"text/markdown": shown.markdown, "text/plain": shown.text}, raw=True)

    def _parse(self, line: str) -> Any:
        try:
            args = parse_argstring(self.nano_cell, line)
        except UsageError as exc:
            usage = "usage: " + " ".join(self.nano_cell.parser.format_usage().split()).removeprefix(":: ")
            raise UsageError(f"{exc}\n{usage}") from None
        for name in _QUOTED:
            value = getattr(args, name)
            if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                setattr(args, name, value[1:-1])
        return args
