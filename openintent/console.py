"""Watch a run as it goes: live progress, then a summary table and the decision log.

:func:`follow` follows a :class:`~openintent.RunHandle` and prints what runs, what finished,
what failed, the cost so far and the approvals waiting; when the run ends it prints a table of
the intents (status, attempts, duration, cost) and the coordinator's decisions, and returns the
:class:`~openintent.RunResult`::

    from openintent.console import follow

    async with Runtime(agents=[...]) as rt:
        handle = await rt.start(spec)
        result = await follow(handle)

On a terminal with `rich <https://rich.readthedocs.io>`_ installed (``pip install
"openintent[cli]"``) the progress is a live display; without rich, or when the output is not a
terminal (a pipe, a log file, CI), it is plain lines, one per event worth knowing, and plain
text tables. :func:`print_summary` prints the tables of any finished ``RunResult``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any

from ._handle import RunHandle
from ._progress import (
    Progress,
    ask_approval,
    event_line,
    money,
    one_line,
    run_start,
    summary_rows,
)
from .guardrails import ApprovalRequest
from .models import RunResult

__all__ = ["ApprovalCallback", "follow", "print_summary", "rich_available"]

ApprovalCallback = Callable[[ApprovalRequest], Awaitable[object]]
"""``async def on_approval(request)``: awaited when an intent starts waiting for approval
(its return value is ignored)."""


def rich_available() -> bool:
    """Whether ``rich`` can be imported (``pip install "openintent[cli]"``)."""
    try:
        import rich.console  # noqa: F401
    except ImportError:
        return False
    return True


def _rich_console(console: Any, file: IO[str] | None) -> Any:
    """The rich ``Console`` to draw on, or ``None`` for plain lines."""
    if console is not None:
        return console if console.is_terminal else None
    if not rich_available():
        return None
    from rich.console import Console

    made = Console(file=file)
    return made if made.is_terminal else None


def _plain_file(console: Any, file: IO[str] | None) -> IO[str]:
    """Where plain lines go: ``file``, else the given console's file, else stdout."""
    if file is not None:
        return file
    chosen: IO[str] | None = getattr(console, "file", None)
    return chosen if chosen is not None else sys.stdout


async def follow(
    handle: RunHandle,
    *,
    console: Any = None,
    file: IO[str] | None = None,
    on_approval: ApprovalCallback | None = None,
) -> RunResult:
    """Print the progress of ``handle``'s run until it ends, then its summary and decisions;
    return its :class:`~openintent.RunResult`.

    ``console`` is a ``rich.console.Console`` to draw on; ``file`` (default: the console's
    file, else ``sys.stdout``) is where plain lines go. The live display is used when rich is
    installed and the output is a terminal, plain lines otherwise. ``on_approval(request)``
    is awaited when an intent starts waiting for approval (the live display pauses meanwhile,
    so it may prompt); it may ``await handle.approve(...)`` or ``deny(...)``, or leave the
    decision to others.

    Following starts at the run's first event, so a late call misses nothing; cancelling
    ``follow`` stops the printing, not the run.
    """
    rich_console = _rich_console(console, file)
    if rich_console is None:
        return await _follow_plain(handle, _plain_file(console, file), on_approval)
    from ._rich_view import follow_rich

    return await follow_rich(handle, rich_console, on_approval)


async def _follow_plain(
    handle: RunHandle, out: IO[str], on_approval: ApprovalCallback | None
) -> RunResult:
    progress = Progress()
    async for event in handle.events():
        progress.add(event)
        line = event_line(event, progress)
        if line is not None:
            out.write(f"[{progress.elapsed:8.2f}s] {line}\n")
            out.flush()
        if event.type == "approval_requested" and on_approval is not None:
            await ask_approval(handle, event.intent_id, on_approval)
    result = await handle.result()
    _plain_summary(result, out)
    return result


def print_summary(result: RunResult, *, console: Any = None, file: IO[str] | None = None) -> None:
    """Print the table of ``result``'s intents (status, attempts, duration, cost) and its
    decision log: with rich on a terminal, as plain text otherwise."""
    rich_console = _rich_console(console, file)
    if rich_console is None:
        _plain_summary(result, _plain_file(console, file))
        return
    from ._rich_view import print_rich_summary

    print_rich_summary(result, rich_console)


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in
              enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *map(line, rows)]


def _plain_summary(result: RunResult, out: IO[str]) -> None:
    headers, rows, right = summary_rows(result)
    lines = ["", f"{one_line(result.name)} ({result.portfolio_id}): {result.status}", ""]
    lines += _table(headers, rows, right)
    lines.append(f"total cost {money(result.cost_usd)}")
    if result.error:
        lines.append(f"error: {one_line(result.error)}")
    if result.decisions:
        lines += ["", "decisions:"]
        titles = _titles_by_id(result)
        start = run_start(result)
        for decision in result.decisions:
            about = f" [{one_line(titles.get(decision.intent_id or '', decision.intent_id))}]" \
                if decision.intent_id else ""
            lines.append(
                f"  {decision.time - start:8.2f}s {one_line(decision.coordinator_id)}{about}: "
                f"{one_line(decision.decision)} - {one_line(decision.rationale)}"
            )
    out.write("\n".join(lines) + "\n")
    out.flush()


def _titles_by_id(result: RunResult) -> Mapping[str, str]:
    return {item.id: item.title for item in result.intents.values()}
