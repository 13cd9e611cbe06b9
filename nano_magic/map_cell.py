"""A `%%nano --map VAR` cell: check the input, show the estimate, run every item, keep the result."""

from __future__ import annotations

from argparse import Namespace
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.display import display

from .batch import BadInput, MapPlan, MapResult, describe_requests, run_map
from .cell import schema_named
from .chat import Chat, validate
from .config import default_cache_path
from .display import pick_mode
from .errors import CellFailed
from .map_batch import BatchPending, BatchRun, at_batch_price, run_batch
from .schema import OutputSchema
from .verbs import RowsRun, plan_rows
from .wire import Options

__all__ = ["VERBS", "batch_rows", "cache_path_of", "check_rows_cell", "confirm", "end_rows", "plan_cell_rows", "run_map_cell", "run_rows"]

SHOWN_ROWS = 10
VERBS = ("map", "filter", "classify", "reduce")
_NOT_FOR_MAP = {  # options a --map cell would otherwise ignore in silence
    "--tools": "with no tool calls", "--tool-choice": "with no tool calls", "--max-steps": "with no tool calls",
    "--context": "so put what the model needs in the template", "--thread": "in no thread", "--new": "in no thread",
    "--format": "and the answers go to --out or a table",
    "--image": "so put an {image:column} placeholder in the template",
}
_ONLY_FOR = {"--labels": "classify", "--chunk-tokens": "reduce"}


def run_map_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, options: Options,
                 defaults: Namespace) -> MapResult | BatchPending | None:
    """Run a --map cell; UsageError for bad input or a cost above confirm_above (nothing sent), CellFailed if stopped or capped.

    `defaults` holds the cell's options as parsed from an empty line, to tell which ones were given.
    """
    check_rows_cell(shell, args, body, "map", defaults)
    try:
        schema = schema_named(shell, args.schema)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = plan_cell_rows(shell, chat, settings, args, body, options, "map", schema,
                          estimate=not args.batch or args.dry_run)  # a batch estimates only when it submits
    if args.batch and not args.dry_run:
        outcome = batch_rows(shell, settings, args, rows.plan, body, "map")
        if isinstance(outcome, MapResult):
            _show_table(shell, args, outcome)
        return outcome
    result = run_rows(shell, settings, args, rows)
    if result is None:
        return None
    _show_table(shell, args, result)
    end_rows(args, result)
    return result


def _show_table(shell: Any, args: Namespace, result: MapResult) -> None:
    """Keep the result in `_nano` and its table in --out, or show the table's first rows."""
    shell.user_ns["_nano"] = result
    if args.out:
        shell.user_ns[args.out] = result.table
    elif not result.stopped:
        table = result.table.head(SHOWN_ROWS)
        display(table.to_frame() if table.ndim == 1 else table)


def _changed(args: Namespace, defaults: Namespace, flag: str) -> bool:
    dest = flag.removeprefix("--").replace("-", "_")
    return bool(getattr(args, dest) != getattr(defaults, dest))


def check_rows_cell(shell: Any, args: Namespace, body: str, verb: str, defaults: Namespace) -> None:
    """The checks every many-rows cell shares: one verb, its variable, a prompt, and no option it would ignore."""
    chosen = [f"--{name}" for name in VERBS if getattr(args, name)]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot go together: use one of them.")
    name = getattr(args, verb)
    if name not in shell.user_ns:
        raise UsageError(f"--{verb}: there is no variable named {name!r}.")
    if not body.strip():
        raise UsageError(f"The cell is empty: write the prompt template under %%nano --{verb}.")
    for flag, why in _NOT_FOR_MAP.items():
        if _changed(args, defaults, flag):
            raise UsageError(f"{flag} does not work with --{verb}: each item is one one-shot request, {why}.")
    for flag, owner in _ONLY_FOR.items():
        if owner != verb and _changed(args, defaults, flag):
            raise UsageError(f"{flag} works only with --{owner}.")
    if args.sample_seed is not None and args.sample is None:
        raise UsageError("--sample-seed picks the rows of a --sample: add --sample N.")
    if args.wait and not args.batch:
        raise UsageError("--wait waits for batches: use it with --batch.")
    if args.batch and args.sample is not None:
        raise UsageError("--sample previews a live run: it does not go with --batch.")


def cache_path_of(args: Namespace, settings: Any) -> str | None:
    """The answer cache of a cell: none with --no-cache, else the setting or the default file."""
    return None if args.no_cache else str(settings.cache_path or default_cache_path())


def concurrency_of(args: Namespace, settings: Any) -> int:
    """--concurrency, or the setting."""
    return int(settings.concurrency if args.concurrency is None else args.concurrency)


