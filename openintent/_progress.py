"""A run's progress folded from its events, and the words for it: what the live view
(:mod:`openintent.console`) shows, with or without rich.

Reads events and results by duck typing: it needs nothing from the runtime but what
``handle.events()`` yields and ``handle.result()`` returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "IntentProgress",
    "Progress",
    "ask_approval",
    "durations",
    "event_line",
    "money",
    "one_line",
    "run_start",
    "summary_rows",
]

_TERMINAL = {"completed", "failed", "cancelled", "skipped"}


def money(usd: float) -> str:
    """``$1,234.50``."""
    return f"${usd:,.2f}"


class IntentProgress:
    """What the view knows of one intent."""

    __slots__ = ("title", "status", "attempts", "agent", "started", "ended")

    def __init__(self, title: str) -> None:
        self.title = title
        self.status = "pending"
        self.attempts = 0
        self.agent: str | None = None
        self.started: float | None = None
        self.ended: float | None = None


class Progress:
    """The state of a run as its events so far tell it."""

    def __init__(self) -> None:
        self.name = ""
        self.portfolio_id = ""
        self.start: float | None = None
        self.now = 0.0
        self.cost_usd = 0.0
        self.status = "running"
        self.intents: dict[str, IntentProgress] = {}
        self.waiting: dict[str, str] = {}  # intent id -> title, awaiting approval

    @property
    def elapsed(self) -> float:
        """Runtime-clock seconds since the run started."""
        return self.now - self.start if self.start is not None else 0.0

    def count(self, status: str) -> int:
        """How many intents have ``status``."""
        return sum(1 for item in self.intents.values() if item.status == status)

    @property
    def running(self) -> list[IntentProgress]:
        """The intents running now, in the order they were created."""
        return [item for item in self.intents.values() if item.status == "running"]

    def add(self, event: Any) -> None:
        """Take one more event into account."""
        previous, self.now = self.now, event.time
        data = event.data or {}
        kind = event.type
        if kind == "run_started":
            self.start = event.time
            self.name = str(data.get("name", ""))
            self.portfolio_id = event.portfolio_id
        elif kind == "run_finished":
            self.status = str(data.get("status", "finished"))
        elif kind == "run_resumed":  # the run goes on: its time too, without the downtime
            if self.start is not None:
                self.start = event.time - (previous - self.start)
            self.status = "running"
        elif kind == "effect_resolved":
            self.status = "running"  # a settled effect opened the run again, for a resume
        if kind in ("run_resumed", "effect_resolved"):
            for intent_id in data.get("reopened", ()):
                if intent_id in self.intents:
                    self.intents[intent_id].status = "pending"
        if event.intent_id is None:
            return
        item = self.intents.get(event.intent_id)
        if item is None:
            item = self.intents[event.intent_id] = IntentProgress(event.title or event.intent_id)
        if kind == "dispatched":
            item.status = "running"
            item.attempts = max(item.attempts, int(data.get("attempt", item.attempts + 1)))
            item.agent = data.get("agent") or item.agent
            if item.started is None:
                item.started = event.time
        elif kind == "cost_recorded":
            self.cost_usd += float(data.get("usd", 0.0))
        elif kind == "retry_scheduled":
            item.status = "retrying"
        elif kind == "approval_requested":
            item.status = "awaiting_approval"
            self.waiting[event.intent_id] = item.title
        elif kind in ("approval_granted", "approval_denied"):
            if kind == "approval_granted":
                item.status = "pending"
            self.waiting.pop(event.intent_id, None)
        elif kind == "intent_copied":  # a fork's copy of another run's completed intent
            item.status = "completed"
            item.attempts = int(data.get("attempts", 0))
            item.agent = data.get("assigned_to")
        elif kind in _TERMINAL:
            item.status = kind
            item.ended = event.time
            self.waiting.pop(event.intent_id, None)


def one_line(text: object) -> str:
    """``text`` on one line: line breaks and other control characters become spaces."""
    return "".join(" " if ord(char) < 32 or 127 <= ord(char) < 160 else char
                   for char in str(text))


def _error(data: Any) -> str:
    kind, error = data.get("error_type"), data.get("error")
    text = f"{kind}: {error}" if kind else str(error or "")
    text = " ".join(one_line(text).split())
    return text if len(text) <= 120 else text[:119] + "…"


# Events told by one line of the event's title and data fields (missing fields: see _defaults).
_SIMPLE_LINES = {
    "skipped": "skipped    {title}: {reason}",
    "cancelled": "cancelled  {title}",
    "approval_granted": "approved   {title} by {by}",
    "approval_denied": "denied     {title} by {by}",
    "escalated": "escalated  {title}: {reason}",
    "guardrail_breach": "BREACH     {guardrail}: {reason}",
}


def _defaults(data: Any) -> dict[str, Any]:
    return {
        "reason": data.get("reason", ""),
        "by": data.get("by", "?"),
        "guardrail": data.get("guardrail", "guardrail"),
    }


def event_line(event: Any, progress: Progress) -> str | None:
    """One line for an event worth telling (``None`` for the others), as plain text."""
    data = event.data or {}
    title = one_line(event.title or event.intent_id)
    kind = event.type
    if kind == "run_started":
        forked = f", forked from {data['forked_from']}" if "forked_from" in data else ""
        return f"run {data.get('name', '')!s} ({event.portfolio_id}) started: " \
               f"{data.get('intents', '?')} intents{forked}"
    if kind == "dispatched":
        attempt = int(data.get("attempt", 1))
        again = f", attempt {attempt}" if attempt > 1 else ""
        return f"started    {title} (agent {data.get('agent', '?')}{again})"
    if kind == "completed":
        return f"completed  {title}{_took(event, progress)}{_cost(progress)}"
    if kind == "attempt_failed":
        return f"attempt {data.get('attempt', '?')} of {title} failed: {_error(data)}"
    if kind == "retry_scheduled":
        return f"retrying   {title} in {float(data.get('delay', 0.0)):.2f}s " \
               f"(attempt {data.get('attempt', '?')})"
    if kind == "failed":
        return f"FAILED     {title}: {_error(data)}{_cost(progress)}"
    if kind in _SIMPLE_LINES:
        return _SIMPLE_LINES[kind].format(title=title, **_defaults(data))
    if kind == "effect_resolved":
        how = "did not happen" if data.get("happened", True) is False else "happened"
        return f"settled    {title}: effect {data.get('name')!r} {how}"
    if kind == "approval_requested":
        return f"waiting    {title}: needs approval ({len(progress.waiting)} waiting)"
    if kind == "budget_warning":
        spent, limit = data.get("spent_usd"), data.get("max_cost_usd")
        if isinstance(spent, int | float) and isinstance(limit, int | float):
            return f"budget     warning: spent {money(spent)} of {money(limit)}"
        return "budget     warning"
    if kind == "handoff":
        return f"handoff    {title}: {data.get('from', '?')} -> {data.get('to', '?')}"
    if kind == "hook_failed":
        return f"HOOK FAILED {data.get('handler', '?')}: {_error(data)}"
    if kind == "loop_blocked":
        seconds = data.get("seconds")
        took = f" for {seconds:.2f}s" if isinstance(seconds, int | float) else ""
        return f"blocked    {title}: {data.get('handler', 'a handler')} blocked the event " \
               f"loop{took}"
    if kind == "intent_copied":
        return f"copied     {title} (completed as {data.get('from', '?')})"
    if kind == "run_resumed":
        reopened = len(data.get("reopened", ()))
        return f"run {progress.name} ({event.portfolio_id}) resumed (it was " \
               f"{data.get('from', '?')}): {reopened} intent(s) reopened"
    if kind == "run_finished":
        return f"run {data.get('status', 'finished')} after {progress.elapsed:.2f}s, " \
               f"cost {money(progress.cost_usd)}"
    return None


def _took(event: Any, progress: Progress) -> str:
    item = progress.intents.get(event.intent_id or "")
    if item is None or item.started is None:
        return ""
    return f" in {event.time - item.started:.2f}s"


def _cost(progress: Progress) -> str:
    return f" (cost so far {money(progress.cost_usd)})" if progress.cost_usd else ""


async def ask_approval(handle: Any, intent_id: str | None, on_approval: Any) -> None:
    """Await ``on_approval(request)`` for the request of ``intent_id`` if it still waits."""
    for request in handle.pending_approvals():
        if request.intent_id == intent_id:
            await on_approval(request)
            return


def durations(events: Iterable[Any]) -> dict[str, float]:
    """Seconds from each intent's first dispatch to its end, by intent id."""
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    for event in events:
        if event.intent_id is None:
            continue
        if event.type == "dispatched":
            started.setdefault(event.intent_id, event.time)
        elif event.type in _TERMINAL and event.intent_id in started:
            took[event.intent_id] = event.time - started[event.intent_id]
    return took


def run_start(result: Any) -> float:
    """The runtime-clock time the run started (decision times are shown relative to it)."""
    for event in result.events:
        if event.type == "run_started":
            return float(event.time)
    return 0.0


def summary_rows(result: Any) -> tuple[list[str], list[list[str]], set[int]]:
    """The summary table of a result: headers, rows of text, right-aligned columns."""
    took = durations(result.events)
    rows = []
    for item in result.intents.values():
        seconds = took.get(item.id)
        rows.append([
            one_line(item.title),
            str(item.status),
            str(item.attempts),
            "-" if seconds is None else f"{seconds:.2f}s",
            money(item.cost_usd),
            one_line(item.assigned_to or "-"),
        ])
    return ["intent", "status", "attempts", "duration", "cost", "agent"], rows, {2, 3, 4}
