"""The rich side of :mod:`openintent.console`: a live display of a run on a terminal, then
the summary table and the decision log as rich tables. Imported only when rich is."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

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
from .models import RunResult

__all__ = ["follow_rich", "print_rich_summary", "render_progress"]

# At most this many redraws of the live display per second of real time: events can come by
# the thousand, and each redraw costs.
_REFRESH_SECONDS = 0.1

_ALWAYS_REDRAW = frozenset({"approval_requested", "approval_granted", "approval_denied"})

_STYLES = {
    "completed": "green",
    "failed": "bold red",
    "attempt_failed": "yellow",
    "retry_scheduled": "yellow",
    "skipped": "dim",
    "cancelled": "magenta",
    "approval_requested": "bold yellow",
    "approval_granted": "cyan",
    "approval_denied": "red",
    "guardrail_breach": "bold red",
    "budget_warning": "yellow",
    "escalated": "magenta",
    "dispatched": "blue",
    "run_started": "bold",
}
_STATUS_STYLES = {
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "skipped": "dim",
    "running": "blue",
    "awaiting_approval": "yellow",
    "retrying": "yellow",
    "halted": "bold red",
}


def render_progress(progress: Progress) -> Group:
    """The live display: one status line, what runs now, what waits for approval."""
    total = len(progress.intents)
    done = progress.count("completed")
    status = Text.assemble(
        (f"{progress.elapsed:.2f}s ", "dim"),
        (f"{done}/{total} completed", "green"),
        (f"  {progress.count('failed')} failed", "red" if progress.count("failed") else "dim"),
        (f"  cost {money(progress.cost_usd)}", "bold"),
    )
    lines: list[Any] = [status]
    running = progress.running
    if running:
        names = ", ".join(one_line(item.title) for item in running[:8])
        more = f" and {len(running) - 8} more" if len(running) > 8 else ""
        lines.append(Text.assemble(("running: ", "blue"), names + more))
    if progress.waiting:
        names = ", ".join(one_line(title) for title in progress.waiting.values())
        lines.append(Text.assemble(("waiting for approval: ", "bold yellow"), names))
    return Group(*lines)


def _line(event: Any, progress: Progress) -> Text | None:
    line = event_line(event, progress)
    if line is None:
        return None
    style = _STYLES.get(event.type, "")
    if event.type == "run_finished":
        style = _STATUS_STYLES.get(progress.status, "bold")
    return Text.assemble((f"{progress.elapsed:8.2f}s ", "dim"), (line, style))


async def follow_rich(handle: RunHandle, console: Console, on_approval: Any) -> RunResult:
    """``follow`` on a terminal: event lines scroll above a live status display."""
    progress = Progress()
    drawn = 0.0
    live = Live(render_progress(progress), console=console, auto_refresh=False,
                transient=True, redirect_stdout=False, redirect_stderr=False)
    with live:
        async for event in handle.events():
            progress.add(event)
            line = _line(event, progress)
            if line is not None:
                live.console.print(line)
            now = time.monotonic()
            if now - drawn >= _REFRESH_SECONDS or event.type in _ALWAYS_REDRAW:
                live.update(render_progress(progress), refresh=True)
                drawn = now
            if event.type == "approval_requested" and on_approval is not None:
                live.stop()  # let the callback prompt on a clean terminal
                try:
                    await ask_approval(handle, event.intent_id, on_approval)
                finally:
                    live.start()
    result = await handle.result()
    print_rich_summary(result, console)
    return result


def print_rich_summary(result: RunResult, console: Console) -> None:
    """The summary table and the decision log as rich tables."""
    headers, rows, right = summary_rows(result)
    status_style = _STATUS_STYLES.get(str(result.status), "bold")
    table = Table(title=Text.assemble(one_line(result.name), " ", (str(result.status),
                                                                       status_style)))
    for index, header in enumerate(headers):
        table.add_column(header, justify="right" if index in right else "left")
    for row in rows:
        cells = [Text(cell) for cell in row]
        cells[1].stylize(_STATUS_STYLES.get(row[1], ""))
        table.add_row(*cells)
    table.caption = f"{result.portfolio_id} · total cost {money(result.cost_usd)}"
    console.print(table)
    if result.error:
        console.print(Text.assemble(("error: ", "bold red"), one_line(result.error)))
    if not result.decisions:
        return
    titles = {item.id: item.title for item in result.intents.values()}
    decisions = Table(title="decisions")
    for header in ("time", "by", "intent", "decision", "rationale"):
        decisions.add_column(header, justify="right" if header == "time" else "left")
    start = run_start(result)
    for decision in result.decisions:
        intent = titles.get(decision.intent_id or "", decision.intent_id or "-")
        decisions.add_row(f"{decision.time - start:.2f}s", Text(one_line(decision.coordinator_id)),
                          Text(one_line(intent)), Text(one_line(decision.decision)),
                          Text(one_line(decision.rationale)))
    console.print(decisions)
