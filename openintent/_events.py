"""The event log's records: event types, events, and the read-only log view.

Events are stored as plain ``(type, time, intent_id, data)`` tuples (cheap to create by the
hundred thousand, untracked by the garbage collector); :class:`Event` is what users see, with
what the log knows besides the tuple (position, portfolio, the intent's title, the UTC time)
filled in as it is built. Re-exported by :mod:`openintent.models`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple, overload

from ._data import read_only, to_plain
from ._registry import current_registry, suggest

__all__ = ["PACKED_FIELDS", "Event", "EventLog", "EventSource", "EventType", "public_event"]


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
    RUN_RESUMED: Final = "run_resumed"
    COORDINATOR_FAILED_OVER: Final = "coordinator_failed_over"
    EFFECT_STARTED: Final = "effect_started"
    EFFECT_COMPLETED: Final = "effect_completed"
    EFFECT_FAILED: Final = "effect_failed"
    EFFECT_RESOLVED: Final = "effect_resolved"
    AGENT_ASSIGNED: Final = "agent_assigned"
    AGENT_UNASSIGNED: Final = "agent_unassigned"
    DEPENDENCY_ADDED: Final = "dependency_added"
    INTENT_COPIED: Final = "intent_copied"

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
            "run_resumed",
            "coordinator_failed_over",
            "effect_started",
            "effect_completed",
            "effect_failed",
            "effect_resolved",
            "agent_assigned",
            "agent_unassigned",
            "dependency_added",
            "intent_copied",
        }
    )


class Event(NamedTuple):
    """One entry of a run's event log. Immutable; ``seq`` orders the log from 0.

    ``data`` holds what the event says beyond its type (the patch of ``state_patched``, the
    result of ``completed``, the error of ``attempt_failed``, ...) as a deep read-only view:
    changing it raises ``TypeError``; ``to_dict()`` gives a plain copy. ``time`` is the
    runtime clock's (seconds; only differences mean anything), ``at`` the same instant as a
    timezone-aware UTC ``datetime``; ``title`` is the intent's (``None`` for events of the run
    itself).
    """

    seq: int
    type: str
    time: float
    portfolio_id: str
    intent_id: str | None
    data: Mapping[str, Any] | None
    title: str | None
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this event (``at`` as an ISO 8601 string)."""
        at: Any = self.at
        return {
            "seq": self.seq,
            "type": self.type,
            "time": self.time,
            "at": at.isoformat() if isinstance(at, datetime) else at,
            "portfolio_id": self.portfolio_id,
            "intent_id": self.intent_id,
            "title": self.title,
            "data": to_plain(self.data) if self.data else {},
        }


# The scheduler's own high-volume events store their data as a flat tuple in this field order
# rather than a dict: a tuple of atomic values (unlike any dict) lets the garbage collector
# untrack the event, which keeps collections cheap in runs of 100,000 intents. ``Event.data``
# is always a dict for users.
PACKED_FIELDS: dict[str, tuple[str, ...]] = {
    # ``spec``: the intent spec's other fields as JSON data, ``None`` when all are default
    # (see openintent._plan_data.intent_data; a public event leaves a ``None`` spec out).
    EventType.CREATED: ("title", "depends_on", "assign", "initial_state", "spec"),
    EventType.DISPATCHED: ("attempt", "agent"),
}


class EventSource:
    """What a log knows besides its stored tuples: its portfolio, its intents' titles, and its
    run's time base (clock time -> UTC ``datetime``). One per log.

    A resumed run's log has stretches, each timed by the clock of the process that wrote it:
    ``wall`` dates the events from ``since`` on (the ``run_resumed`` event's seq), and
    ``earlier(seq, time)`` those before it.
    """

    __slots__ = ("portfolio_id", "title_of", "wall", "since", "earlier")

    def __init__(
        self,
        portfolio_id: str,
        title_of: Callable[[str], str | None],
        wall: Callable[[float], datetime],
        since: int = 0,
        earlier: Callable[[int, float], datetime] | None = None,
    ) -> None:
        self.portfolio_id = portfolio_id
        self.title_of = title_of
        self.wall = wall
        self.since = since
        self.earlier = earlier


def public_event(raw: tuple[Any, ...], seq: int, source: EventSource) -> Event:
    """The :class:`Event` for a stored ``(type, time, intent_id, data)`` tuple.

    The log stores only what differs between events; ``seq`` is the position in the log, and
    the portfolio id, the intent's title and the UTC time come from the log's ``source``.
    """
    type_, time_, intent_id, data = raw
    if type(data) is tuple:
        data = dict(zip(PACKED_FIELDS[type_], data, strict=True))
        if type_ == EventType.CREATED:  # JSON data, as a journal gives it back: lists
            data["depends_on"] = list(data["depends_on"])
            if type(data["assign"]) is tuple:
                data["assign"] = list(data["assign"])
            if data["initial_state"] is None:
                data["initial_state"] = {}
            if data["spec"] is None:
                del data["spec"]
    title = source.title_of(intent_id) if intent_id is not None else None
    at = (source.wall(time_) if seq >= source.since or source.earlier is None
          else source.earlier(seq, time_))
    return Event(seq, type_, time_, source.portfolio_id, intent_id, read_only(data), title, at)


