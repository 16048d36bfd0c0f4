"""``openintent runs list STORE`` and ``openintent runs show STORE ID``: read the runs a
durable store journaled (finished or not), from any process."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

import anyio

from .._progress import one_line
from .._stores import RunInfo
from ..console import print_summary, rich_available
from ..errors import OpenIntentError
from ..models import RunResult, RunStatus
from ..runtime import Runtime
from ._common import EXIT_FAILED, EXIT_OK, Streams, fail, is_terminal
from ._run import print_status
from ._store_url import existing_store, explain

__all__ = [
    "load_run", "report_ended", "runs_list_command", "runs_show_command", "when",
]

_HEADERS = ["id", "name", "status", "started (UTC)", "ended (UTC)"]


def when(moment: datetime | None) -> str:
    """A time in a table: UTC, to the second (``-`` for none)."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def _list(url: str) -> list[RunInfo]:
    async with Runtime(store=url) as rt:
        return rt.runs()


async def load_run(url: str, portfolio_id: str) -> RunResult:
    """Run ``portfolio_id`` of the store at ``url``, as its log tells it."""
    async with Runtime(store=url) as rt:
        return await rt.load(portfolio_id)


def runs_list_command(args: argparse.Namespace, streams: Streams) -> int:
    """Print the store's runs, oldest first: id, name, status, when started and ended."""
    try:
        url = existing_store(args.store)
        runs = anyio.run(_list, url, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    out = streams.out
    if args.json:
        rows = [{"portfolio_id": run.portfolio_id, "name": run.name, "status": run.status,
                 "started_at": _iso(run.started_at), "ended_at": _iso(run.ended_at)}
                for run in runs]
        print(json.dumps(rows, indent=2), file=out, flush=True)
        return EXIT_OK
    if not runs:
        print(f"no runs in {args.store}", file=streams.err, flush=True)
        return EXIT_OK
    cells = [[run.portfolio_id, one_line(run.name), run.status, when(run.started_at),
              when(run.ended_at)] for run in runs]
    if rich_available() and is_terminal(out):
        _rich_table(cells, out)
    else:
        print("\n".join(aligned(_HEADERS, cells)), file=out, flush=True)
    return EXIT_OK


def aligned(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A plain text table: columns padded to their widest cell, a rule under the headers."""
    widths = [max([len(header), *(len(row[i]) for row in rows)])
              for i, header in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *map(line, rows)]


def _rich_table(rows: list[list[str]], out: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for header in _HEADERS:  # ids and times stay whole; a long name wraps
        table.add_column(header, no_wrap=header != "name")
    styles = {"completed": "green", "failed": "bold red", "halted": "bold red",
              "cancelled": "magenta", "running": "blue"}
    for row in rows:  # Text, not markup: a run's name may hold [brackets]
        table.add_row(*(Text(cell, style=styles.get(cell, "") if i == 2 else "")
                        for i, cell in enumerate(row)))
    Console(file=out).print(table)


def runs_show_command(args: argparse.Namespace, streams: Streams) -> int:
    """Print one run as the end of ``openintent run`` does: its intents, decisions, status
    (``--json``: the whole :class:`~openintent.RunResult`)."""
    try:
        url = existing_store(args.store)
        result = anyio.run(load_run, url, args.id, backend="asyncio")
    except OpenIntentError as exc:
        return fail(streams, explain(exc, args.store))
    report_ended(result, args.json, streams)
    return EXIT_OK


def report_ended(result: RunResult, as_json: bool, streams: Streams) -> int:
    """Print a run read back from its journal as the end of ``openintent run`` prints it
    (``as_json``: ``result.to_dict()``, the status on stderr); return ``run``'s exit status
    for it."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str), file=streams.out,
              flush=True)
        print_status(result, streams.err)
    else:
        print_summary(result, file=streams.out)
        print_status(result, streams.out)
    streams.out.flush()
    return EXIT_OK if result.status == RunStatus.COMPLETED else EXIT_FAILED
