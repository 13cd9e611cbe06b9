"""Many-rows cells: `--map` dispatched, and `--filter VAR`, `--classify VAR --labels L`, `--reduce VAR` on `--map`'s checks and run."""

from __future__ import annotations

import html
from argparse import Namespace
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from .batch import BadInput, MapPlan, MapResult, describe_requests, run_map
from .cell import ask_once, in_one_line, options_from
from .chat import Answer, Chat
from .config import turned_off
from .errors import OFF_MESSAGE, CellFailed
from .map_batch import BatchPending, at_batch_price
from .map_cell import (
    SHOWN_ROWS,
    batch_rows,
    cache_path_of,
    check_rows_cell,
    concurrency_of,
    confirm,
    end_rows,
    plan_cell_rows,
    progress_mode,
    run_map_cell,
    run_rows,
)
from .verbs import (
    DEFAULT_CHUNK_TOKENS,
    REDUCE_THREAD,
    ClassifyResult,
    FilterResult,
    ReduceResult,
    classify_result,
    classify_schema,
    filter_result,
    filter_schema,
    labels_from,
    plan_reduce,
    run_rounds,
)
from .wire import Options

__all__ = ["count_table", "rows_cell", "run_verb_cell"]

_NO_SCHEMA = {"filter": "each answer is yes or no", "classify": "each answer is one of --labels", "reduce": "the answer is text"}


def rows_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, defaults: Namespace) -> Any:
    """A --map, --filter, --classify or --reduce cell: turned off, one line; anything that goes wrong, one line.

    `defaults` holds the cell's options as parsed from an empty line, to tell which ones were given.
    """
    if turned_off():
        print(OFF_MESSAGE)
        return None
    options = options_from(args, settings.api, settings.reasoning_effort)
    if args.map:
        return in_one_line(lambda: run_map_cell(shell, chat, settings, args, body, options, defaults))
    return in_one_line(lambda: run_verb_cell(shell, chat, settings, args, body, options, defaults))


def run_verb_cell(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, options: Options,
                  defaults: Namespace) -> FilterResult | ClassifyResult | ReduceResult | None:
    """Run a --filter, --classify or --reduce cell; UsageError for bad input (nothing sent), CellFailed if stopped."""
    verb = next(name for name in ("filter", "classify", "reduce") if getattr(args, name))
    check_rows_cell(shell, args, body, verb, defaults)
    for flag in ("schema", "json"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} does not work with --{verb}: {_NO_SCHEMA[verb]}.")
    if verb == "reduce":
        return _reduce(shell, chat, settings, args, body, options)
    if verb == "filter":
        schema = filter_schema()
    else:
        if not args.labels:
            raise UsageError("--classify needs --labels: a comma list, or the name of a list, tuple or Enum.")
        labels = _labels(shell, args.labels)
        schema = classify_schema(labels)
    rows = plan_cell_rows(shell, chat, settings, args, body, options, verb, schema, estimate=not args.batch or args.dry_run)
    if args.batch and not args.dry_run:
        outcome = batch_rows(shell, settings, args, rows.plan, body, verb)
        if isinstance(outcome, BatchPending):
            return None
        result: MapResult | None = outcome
    else:
        result = run_rows(shell, settings, args, rows)
    if result is None:
        return None
    if verb == "filter":
        kept = filter_result(rows.data, result)
        _keep(shell, args, kept, kept.kept)
        if not args.out and not result.stopped:
            _show_kept(kept)
    else:
        labelled = classify_result(labels, result)
        _keep(shell, args, labelled, labelled.answers)
        if not args.out and not result.stopped:
            display(count_table(labelled), raw=True)
    end_rows(args, result)
    return shell.user_ns["_nano"]


def _labels(shell: Any, given: str) -> list[str]:
    """`--labels`: the name of a list, tuple or Enum in the notebook, else a comma list."""
    try:
        if given.isidentifier() and given in shell.user_ns:
            return labels_from(shell.user_ns[given], f"--labels {given}")
        return labels_from(given)
    except BadInput as exc:
        raise UsageError(str(exc)) from None


def _keep(shell: Any, args: Namespace, result: Any, value: Any) -> None:
    shell.user_ns["_nano"] = result
    if args.out:
        shell.user_ns[args.out] = value


def _show_kept(result: FilterResult) -> None:
    """The first kept rows, and how many were kept."""
    import pandas as pd

    kept = result.kept
    if isinstance(kept, pd.Series):
        display(kept.head(SHOWN_ROWS).to_frame())
    elif isinstance(kept, pd.DataFrame):
        display(kept.head(SHOWN_ROWS))
    else:
        display(pd.Series(list(kept.values() if isinstance(kept, dict) else kept)[:SHOWN_ROWS],
                          index=list(kept)[:SHOWN_ROWS] if isinstance(kept, dict) else None, dtype=object, name="kept").to_frame())
    print(f"kept {len(kept):,} of {len(result.answers):,}")