class EventLog(Sequence[Event]):
    """A read-only view of a run's events, in order.

    Queries and slices return narrower views of the same log, so they chain, and each event
    keeps its ``seq`` (its position in the whole log)::

        result.events.of_type("completed").for_intent(intent_id)
        result.events.for_intent("Review").types()

    A view compares equal to a list of the same events.
    """

    __slots__ = ("_events", "_source", "_seqs")

    def __init__(
        self,
        events: Sequence[tuple[Any, ...]],
        source: EventSource,
        seqs: Sequence[int] | None = None,
    ) -> None:
        self._events = events  # the whole stored log, also in a narrowed view
        self._source = source
        self._seqs = seqs  # the positions this view shows (None: all of them)

    def _positions(self) -> Sequence[int]:
        return range(len(self._events)) if self._seqs is None else self._seqs

    def _narrowed(self, keep: Callable[[tuple[Any, ...]], bool]) -> EventLog:
        events = self._events
        return EventLog(events, self._source,
                        [seq for seq in self._positions() if keep(events[seq])])

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> EventLog: ...
    def __getitem__(self, index: int | slice) -> Event | EventLog:
        if isinstance(index, slice):  # a narrower view too, so queries chain on it
            return EventLog(self._events, self._source, self._positions()[index])
        seq = self._positions()[index]  # negative indexes and IndexError
        return public_event(self._events[seq], seq, self._source)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[Event]:
        events, source = self._events, self._source
        for seq in self._positions():
            yield public_event(events[seq], seq, source)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventLog | list | tuple) and not hasattr(other, "_fields"):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them

    def __add__(self, other: Sequence[Event]) -> list[Event]:
        return [*self, *other]

    def __radd__(self, other: Sequence[Event]) -> list[Event]:
        return [*other, *self]

    def of_type(self, *types: str | Iterable[str]) -> EventLog:
        """The events whose type is one of ``types`` (see :class:`EventType`, and the custom
        types declared with ``register_event_type``), in order; an unknown type is a
        ``ValueError``. Types may come one by one or as lists: ``of_type("a", "b")`` and
        ``of_type(["a", "b"])`` are the same query."""
        wanted = _known_types(_flat_types(types), self._events)
        return self._narrowed(lambda raw: raw[0] in wanted)

    def for_intent(self, intent: str) -> EventLog:
        """The events about one intent, by id, or by title when no intent has that id.

        Raises ``ValueError`` for a title that several intents of the log share, and for a
        name that is neither an id nor a title of an intent of the log (with the closest
        title). An intent of the log with no events in this view gives an empty view.
        """
        intent_id = self._intent_id(intent)
        return self._narrowed(lambda raw: raw[2] == intent_id)

    def _intent_id(self, intent: str) -> str:
        if self._source.title_of(intent) is not None:
            return intent  # an id of this log
        ids: list[str] = [raw[2] for raw in self._events
               if raw[0] == EventType.CREATED and _title(raw[3]) == intent]
        if len(ids) > 1:
            raise ValueError(f"{len(ids)} intents of this log are titled {intent!r}; "
                             f"pass an intent id instead ({', '.join(ids)})")
        if ids:
            return ids[0]
        titles = sorted({str(_title(raw[3])) for raw in self._events
                         if raw[0] == EventType.CREATED})
        more = f" and {len(titles) - 10} more" if len(titles) > 10 else ""
        known = f"; its intents are {', '.join(map(repr, titles[:10]))}{more}" if titles else (
            "; it has no intents")
        raise ValueError(
            f"no intent of this log has the id or title {intent!r}"
            f"{suggest(intent, titles) if isinstance(intent, str) else ''}{known}"
        )

    def types(self) -> list[str]:
        """The type of every event, in order (handy in assertions)."""
        events = self._events
        return [events[seq][0] for seq in self._positions()]

    def __repr__(self) -> str:
        return f"EventLog(<{len(self)} events>)"


def _flat_types(types: tuple[str | Iterable[str], ...]) -> list[str]:
    """``of_type``'s arguments as one list of names (each a name or an iterable of names)."""
    flat: list[str] = []
    for item in types:
        if isinstance(item, str):
            flat.append(item)
            continue
        if not isinstance(item, Iterable):
            raise TypeError(f"of_type takes event type names (str), got {item!r}")
        for name in item:
            if not isinstance(name, str):
                raise TypeError(f"of_type takes event type names (str), got {name!r}")
            flat.append(name)
    return flat


def _known_types(types: Sequence[str], log: Sequence[tuple[Any, ...]]) -> frozenset[str]:
    """``types`` as a set, or ``ValueError`` naming the unknown ones (the built-in types, the
    declared custom ones, and any type the whole ``log`` holds are known)."""
    wanted = frozenset(types)
    known = EventType.ALL | current_registry().event_types
    unknown = wanted - known
    if unknown:
        unknown -= {raw[0] for raw in log}  # a custom type the log holds is known to it
    if unknown:
        first = sorted(unknown)[0]
        valid = ", ".join(sorted(known))
        raise ValueError(
            f"unknown event type(s) {sorted(unknown)}{suggest(first, sorted(known))}; "
            f"valid: {valid}. Declare your own with openintent.register_event_type(name)"
        )
    return wanted


def _title(data: Any) -> Any:
    """The title in a ``created`` event's data (packed, or a dict)."""
    return data[0] if type(data) is tuple else (data or {}).get("title")
