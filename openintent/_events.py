"""The event log's records: event types, events, and the read-only log view.

Events are stored as plain ``(type, time, intent_id, data)`` tuples (cheap to create by the
hundred thousand, untracked by the garbage collector); :class:`Event` is what users see.
Re-exported by :mod:`openintent.models`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, overload

from ._data import read_only, to_plain
from ._registry import current_registry, suggest

__all__ = ["PACKED_FIELDS", "Event", "EventLog", "EventType", "public_event"]


class EventType:
    """The kinds of event in a run's log, as plain strings.

    Plain ``str`` constants rather than an enum: an event is then a tuple of atomic values,
    which the garbage collector stops tracking, and that keeps long runs fast.
    ``ALL`` is the set of every type.
    """

    RUN_STARTED: Final = "run_started"
    CREATED: Final = "created"
    READY: Final = "ready"
    DISPATCHED: Final = "dispatched"
    STATE_PATCHED: Final = "state_patched"
    COST_RECORDED: Final = "cost_recorded"
    ATTEMPT_FAILED: Final = "attempt_failed"
    RETRY_SCHEDULED: Final = "retry_scheduled"
    COMPLETED: Final = "completed"
    FAILED: Final = "failed"
    SKIPPED: Final = "skipped"
    CANCELLED: Final = "cancelled"
    HOOK_FAILED: Final = "hook_failed"
    HANDOFF: Final = "handoff"
    ESCALATED: Final = "escalated"
    RESPONSE: Final = "response_received"
    DECISION: Final = "decision_recorded"
    BUDGET_WARNING: Final = "budget_warning"
    GUARDRAIL_BREACH: Final = "guardrail_breach"
    APPROVAL_REQUESTED: Final = "approval_requested"
    APPROVAL_GRANTED: Final = "approval_granted"
    APPROVAL_DENIED: Final = "approval_denied"
    LOOP_BLOCKED: Final = "loop_blocked"
    RUN_FINISHED: Final = "run_finished"

    ALL: Final = frozenset(
        {
            "run_started",
            "created",
            "ready",
            "dispatched",
            "state_patched",
            "cost_recorded",
            "attempt_failed",
            "retry_scheduled",
            "completed",
            "failed",
            "skipped",
            "cancelled",
            "hook_failed",
            "handoff",
            "escalated",
            "response_received",
            "decision_recorded",
            "budget_warning",
            "guardrail_breach",
            "approval_requested",
            "approval_granted",
            "approval_denied",
            "loop_blocked",
            "run_finished",
        }
    )


class Event(NamedTuple):
    """One entry of a run's event log. Immutable; ``seq`` orders the log from 0.

    ``data`` holds what the event says beyond its type (the patch of ``state_patched``, the
    result of ``completed``, the error of ``attempt_failed``, ...) as a deep read-only view:
    changing it raises ``TypeError``; ``to_dict()`` gives a plain copy.
    """

    seq: int
    type: str
    time: float
    portfolio_id: str
    intent_id: str | None
    data: Mapping[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this event."""
        return {
            "seq": self.seq,
            "type": self.type,
            "time": self.time,
            "portfolio_id": self.portfolio_id,
            "intent_id": self.intent_id,
            "data": to_plain(self.data) if self.data else {},
        }


# The scheduler's own high-volume events store their data as a flat tuple in this field order
# rather than a dict: a tuple of atomic values (unlike any dict) lets the garbage collector
# untrack the event, which keeps collections cheap in runs of 100,000 intents. ``Event.data``
# is always a dict for users.
PACKED_FIELDS: dict[str, tuple[str, ...]] = {
    EventType.CREATED: ("title", "depends_on", "assign", "initial_state"),
    EventType.DISPATCHED: ("attempt", "agent"),
}


def public_event(raw: tuple[Any, ...], seq: int, portfolio_id: str) -> Event:
    """The :class:`Event` for a stored ``(type, time, intent_id, data)`` tuple.

    The log stores only what differs between events; ``seq`` is the position in the log and
    ``portfolio_id`` the log's own.
    """
    type_, time_, intent_id, data = raw
    if type(data) is tuple:
        data = dict(zip(PACKED_FIELDS[type_], data, strict=True))
        if "initial_state" in data and data["initial_state"] is None:
            data["initial_state"] = {}
    return Event(seq, type_, time_, portfolio_id, intent_id, read_only(data))


class EventLog(Sequence[Event]):
    """A read-only view of a run's events, in order."""

    __slots__ = ("_events", "_portfolio_id")

    def __init__(self, events: Sequence[tuple[Any, ...]], portfolio_id: str) -> None:
        self._events = events
        self._portfolio_id = portfolio_id

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            positions = range(len(self._events))[index]
            return [self[position] for position in positions]
        position = range(len(self._events))[index]  # negative indexes and IndexError
        return public_event(self._events[position], position, self._portfolio_id)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        portfolio_id = self._portfolio_id
        for seq, raw in enumerate(self._events):
            yield public_event(raw, seq, portfolio_id)

    def of_type(self, *types: str) -> list[Event]:
        """The events whose type is one of ``types`` (see :class:`EventType`, and the custom
        types declared with ``register_event_type``), in order; an unknown type is a
        ``ValueError``."""
        wanted = set(types)
        known = EventType.ALL | current_registry().event_types
        unknown = wanted - known
        if unknown:
            unknown -= set(self.types())  # a custom type the log holds is known to it
        if unknown:
            first = sorted(unknown)[0]
            valid = ", ".join(sorted(known))
            raise ValueError(
                f"unknown event type(s) {sorted(unknown)}{suggest(first, sorted(known))}; "
                f"valid: {valid}. Declare your own with openintent.register_event_type(name)"
            )
        return [event for event in self if event.type in wanted]

    def for_intent(self, intent_id: str) -> list[Event]:
        """The events about one intent, in order."""
        return [event for event in self if event.intent_id == intent_id]

    def types(self) -> list[str]:
        """The type of every event, in order (handy in assertions)."""
        return [raw[0] for raw in self._events]

    def __repr__(self) -> str:
        return f"EventLog(<{len(self._events)} events>)"
