"""The append-only event log of a run and the projection of intent records derived from it.

Every change to an intent is an :class:`~openintent.models.Event`; :func:`apply` is the only
code that changes an :class:`IntentRecord`, both live (as events are emitted) and in
:func:`replay` (from a finished log), so the two can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from anyio.streams.memory import MemoryObjectSendStream

from ._clock import Clock
from .models import Event, EventType, IntentResult, IntentStatus

__all__ = ["EventStore", "IntentRecord", "ResultsView", "apply", "replay"]


class IntentRecord:
    """The current projection of one intent (mutable; only :func:`apply` changes it)."""

    __slots__ = (
        "id",
        "title",
        "status",
        "state",
        "version",
        "assigned_to",
        "attempts",
        "depends_on",
        "error",
        "error_type",
        "cost_usd",
    )

    def __init__(self, id: str, title: str, state: dict[str, Any], depends_on: tuple[str, ...],
                 assigned_to: str | None) -> None:
        self.id = id
        self.title = title
        self.status = IntentStatus.PENDING
        self.state = state
        self.version = 0
        self.assigned_to = assigned_to
        self.attempts = 0
        self.depends_on = depends_on
        self.error: str | None = None
        self.error_type: str | None = None
        self.cost_usd = 0.0

    def to_result(self) -> IntentResult:
        """A frozen copy for a :class:`~openintent.models.RunResult`."""
        return IntentResult(
            id=self.id,
            title=self.title,
            status=self.status,
            state=self.state,
            version=self.version,
            assigned_to=self.assigned_to,
            attempts=self.attempts,
            depends_on=self.depends_on,
            error=self.error,
            error_type=self.error_type,
            cost_usd=self.cost_usd,
        )

    def key(self) -> tuple[Any, ...]:
        """Every field, for comparing a live projection with a replayed one."""
        return tuple(getattr(self, name) for name in self.__slots__)


Records = dict[str, IntentRecord]


def _created(records: Records, event: Event) -> None:
    data: Mapping[str, Any] = event.data or {}
    intent_id = event.intent_id or ""
    records[intent_id] = IntentRecord(
        intent_id,
        data["title"],
        dict(data["initial_state"]),
        tuple(data["depends_on"]),
        data["assign"],
    )


def _dispatched(records: Records, event: Event) -> None:
    record = records[event.intent_id or ""]
    data: Mapping[str, Any] = event.data or {}
    record.status = IntentStatus.RUNNING
    record.attempts = data["attempt"]
    record.assigned_to = data["agent"]


def _merge(record: IntentRecord, changes: Mapping[str, Any] | None) -> None:
    if changes:
        # A new dict: state snapshots handed out earlier never change under their holder.
        record.state = {**record.state, **changes}
        record.version += 1


def _state_patched(records: Records, event: Event) -> None:
    _merge(records[event.intent_id or ""], (event.data or {})["patch"])


def _completed(records: Records, event: Event) -> None:
    record = records[event.intent_id or ""]
    _merge(record, event.data)
    record.status = IntentStatus.COMPLETED


def _error(record: IntentRecord, event: Event) -> None:
    data: Mapping[str, Any] = event.data or {}
    record.error = data.get("error")
    record.error_type = data.get("error_type")


def _attempt_failed(records: Records, event: Event) -> None:
    _error(records[event.intent_id or ""], event)


def _retry_scheduled(records: Records, event: Event) -> None:
    records[event.intent_id or ""].status = IntentStatus.PENDING


def _failed(records: Records, event: Event) -> None:
    record = records[event.intent_id or ""]
    _error(record, event)
    record.status = IntentStatus.FAILED


def _skipped(records: Records, event: Event) -> None:
    records[event.intent_id or ""].status = IntentStatus.SKIPPED


def _cancelled(records: Records, event: Event) -> None:
    records[event.intent_id or ""].status = IntentStatus.CANCELLED


def _cost_recorded(records: Records, event: Event) -> None:
    if event.intent_id is not None:
        records[event.intent_id].cost_usd += (event.data or {})["usd"]


_APPLY: dict[EventType, Callable[[Records, Event], None]] = {
    EventType.CREATED: _created,
    EventType.DISPATCHED: _dispatched,
    EventType.STATE_PATCHED: _state_patched,
    EventType.COMPLETED: _completed,
    EventType.ATTEMPT_FAILED: _attempt_failed,
    EventType.RETRY_SCHEDULED: _retry_scheduled,
    EventType.FAILED: _failed,
    EventType.SKIPPED: _skipped,
    EventType.CANCELLED: _cancelled,
    EventType.COST_RECORDED: _cost_recorded,
}


def apply(records: Records, event: Event) -> None:
    """Apply one event to the projection (events that change no intent are ignored)."""
    handler = _APPLY.get(event.type)
    if handler is not None:
        handler(records, event)


def replay(events: Iterable[Event]) -> Records:
    """Re-derive every intent's record from an event log alone."""
    records: Records = {}
    for event in events:
        apply(records, event)
    return records


class EventStore:
    """The in-memory event log of one run, its projection, and its live subscribers."""

    def __init__(self, portfolio_id: str, clock: Clock) -> None:
        self.portfolio_id = portfolio_id
        self.events: list[Event] = []
        self.records: Records = {}
        self.total_cost = 0.0
        self._clock = clock
        self.subscribers: list[MemoryObjectSendStream[Event]] = []
        self.listeners: list[Callable[[Event], None]] = []

    def emit(
        self, type: EventType, intent_id: str | None = None, data: Mapping[str, Any] | None = None
    ) -> Event:
        """Append an event, apply it to the projection, and tell subscribers."""
        event = Event(len(self.events), type, self._clock.now(), self.portfolio_id, intent_id, data)
        self.events.append(event)
        handler = _APPLY.get(type)
        if handler is not None:
            handler(self.records, event)
        if type is EventType.COST_RECORDED:
            self.total_cost += (data or {})["usd"]
        for listener in self.listeners:
            listener(event)
        for stream in self.subscribers:
            try:
                stream.send_nowait(event)
            except Exception:  # noqa: BLE001 - a closed subscriber just stops receiving
                pass
        return event


def is_valid_cost(usd: object) -> bool:
    """A finite, non-negative number."""
    return isinstance(usd, int | float) and not isinstance(usd, bool) and usd >= 0 and math.isfinite(usd)


class ResultsView(Mapping[str, IntentResult]):
    """Intent results by title, in declaration order, built from the projection on access."""

    __slots__ = ("_records", "_ids", "_cache")

    def __init__(self, records: Records, ids_by_title: Mapping[str, str]) -> None:
        self._records = records
        self._ids = ids_by_title
        self._cache: dict[str, IntentResult] = {}

    def __getitem__(self, title: str) -> IntentResult:
        cached = self._cache.get(title)
        if cached is None:
            cached = self._cache[title] = self._records[self._ids[title]].to_result()
        return cached

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<{len(self._ids)} intent results>"