def count_table(result: ClassifyResult) -> dict[str, str]:
    """Rows per label as a table with a bar per label (HTML), and as aligned text; failed rows on a line of their own.

    Written out rather than with pandas' Styler: a two-column table with bars needs no template engine.
    """
    counts = result.counts()
    failed = len(result.failed)
    total = max(int(counts.max()) if len(counts) else 0, 1)
    rows = "".join(
        f"<tr><td>{html.escape(str(label))}</td><td style='text-align:right'>{count:,}</td>"
        f"<td><div class='nano-bar' style='background:#4c78a8;height:0.9em;width:{round(120 * count / total)}px'></div></td></tr>"
        for label, count in counts.items())
    if failed:
        rows += f"<tr><td><i>failed</i></td><td style='text-align:right'>{failed:,}</td><td></td></tr>"
    table = f"<table class='nano-counts'><thead><tr><th>label</th><th>rows</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    width = max([len(str(label)) for label in counts.index] + [6])
    lines = [f"{'label'.ljust(width)}  rows", *(f"{str(label).ljust(width)}  {count:,}" for label, count in counts.items())]
    lines += [f"{'failed'.ljust(width)}  {failed:,}"] if failed else []
    return {"text/html": table, "text/plain": "\n".join(lines)}


def _reduce(shell: Any, chat: Chat, settings: Any, args: Namespace, body: str, options: Options) -> ReduceResult | None:
    """Rounds of chunks through the --map machinery, then the last round streamed like any answer."""
    try:
        job = plan_reduce(chat.gate, shell.user_ns[args.reduce], body, options, system=args.system,
                          concurrency=concurrency_of(args, settings), cache_path=cache_path_of(args, settings),
                          chunk_tokens=DEFAULT_CHUNK_TOKENS if args.chunk_tokens is None else args.chunk_tokens,
                          sample=args.sample, seed=args.sample_seed or 0, label=args.reduce)
    except (BadInput, ValueError) as exc:
        raise UsageError(str(exc)) from None
    first = job.first
    if args.batch:
        if job.reducer.final is not None:
            first.close()
            raise UsageError("--batch sends --reduce's first round, and these rows fit in one request: run it without --batch.")
        at_batch_price(first)

    def estimate(_: MapPlan | None = None) -> None:  # said before a live run, or by the batch just before it submits
        line, worst = job.estimate()
        sampled = f" (a sample of {job.reducer.rows:,} rows)" if job.whole is not None else ""
        batched = " (round 1 at the batch price; the combine rounds run live)" if args.batch else ""
        print(f"Estimate{sampled}{batched}: {line}")
        if not args.dry_run:
            confirm(args, settings, first, worst)

    mode = progress_mode(shell, settings)
    collected: MapResult | None = None
    if args.batch and not args.dry_run:
        outcome = batch_rows(shell, settings, args, first, body, "reduce", estimate)
        if isinstance(outcome, BatchPending):
            return None
        collected = outcome
    else:
        try:
            if not args.dry_run:  # the gate's refusals (offline replay with chunks missing, a bad budget) come before the estimate
                first.gate.begin_many(len(first.jobs), first.rows)
            estimate()
            if args.dry_run:
                print(describe_requests(first))
                first.close()
                return None
        except BaseException:
            first.close()
            raise

    def run(plan: MapPlan) -> MapResult:
        """Each round live, but the first one when its batch was collected."""
        return collected if collected is not None and plan is first else run_map(plan, progress=mode, refresh_rate=settings.refresh_rate)

    reached = run_rounds(job.rounds(), run)
    final = job.reducer.final
    if not reached or final is None:
        result = job.result(None)
        shell.user_ns["_nano"] = result
        unfinished = job.reducer.unfinished
        if result.stopped and unfinished is not None:
            raise CellFailed(f"Stopped by you in round {len(result.rounds) + 1}: {unfinished.done:,} of {len(unfinished.answers):,} "
                             "chunks are done, kept in the cache; run the cell again to continue.")
        chunk, error = next(iter(result.failed.items()))
        raise CellFailed(f"{len(result.failed):,} chunks failed in round {len(result.rounds) + 1} (chunk {chunk}: {error}); "
                         "the others are kept in the cache: run the cell again to retry.")
    kept: list[ReduceResult] = []

    def totals(answer: Answer) -> None:  # the footer counts every round
        kept.append(job.result(answer))
        answer.usage, answer.requests = kept[0].usage, kept[0].requests

    last = Namespace(**{**vars(args), "once": True, "new": False, "thread": REDUCE_THREAD})
    ask_once(shell, chat, settings, last, final, options, totals)
    result = kept[0]
    shell.user_ns["_nano"] = result
    if result.cut:
        print(f"{result.cut:,} rows were longer than a chunk and were cut (raise --chunk-tokens to keep them whole).")
    if result.whole:
        print(result.whole)
    return result
