"""The Gantt chart of a run for :mod:`._viz`: one bar per attempt of each intent, from its
``dispatched`` event to the event that ended it, on the events' UTC ``at`` times."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import attrs

from ._viz_text import front_matter, gantt_text

__all__ = ["Bar", "attempts_of_events", "gantt_of_events"]

_GANTT_END = {"completed": "done", "failed": "crit", "cancelled": "crit"}


@attrs.frozen
class Bar:
    """One attempt on the timeline."""

    title: str
    attempt: int
    agent: str | None
    start: datetime
    end: datetime
    outcome: str  # completed, failed, cancelled, running (never ended)


def attempts_of_events(events: Iterable[Any]) -> list[Bar]:
    """Each attempt of each intent, from its ``dispatched`` event to the event that ended it
    (a response, ``attempt_failed``, or the intent's ``completed``/``failed``/``cancelled``)."""
    bars: list[Bar] = []
    open_attempts: dict[str | None, dict[tuple[int, str | None], tuple[str, datetime]]] = {}
    last: datetime | None = None

    def close(intent: str | None, key: tuple[int, str | None], at: datetime, how: str) -> None:
        title, start = open_attempts[intent].pop(key)
        bars.append(Bar(title, key[0], key[1], start, at, how))

    for event in events:
        data = event.data or {}
        last = event.at
        opened = open_attempts.get(event.intent_id, {})
        if event.type == "dispatched":
            key = (int(data.get("attempt", 1)), data.get("agent"))
            open_attempts.setdefault(event.intent_id, {})[key] = (event.title or "?", event.at)
        elif event.type == "response_received" and opened:
            agent = data.get("agent")
            for key in [key for key in opened if key[1] == agent]:
                close(event.intent_id, key, event.at, "completed")
        elif event.type == "attempt_failed" and opened:
            attempt = data.get("attempt")
            for key in [key for key in opened if attempt is None or key[0] == attempt]:
                close(event.intent_id, key, event.at, "failed")
        elif event.type in ("completed", "failed", "cancelled") and opened:
            for key in list(opened):
                close(event.intent_id, key, event.at, event.type)
    for intent, opened in open_attempts.items():
        for key in list(opened):
            close(intent, key, last or opened[key][1], "running")
    bars.sort(key=lambda bar: (bar.start, bar.end))
    return bars


def _gantt_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}"


def gantt_of_events(title: str, events: Iterable[Any]) -> str:
    """A Mermaid Gantt chart of when each attempt of each intent ran, on the events' UTC
    ``at`` times (a virtual clock's times are as good as real ones)."""
    bars = attempts_of_events(events)
    lines = [
        *front_matter(title),
        "gantt",
        "    dateFormat YYYY-MM-DD HH:mm:ss.SSS",
        "    axisFormat %H:%M:%S",
        "    section Intents",
    ]
    if not bars:
        lines[-1] = "    %% no intent was dispatched"
    for index, bar in enumerate(bars):
        name = bar.title + (f" (attempt {bar.attempt})" if bar.attempt > 1 else "")
        if bar.agent:
            name += f" [{bar.agent}]"
        tag = _GANTT_END.get(bar.outcome, "active")
        lines.append(
            f"    {gantt_text(name)} :{tag}, a{index}, {_gantt_time(bar.start)}, "
            f"{_gantt_time(bar.end)}"
        )
    return "\n".join(lines) + "\n"
