"""A `%%nano --map VAR` cell: check the input, show the estimate, run every item, keep the result."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from .batch import BadInput, MapPlan, MapResult, describe_requests, plan_map, run_map
from .cell import in_one_line, options_from, schema_named
from .chat import Chat, validate
from .config import default_cache_path, turned_off
from .display import pick_mode
from .errors import OFF_MESSAGE, CellFailed
from .map_batch import BatchPending, BatchRun, at_batch_price, run_batch
from .wire import Options

__all__ = ["map_cell", "run_map_cell"]

SHOWN_ROWS = 10
_NOT_FOR_MAP = {  # options a --map cell would otherwise ignore in silence
    "--tools": "with no tool calls", "--tool-choice": "with no tool calls", "--max-steps": "with no tool calls",
    "--context": "so put what the model needs in the template", "--thread": "in no thread", "--new": "in no thread",
    "--format": "and the answers go to --out or a table",
    "--image": "so put an {image:column} placeholder in the template",
}


def map_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, defaults: Namespace) -> MapResult | BatchPending | None:
    """A `%%nano --map` cell: turned off, one line; anything that goes wrong, one line; `defaults`: the cell's unset options."""
    if turned_off():
        print(OFF_MESSAGE)
        return None
    return in_one_line(lambda: run_map_cell(shell, chat, settings, args, body, options_from(args, settings.api, settings.reasoning_effort), defaults))


def run_map_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, options: Options,
                 defaults: Namespace) -> MapResult | BatchPending | None:
    """Run a --map cell; UsageError for bad input or a cost above confirm_above (nothing sent), CellFailed if stopped or capped."""
    if args.wait and not args.batch:
        raise UsageError("--wait waits for batches: use it with --batch.")
    plan = _plan(shell, chat, settings, args, body, options, defaults)
    if args.batch and not args.dry_run:
        return _batch(shell, settings, args, plan, body)
    if args.batch:
        at_batch_price(plan)
    try:
        if not args.dry_run:  # the gate's refusals (offline replay with items missing, a bad budget) come before the estimate
            plan.gate.begin_many(len(plan.keys) - plan.cached_rows, len(plan.keys))
        print(f"Estimate: {plan.estimate()}")
        if args.dry_run:
            print(describe_requests(plan))
            return None
        if plan.dollars is not None and plan.dollars > settings.confirm_above and not args.yes:
            raise UsageError(f"This run would cost about ${plan.dollars:.2f}, more than NanoMagics.confirm_above "
                             f"(${settings.confirm_above:.2f}): add --yes to send it.")
    except BaseException:
        plan.close()
        raise
    mode = "text" if pick_mode(settings.display, shell) == "text" else "widget"
    result = run_map(plan, progress=mode, refresh_rate=settings.refresh_rate)
    shell.user_ns["_nano"] = result
    if args.out:
        shell.user_ns[args.out] = result.table
    elif not result.stopped:
        table = result.table.head(SHOWN_ROWS)
        display(table.to_frame() if table.ndim == 1 else table)
    if result.stopped:
        where = f" and in {args.out}" if args.out else ""
        raise CellFailed(f"Stopped by you: {result.done:,} of {len(result.answers):,} items are done, kept in the cache{where}; "
                         "run the cell again to send the rest.")
    if result.capped:
        raise CellFailed(result.capped)
    return result


def _batch(shell: Any, settings: Any, args: Namespace, plan: MapPlan, body: str) -> MapResult | BatchPending:
    """Submit the cell's requests to the Batch API, or collect them: the same result as a live run once they are done."""
    def confirm(plan: MapPlan) -> None:
        print(f"Estimate at the batch price: {plan.estimate()}")
        if plan.dollars is not None and plan.dollars > settings.confirm_above and not args.yes:
            raise UsageError(f"This batch would cost about ${plan.dollars:.2f}, more than NanoMagics.confirm_above "
                             f"(${settings.confirm_above:.2f}): add --yes to submit it.")

    first = " ".join(body.split())[:60]
    try:
        run = BatchRun(plan, f"--map {args.map}: {first}", settings.batch_max_requests, confirm=confirm)
    except BaseException:
        plan.close()
        raise
    mode = "text" if pick_mode(settings.display, shell) == "text" else "widget"
    outcome = run_batch(run, wait=args.wait, progress=mode, refresh_rate=settings.refresh_rate)
    shell.user_ns["_nano"] = outcome
    if not run.waited:
        print(outcome.summary())
    if isinstance(outcome, BatchPending):
        return outcome
    if args.out:
        shell.user_ns[args.out] = outcome.table
    else:
        table = outcome.table.head(SHOWN_ROWS)
        display(table.to_frame() if table.ndim == 1 else table)
    return outcome


def _plan(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, options: Options, defaults: Namespace) -> MapPlan:
    if args.map not in shell.user_ns:
        raise UsageError(f"--map: there is no variable named {args.map!r}.")
    if not body.strip():
        raise UsageError("The cell is empty: write the prompt template under %%nano --map.")
    for flag, why in _NOT_FOR_MAP.items():
        dest = flag.removeprefix("--").replace("-", "_")
        if getattr(args, dest) != getattr(defaults, dest):
            raise UsageError(f"{flag} does not work with --map: each item is one one-shot request, {why}.")
    try:
        schema = schema_named(shell, args.schema)
        validate(options, schema=schema)
        return plan_map(
            chat.gate, shell.user_ns[args.map], body, options, system=args.system, schema=schema,
            concurrency=settings.concurrency if args.concurrency is None else args.concurrency,
            cache_path=None if args.no_cache else settings.cache_path or default_cache_path(), label=args.map,
            image_detail=args.image_detail, estimate=not args.batch or args.dry_run,  # a batch estimates only when it submits
        )
    except (BadInput, ValueError) as exc:
        raise UsageError(str(exc)) from None
