"""The append-only event log of a run and the projection of intent records derived from it.

Every change to an intent is an :class:`~openintent.models.Event`; the apply functions in
``_APPLY`` are the only code that changes an :class:`IntentRecord`, as each event is appended.
The events themselves are kept by a backend (:mod:`openintent._stores`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from contextvars import ContextVar
from typing import Any, Final, cast

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from ._clock import Clock, run_timebase
from ._data import EMPTY, merged, read_only, to_plain
from ._effect_log import EFFECT_APPLY, copied_effects
from ._effect_records import EffectState, effect_results
from ._events import EventSource
from ._logging import logging_configured
from ._stores import EventBackend, Journal
from .models import (
    PACKED_FIELDS,
    Decision,
    Event,
    EventType,
    IntentResult,
    IntentStatus,
    public_event,
)

__all__ = ["EventStore", "IntentRecord"]


class IntentRecord:
    """The current projection of one intent (mutable; only the apply functions change it).

    Only what events say is here; the scheduler keeps its own bookkeeping for the intent
    apart (:class:`openintent._nodes.Node`).
    """

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
        "effects",
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
        #: Its side effects by name (``self.effect``), or ``None`` before the first one.
        self.effects: dict[str, EffectState] | None = None

    def to_result(self, *, view: bool = False) -> IntentResult:
        """A frozen copy for a :class:`~openintent.models.RunResult`; its state is a deep copy,
        or with ``view`` a read-only view (changing either never touches the log)."""
        state = self.state
        return IntentResult(
            id=self.id,
            title=self.title,
            status=self.status,
            state=state if view else to_plain(state),
            version=self.version,
            assigned_to=self.assigned_to,
            attempts=self.attempts,
            depends_on=self.depends_on,
            error=self.error,
            error_type=self.error_type,
            cost_usd=self.cost_usd,
            effects=() if self.effects is None else effect_results(
                self.effects, self.status is IntentStatus.RUNNING, self.attempts, view=view),
        )


Records = dict[str, IntentRecord]

# Events are stored as plain (type, time, intent_id, data) tuples: an exact tuple of atomic
# values is untracked by the garbage collector, and leaving out what the log already knows
# (seq is the position, portfolio_id the log's own) saves memory in runs of 100,000 intents.
# models.public_event turns one into an Event on the way out.
RawEvent = tuple[str, float, str | None, Any]
_TYPE: Final = 0
_INTENT: Final = 2
_DATA: Final = 3
_NO_DATA: Mapping[str, Any] = {}


def _fields(event: RawEvent) -> tuple[Any, ...]:
    """The data of a packed event (see ``models.PACKED_FIELDS``) as a tuple."""
    data: Any = event[_DATA]
    if type(data) is tuple:
        return data
    # A replayed Event's dict (a public ``created`` event leaves a ``None`` spec out).
    return tuple(data.get(name) for name in PACKED_FIELDS[event[_TYPE]])


def _created(
    records: Records, event: RawEvent, record_type: type[IntentRecord] = IntentRecord
) -> None:
    data = event[_DATA]
    title, depends_on, assign, initial_state, _spec = (
        data if type(data) is tuple else _fields(event))
    intent_id = event[_INTENT] or ""
    if assign is not None and not isinstance(assign, str):  # several assignees: "a,b"
        assign = ",".join(assign)
    records[intent_id] = record_type(
        intent_id,
        title,
        read_only(initial_state) if initial_state else EMPTY,
        tuple(depends_on),
        assign,
    )


def _dispatched(records: Records, event: RawEvent) -> None:
    record = records[event[_INTENT] or ""]
    record.status = IntentStatus.RUNNING
    data = event[_DATA]
    record.attempts, record.assigned_to = data if type(data) is tuple else _fields(event)


def _merge(record: IntentRecord, changes: Mapping[str, Any] | None) -> None:
    if changes:
        # A new frozen dict: states handed out earlier never change under their holder.
        record.state = merged(record.state, changes)
        record.version += 1


def _state_patched(records: Records, event: RawEvent) -> None:
    _merge(records[event[_INTENT] or ""], (event[_DATA] or _NO_DATA)["patch"])


def _completed(records: Records, event: RawEvent) -> None:
    record = records[event[_INTENT] or ""]
    _merge(record, event[_DATA])
    record.status = IntentStatus.COMPLETED
    record.error = record.error_type = None  # failed attempts stay in the log


def _error(record: IntentRecord, event: RawEvent) -> None:
    data: Mapping[str, Any] = event[_DATA] or _NO_DATA
    record.error = data.get("error")
    record.error_type = data.get("error_type")


def _attempt_failed(records: Records, event: RawEvent) -> None:
    record = records[event[_INTENT] or ""]
    _error(record, event)
    # An attempt a guardrail refused was never dispatched, yet it was an attempt.
    record.attempts = max(record.attempts, (event[_DATA] or _NO_DATA).get("attempt", 0))


def _retry_scheduled(records: Records, event: RawEvent) -> None:
    records[event[_INTENT] or ""].status = IntentStatus.PENDING


def _failed(records: Records, event: RawEvent) -> None:
    record = records[event[_INTENT] or ""]
    _error(record, event)
    record.status = IntentStatus.FAILED


def _skipped(records: Records, event: RawEvent) -> None:
    records[event[_INTENT] or ""].status = IntentStatus.SKIPPED


def _cancelled(records: Records, event: RawEvent) -> None:
    records[event[_INTENT] or ""].status = IntentStatus.CANCELLED


def _handoff(records: Records, event: RawEvent) -> None:
    data = event[_DATA] or _NO_DATA
    if "for" not in data:  # a handoff "for" one assignee leaves the intent with all of them
        records[event[_INTENT] or ""].assigned_to = data["to"]


def _awaiting_approval(records: Records, event: RawEvent) -> None:
    records[event[_INTENT] or ""].status = IntentStatus.AWAITING_APPROVAL


def _approved(records: Records, event: RawEvent) -> None:
    records[event[_INTENT] or ""].status = IntentStatus.PENDING


def _run_resumed(records: Records, event: RawEvent) -> None:
    # The intents a resume reopens (interrupted, waiting for approval, cancelled) wait again.
    for intent_id in (event[_DATA] or _NO_DATA).get("reopened", ()):
        records[intent_id].status = IntentStatus.PENDING


def _assigned(records: Records, event: RawEvent) -> None:
    # A client's assign_agent / unassign_agent: the intent's assignees from now on.
    records[event[_INTENT] or ""].assigned_to = (event[_DATA] or _NO_DATA).get("assigned_to")


def _dependency_added(records: Records, event: RawEvent) -> None:
    record = records[event[_INTENT] or ""]
    record.depends_on = (*record.depends_on, (event[_DATA] or _NO_DATA)["on"])


def _intent_copied(records: Records, event: RawEvent) -> None:
    # A fork's copy of an intent another run completed: its final record, cost aside.
    record = records[event[_INTENT] or ""]
    data: Mapping[str, Any] = event[_DATA] or _NO_DATA
    record.state = read_only(data.get("state") or EMPTY)
    record.version = data.get("version", 0)
    record.attempts = data.get("attempts", 0)
    record.assigned_to = data.get("assigned_to")
    record.status = IntentStatus.COMPLETED
    record.error = record.error_type = None
    record.effects = copied_effects(data.get("effects"))  # all completed: never run again


def _cost_recorded(records: Records, event: RawEvent) -> None:
    intent_id = event[_INTENT]
    if intent_id is not None:
        records[intent_id].cost_usd += (event[_DATA] or _NO_DATA)["usd"]


_APPLY: dict[str, Callable[[Records, RawEvent], None]] = {
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
    EventType.HANDOFF: _handoff,
    EventType.APPROVAL_REQUESTED: _awaiting_approval,
    EventType.APPROVAL_GRANTED: _approved,
    EventType.RUN_RESUMED: _run_resumed,
    EventType.AGENT_ASSIGNED: _assigned,
    EventType.AGENT_UNASSIGNED: _assigned,
    EventType.DEPENDENCY_ADDED: _dependency_added,
    EventType.INTENT_COPIED: _intent_copied,
    **EFFECT_APPLY,
}


# Event capture for tests (openintent.testing.capture_events): every EventStore created while a
# capture is active also sends its events to the capture's list.
event_captures: ContextVar[tuple[list[Event], ...]] = ContextVar(
    "openintent_event_captures", default=()
)


class EventStore:
    """The event log of one run (kept by ``backend``), its projection, and its watchers.

    It only appends: :meth:`append` one event, :meth:`append_batch` several at once.
    Creating one checks that ``clock`` can run on this event loop and fixes the run's UTC
    time base (see :func:`~openintent._clock.run_timebase`). With ``log`` (a log the backend
    already holds, to resume it) it appends to that log instead of starting one;
    :meth:`replay` then projects the events already in it.
    """

    def __init__(
        self,
        backend: EventBackend,
        portfolio_id: str,
        clock: Clock,
        name: str = "",
        *,
        publish: bool = True,
        record_type: type[IntentRecord] = IntentRecord,
        parent: str | None = None,
        log: MutableSequence[RawEvent] | None = None,
    ) -> None:
        self.portfolio_id = portfolio_id
        records: Records = {}
        # ``record_type``: what a ``created`` event makes (the scheduler's Node, a subclass, so
        # each intent of a run is one object for the garbage collector to walk, not two).
        self._apply = _APPLY
        if record_type is not IntentRecord:
            self._apply = {
                **_APPLY,
                EventType.CREATED: lambda records, event: _created(records, event, record_type),
            }

        def title_of(intent_id: str) -> str | None:
            record = records.get(intent_id)
            return None if record is None else record.title

        self.source = EventSource(portfolio_id, title_of, run_timebase(clock))
        self.logger: Any = structlog.get_logger("openintent").bind(
            portfolio_id=portfolio_id, portfolio=name
        )
        self.events = log if log is not None else backend.create_run(
            portfolio_id, name, parent=parent, timebase=self.source.wall(0.0).timestamp())
        #: The log as a Journal when the backend is durable: the run acts on an event only
        #: once ``await journal.wait_committed(...)`` says it is on disk. ``None``: nothing
        #: waits (memory://).
        self.journal: Journal | None = None
        self.records = records
        self.total_cost = 0.0
        self._now = clock.now
        # Streams that hear every event (the backend's: rt.events()); a sub-portfolio's
        # events are not published.
        self.subscribers: list[MemoryObjectSendStream[Event]] = (
            backend.subscribers if publish else []
        )
        if backend.durable:
            # A durable log publishes an event once it is committed, not as it is appended.
            journal = self.journal = cast(Journal, self.events)
            self.subscribers = []
            journal.bind(self._publisher(backend) if publish else None,
                         getattr(clock, "hold", None))
        # Watchers only watch (a trace, event captures, live readers): none of them appends,
        # so they hear every event as it is appended. The run's guardrails and hooks hear
        # events from the run's bus (openintent._bus), not from here.
        self.watchers: list[Callable[[Event], None]] = []
        if _debug_enabled(self.logger):
            self.watchers.append(self._trace)
        self.watchers.extend(capture.append for capture in event_captures.get())
        self.decisions: list[Decision] = []  # derived from decision_recorded events

    def append(self, type: str, intent_id: str | None = None, data: Any = None) -> None:
        """Append an event, apply it to the projection, and tell watchers and subscribers."""
        events = self.events
        event: RawEvent = (type, self._now(), intent_id, data)
        events.append(event)
        handler = self._apply.get(type)
        if handler is not None:
            handler(self.records, event)
        if type == EventType.COST_RECORDED:
            self.total_cost += (data or _NO_DATA)["usd"]
        elif type == EventType.DECISION:
            self.decisions.append(
                Decision.from_event(public_event(event, len(events) - 1, self.source))
            )
        if self.watchers or self.subscribers:
            self._tell(public_event(event, len(events) - 1, self.source))

    def append_batch(self, rows: Sequence[tuple[str, str | None, Any]]) -> None:
        """Append ``(type, intent_id, data)`` rows as one batch: the backend takes all of them
        or none; then each is applied and told, in order."""
        now = self._now()
        events = self.events
        start = len(events)
        events.extend([(type, now, intent_id, data) for type, intent_id, data in rows])
        for seq in range(start, len(events)):
            self._applied(events[seq], seq)

    def _applied(self, event: RawEvent, seq: int) -> None:
        """Project an event just appended, then tell watchers and subscribers."""
        self._project(event, seq)
        if self.watchers or self.subscribers:
            self._tell(public_event(event, seq, self.source))

    def _project(self, event: RawEvent, seq: int) -> None:
        """Apply an event to the records, the spend and the decisions (``append`` does the
        same inline: it is the hot path)."""
        type, _time, _intent_id, data = event
        handler = self._apply.get(type)
        if handler is not None:
            handler(self.records, event)
        if type == EventType.COST_RECORDED:
            self.total_cost += (data or _NO_DATA)["usd"]
        elif type == EventType.DECISION:
            self.decisions.append(Decision.from_event(public_event(event, seq, self.source)))

    def _publisher(self, backend: EventBackend) -> Callable[[int, int], None]:
        """What a durable log calls once events ``start:end`` are committed: send them to
        the backend's subscribers (``rt.events()``)."""

        def published(start: int, end: int) -> None:
            subscribers = backend.subscribers
            if not subscribers:
                return
            events, source = self.events, self.source
            for seq in range(start, end):
                event = public_event(events[seq], seq, source)
                for stream in subscribers:
                    try:
                        stream.send_nowait(event)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass

        return published

    def replay(self) -> None:
        """Project the events the log held when this store was made (a resumed run's
        history): records, spend and decisions, as they were when each was appended; nobody
        is told (they were, when it happened)."""
        for seq, event in enumerate(self.events):
            self._project(event, seq)

    def _trace(self, event: Event) -> None:
        self.logger.debug(event.type, intent_id=event.intent_id, seq=event.seq)

    def _tell(self, event: Event) -> None:
        for watcher in self.watchers:
            watcher(event)
        for stream in self.subscribers:
            try:
                stream.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # a subscriber that went away just stops receiving


def _debug_enabled(log: Any) -> bool:
    """A debug line per event only when the application configured structlog to want them.

    Unconfigured structlog prints everything; a library must not flood its users' output,
    and a log line per event costs more than the scheduling itself.
    """
    if not logging_configured():
        return False
    is_enabled_for = getattr(log, "is_enabled_for", None)
    return bool(is_enabled_for(logging.DEBUG)) if callable(is_enabled_for) else False


def is_valid_cost(usd: object) -> bool:
    """A finite, non-negative number."""
    if isinstance(usd, bool) or not isinstance(usd, int | float):
        return False
    return usd >= 0 and math.isfinite(usd)