def plan_cell_rows(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, options: Options, verb: str,
                   schema: OutputSchema | None, estimate: bool = True) -> RowsRun:
    """The plan of a map, filter or classify cell (of its sample with --sample); UsageError in one line."""
    name = getattr(args, verb)
    try:
        validate(options, schema=schema)
        return plan_rows(chat.gate, shell.user_ns[name], body, options, schema=schema, system=args.system,
                         concurrency=concurrency_of(args, settings), cache_path=cache_path_of(args, settings),
                         sample=args.sample, seed=args.sample_seed or 0, label=name, image_detail=args.image_detail,
                         estimate=estimate)
    except (BadInput, ValueError) as exc:
        raise UsageError(str(exc)) from None


def confirm(args: Namespace, settings: Any, plan: MapPlan, worst: float | None = None) -> None:
    """UsageError, sending nothing, when the stated worst case passes confirm_above and --yes is missing.

    `worst` is a reduce's bounded total over every round; otherwise the plan's own rule applies.
    """
    if args.yes:
        return
    limit = settings.confirm_above
    if worst is not None and worst > limit:
        raise UsageError(f"This run would cost up to about ${worst:.2f}, more than NanoMagics.confirm_above (${limit:.2f}): "
                         "add --yes to send it.")
    if worst is None and plan.needs_yes(limit):
        dollars = plan.dollars or 0.0
        if plan.output_bound()[0] is not None:
            raise UsageError(f"This run would cost about ${dollars:.2f}, more than NanoMagics.confirm_above "
                             f"(${limit:.2f}): add --yes to send it.")
        raise UsageError(f"The input alone would cost about ${dollars:.2f}, more than a tenth of NanoMagics.confirm_above "
                         f"(${limit:.2f}), and the output is not bounded: set --max-tokens, preview with --sample N, "
                         "or add --yes to send it.")


def progress_mode(shell: Any, settings: Any) -> str:
    """A widget bar in notebooks, a text bar in terminals."""
    return "text" if pick_mode(settings.display, shell) == "text" else "widget"


def run_rows(shell: Any, settings: Any, args: Namespace, rows: RowsRun) -> MapResult | None:
    """Show the estimate, stop at --dry-run or a cost to confirm, else run with a progress bar; None after --dry-run.

    A --batch --dry-run's estimate is at the batch price.
    """
    plan = rows.plan
    if args.batch:
        at_batch_price(plan)
    try:
        if not args.dry_run:  # the gate's refusals (offline replay with items missing, a bad budget) come before the estimate
            plan.gate.begin_many(len(plan.keys) - plan.cached_rows, len(plan.keys))
        sampled = f" (a sample of {plan.rows:,} rows)" if rows.whole is not None else ""
        print(f"Estimate{sampled}: {plan.estimate()}")
        if args.dry_run:
            print(describe_requests(plan))
            return None
        confirm(args, settings, plan)
    except BaseException:
        plan.close()
        raise
    return rows.finish(run_map(plan, progress=progress_mode(shell, settings), refresh_rate=settings.refresh_rate))


def end_rows(args: Namespace, result: MapResult) -> None:
    """Say the whole input's estimate after a sample; CellFailed when the run was stopped."""
    if result.whole:
        print(result.whole)
    if result.stopped:
        where = f" and in {args.out}" if args.out else ""
        raise CellFailed(f"Stopped by you: {result.done:,} of {len(result.answers):,} items are done, kept in the cache{where}; "
                         "run the cell again to send the rest.")
    if result.capped:
        raise CellFailed(result.capped)


def batch_rows(shell: Any, settings: Any, args: Namespace, plan: MapPlan, body: str, verb: str,
               check: Callable[[MapPlan], None] | None = None) -> MapResult | BatchPending:
    """Submit a cell's plan to the Batch API, or collect it: once done, the result a live run of the plan gives.

    `check` says the estimate and may refuse, just before a submission (by default: the plan's estimate at the batch
    price, held against confirm_above). The outcome is in `_nano` and said; the caller keeps and shows a result.
    """

    def estimate(plan: MapPlan) -> None:
        print(f"Estimate at the batch price: {plan.estimate()}")
        confirm(args, settings, plan)

    first = " ".join(body.split())[:60]
    try:
        run = BatchRun(plan, f"--{verb} {getattr(args, verb)}: {first}", settings.batch_max_requests, confirm=check or estimate)
    except BaseException:
        plan.close()
        raise
    outcome = run_batch(run, wait=args.wait, progress=progress_mode(shell, settings), refresh_rate=settings.refresh_rate)
    shell.user_ns["_nano"] = outcome
    if not run.waited:
        print(outcome.summary())
    return outcome

