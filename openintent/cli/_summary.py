"""The end of ``openintent run``: a summary table of the intents, the decision log, and the
run's final status (rich tables when ``rich`` is installed and the output is a terminal,
plain aligned text otherwise)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from ..models import EventType, RunResult

__all__ = ["print_status", "print_summary", "summary_rows"]

_ENDS = frozenset(
    {EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED, EventType.SKIPPED}
)
_HEADERS = ("intent", "status", "attempts", "duration", "cost")


def summary_rows(result: RunResult) -> list[tuple[str, str, str, str, str]]:
    """One row per intent, in declaration order: title, status, attempts, duration (from its
    first dispatch to its end, on the run's clock), cost."""
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for event in result.events:
        if event.intent_id is None:
            continue
        if event.type == EventType.DISPATCHED:
            started.setdefault(event.intent_id, event.time)
        elif event.type in _ENDS:
            ended[event.intent_id] = event.time
    rows = []
    for title, item in result.intents.items():
        begin, end = started.get(item.id), ended.get(item.id)
        duration = f"{end - begin:.2f}s" if begin is not None and end is not None else "-"
        rows.append(
            (title, str(item.status), str(item.attempts), duration, f"${item.cost_usd:.2f}")
        )
    return rows


def decision_rows(result: RunResult) -> list[tuple[str, str, str, str]]:
    """The decision log: who, about which intent, what, why."""
    titles = {item.id: title for title, item in result.intents.items()}
    return [
        (
            decision.coordinator_id,
            titles.get(decision.intent_id or "", decision.intent_id or "-"),
            decision.decision,
            decision.rationale,
        )
        for decision in result.decisions
    ]


def print_summary(result: RunResult, out: TextIO, *, rich: bool) -> None:
    """Print the intents table and the decision log."""
    rows = summary_rows(result)
    decisions = decision_rows(result)
    print(f"\n{result.name} ({result.portfolio_id})", file=out)
    if not (rich and _print_rich(rows, decisions, out)):
        _print_plain(_HEADERS, rows, out)
        if decisions:
            print("\nDecisions", file=out)
            _print_plain(("coordinator", "intent", "decision", "rationale"), decisions, out)
    print(f"\ntotal cost: ${result.cost_usd:.2f}", file=out)


def print_status(result: RunResult, out: TextIO, reason: str | None = None) -> None:
    """The last line of every run: its final status, and why when it did not complete."""
    line = f"status: {result.status}"
    if reason:
        line += f" ({reason})"
    elif result.error:
        line += f" ({result.error})"
    elif result.failed_intents:
        failed = result.failed_intents[0]
        line += f" ({failed.title!r} failed: {failed.error_type}: {failed.error})"
    print(line, file=out)


def _print_plain(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in (tuple(headers), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip(), file=out)


def _print_rich(
    rows: Sequence[Sequence[str]], decisions: Sequence[Sequence[str]], out: TextIO
) -> bool:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console(file=out)
    table = Table(title="Intents")
    for header in _HEADERS:
        justify: Any = "right" if header in ("attempts", "duration", "cost") else "left"
        table.add_column(header, justify=justify)
    for row in rows:
        table.add_row(*row, style=_STYLES.get(row[1], ""))
    console.print(table)
    if decisions:
        log = Table(title="Decisions")
        for header in ("coordinator", "intent", "decision", "rationale"):
            log.add_column(header)
        for decision in decisions:
            log.add_row(*decision)
        console.print(log)
    return True


_STYLES = {"completed": "green", "failed": "red", "cancelled": "yellow", "skipped": "dim"}
