"""Plain progress lines for ``openintent run`` on a terminal (used when the console view of
:mod:`openintent.console` is not available)."""

from __future__ import annotations

from typing import TextIO

from .._handle import RunHandle
from ..models import EventType

__all__ = ["print_progress"]

_LINES = {
    EventType.DISPATCHED: "started   {title}",
    EventType.COMPLETED: "completed {title}",
    EventType.FAILED: "failed    {title}",
    EventType.RETRY_SCHEDULED: "retrying  {title}",
    EventType.SKIPPED: "skipped   {title}",
    EventType.CANCELLED: "cancelled {title}",
    EventType.APPROVAL_REQUESTED: "waiting   {title} (approval)",
    EventType.APPROVAL_GRANTED: "approved  {title}",
    EventType.APPROVAL_DENIED: "denied    {title}",
    EventType.GUARDRAIL_BREACH: "breach    {title}",
}


async def print_progress(handle: RunHandle, out: TextIO) -> None:
    """Print a line for each step of ``handle``'s run, with the cost so far, until it ends."""
    cost = 0.0
    start: float | None = None
    async for event in handle.events():
        if start is None:
            start = event.time
        if event.type == EventType.COST_RECORDED and event.data:
            cost += float(event.data.get("usd", 0.0))
        line = _LINES.get(event.type)
        if line is None:
            continue
        title = event.title or (event.data or {}).get("guardrail", "")
        print(f"[{event.time - start:7.2f}s ${cost:.2f}] {line.format(title=title)}", file=out,
              flush=True)
