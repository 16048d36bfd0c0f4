"""Records of the runtime: statuses, events, retry policy, intents as handlers see them, results.

Events are plain tuples (cheap to create by the hundred thousand); results are frozen attrs
classes built from the event log.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

import attrs

from ._data import EMPTY
from ._data import FrozenDict as FrozenDict
from ._data import FrozenList as FrozenList
from ._data import to_plain as to_plain
from ._effect_records import EffectRecord as EffectRecord
from ._events import PACKED_FIELDS as PACKED_FIELDS
from ._events import Event as Event
from ._events import EventLog as EventLog
from ._events import EventType as EventType
from ._events import public_event as public_event
from ._json_data import json_data
from ._retrying import NO_RETRY as NO_RETRY
from ._retrying import RetryPolicy as RetryPolicy
from .errors import (
    IntentFailedError,
    RunCancelledError,
    RunFailedError,
    RunHaltedError,
)

__all__ = [
    "Decision",
    "EffectRecord",
    "Event",
    "EventLog",
    "EventType",
    "FrozenDict",
    "FrozenList",
    "Intent",
    "IntentResult",
    "IntentStatus",
    "Portfolio",
    "Response",
    "RetryPolicy",
    "RunResult",
    "RunStatus",
]


class IntentStatus(enum.StrEnum):
    """Where an intent is in its life. Compares equal to its string value."""

    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_terminal(self) -> bool:
        """Completed, failed, cancelled or skipped: the intent will not change again."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {IntentStatus.COMPLETED, IntentStatus.FAILED, IntentStatus.CANCELLED, IntentStatus.SKIPPED}
)


class RunStatus(enum.StrEnum):
    """How a run of a portfolio ended (``running`` while it goes on)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    CANCELLED = "cancelled"




class Intent:
    """An intent as a handler sees it during one attempt.

    ``state`` is a read-only view of the state the attempt started from (change it through
    ``patch_state`` or by returning a dict); ``inputs`` maps each dependency's title to its
    final state and each wired input (``IntentSpec(inputs=...)``, a workflow step's
    ``inputs``) to its value, and ``constraints`` are the spec's; all are deep read-only views
    (:class:`FrozenDict`): changing them raises ``TypeError``.
    """

    __slots__ = (
        "id",
        "title",
        "description",
        "status",
        "state",
        "version",
        "assigned_to",
        "depends_on",
        "constraints",
        "portfolio_id",
        "attempt",
        "inputs",
        "tags",
        "idempotency_key",
    )

    def __init__(
        self,
        id: str,
        title: str,
        description: str,
        status: IntentStatus,
        state: Mapping[str, Any],
        version: int,
        assigned_to: str | None,
        depends_on: tuple[str, ...],
        constraints: Any,
        portfolio_id: str,
        attempt: int,
        inputs: Mapping[str, Any],
        tags: tuple[str, ...],
        idempotency_key: str,
    ) -> None:
        self.id = id
        self.title = title
        self.description = description
        self.status = status
        self.state = state
        self.version = version
        self.assigned_to = assigned_to
        self.depends_on = depends_on
        self.constraints = constraints
        self.portfolio_id = portfolio_id
        self.attempt = attempt
        self.inputs = inputs
        self.tags = tags
        self.idempotency_key = idempotency_key

    def __repr__(self) -> str:
        return (
            f"Intent(id={self.id!r}, title={self.title!r}, status={self.status.value!r}, "
            f"version={self.version}, attempt={self.attempt})"
        )


def _read_only_data(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(value, FrozenDict):
        return value  # the log's own: already checked and never changed
    return json_data(value, "decision data") if value else EMPTY  # a frozen checked copy


class Response(FrozenDict):
    """One assignee's answer to a multi-agent intent: a read-only view of what it returned
    (compares equal to the dict), plus ``agent_id`` and ``version`` (the intent's state
    version it answered against).

    Handed to ``@on_quorum`` and ``@on_conflict``; returning one as the result writes just the
    answer into the intent's state.
    """

    __slots__ = ("agent_id", "version")

    agent_id: str
    version: int

    def __new__(cls, answer: Mapping[str, Any] | None, agent_id: str, version: int) -> Self:
        self = super().__new__(cls, answer or {})  # a frozen deep copy of the answer
        self.agent_id = agent_id
        self.version = version
        return self

    def __repr__(self) -> str:
        return (f"Response({to_plain(self)!r}, agent_id={self.agent_id!r}, "
                f"version={self.version})")


@attrs.frozen
class Decision:
    """An immutable decision record, written by a coordinator or by the runtime on its behalf
    (``coordinator_id`` is then ``"runtime"``). ``time`` is on the runtime clock, ``at`` the
    same instant as a timezone-aware UTC ``datetime``."""

    id: str
    coordinator_id: str
    portfolio_id: str
    intent_id: str | None
    time: float
    at: datetime
    decision: str
    rationale: str
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_read_only_data)

    @classmethod
    def from_event(cls, event: Event) -> Decision:
        """The decision a ``decision_recorded`` event holds."""
        data = event.data or EMPTY
        return cls(
            id=data["id"],
            coordinator_id=data["coordinator_id"],
            portfolio_id=event.portfolio_id,
            intent_id=event.intent_id,
            time=event.time,
            at=event.at,
            decision=data["decision"],
            rationale=data["rationale"],
            data=data.get("data", {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the record (data values must be serialisable)."""
        return {
            "id": self.id,
            "coordinator_id": self.coordinator_id,
            "portfolio_id": self.portfolio_id,
            "intent_id": self.intent_id,
            "time": self.time,
            "at": self.at.isoformat(),
            "decision": self.decision,
            "rationale": self.rationale,
            "data": to_plain(self.data),
        }


@attrs.frozen
class IntentResult:
    """An intent's final record in a :class:`RunResult`, derived from the event log.

    ``state`` is the intent's own copy: changing it never touches the log. (The intents
    ``@on_all_complete`` sees in its :class:`Portfolio` hold read-only views instead.)
    ``effects`` are its named side effects (``self.effect``), in the order they first started.
    """

    id: str
    title: str
    status: IntentStatus
    state: Mapping[str, Any]
    version: int
    assigned_to: str | None
    attempts: int
    depends_on: tuple[str, ...]
    error: str | None = None
    error_type: str | None = None
    cost_usd: float = 0.0
    effects: tuple[EffectRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this record (state values must be JSON-serialisable)."""
        return {
            "id": self.id,
            "title": self.title,
            "status": str(self.status),
            "state": to_plain(self.state),
            "version": self.version,
            "assigned_to": self.assigned_to,
            "attempts": self.attempts,
            "depends_on": list(self.depends_on),
            "error": self.error,
            "error_type": self.error_type,
            "cost_usd": self.cost_usd,
            "effects": [effect.to_dict() for effect in self.effects],
        }


@attrs.frozen
class Portfolio:
    """The portfolio as ``@on_all_complete`` sees it: its spec's fields and its intents."""

    id: str
    name: str
    description: str
    metadata: Mapping[str, Any]
    intents: Mapping[str, IntentResult]


@attrs.frozen(eq=False)
class RunResult:
    """What ``await rt.run(spec)`` returns, whatever the outcome.

    ``error`` explains a failure that is not an intent's (the coordinator's
    ``@on_all_complete`` raised, for one).

    A failed run still returns its result with every event; :meth:`raise_for_status` raises
    the matching error for callers who prefer exceptions.
    """

    portfolio_id: str
    name: str
    status: RunStatus
    output: Any
    intents: Mapping[str, IntentResult]
    events: EventLog
    decisions: tuple[Decision, ...] = ()
    cost_usd: float = 0.0
    error: str | None = None
    breach: Any = None
    _errors: Mapping[str, BaseException] = attrs.field(factory=dict, repr=False, alias="errors")

    @property
    def cost_by_agent(self) -> dict[str, float]:
        """The reported spend per agent, from the ``cost_recorded`` events."""
        ledger: dict[str, float] = {}
        for event in self.events.of_type(EventType.COST_RECORDED):
            agent = (event.data or {}).get("agent", "")
            ledger[agent] = ledger.get(agent, 0.0) + (event.data or {})["usd"]
        return ledger

    def titles_by_status(self) -> dict[str, list[str]]:
        """Intent titles grouped by status: what ran, what was cancelled, what never started
        (``pending``)."""
        groups: dict[str, list[str]] = {}
        for title, item in self.intents.items():
            groups.setdefault(str(item.status), []).append(title)
        return groups

    @property
    def failed_intents(self) -> list[IntentResult]:
        """The intents that failed for good, in declaration order."""
        return [item for item in self.intents.values() if item.status == IntentStatus.FAILED]

    def raise_for_status(self) -> RunResult:
        """Return ``self`` if the run completed, else raise the matching error.

        ``failed`` raises :class:`RunFailedError` (its ``failures`` hold an
        :class:`IntentFailedError` per failed intent, each chained to the handler's exception);
        ``halted`` raises :class:`RunHaltedError`; ``cancelled`` :class:`RunCancelledError`.
        """
        if self.status == RunStatus.COMPLETED:
            return self
        if self.status == RunStatus.HALTED:
            raise RunHaltedError(
                f"run of {self.name!r} ({self.portfolio_id}) was halted: {self.error}",
                self.breach,
            )
        if self.status == RunStatus.CANCELLED:
            raise RunCancelledError(f"run of {self.name!r} ({self.portfolio_id}) was cancelled")
        failures = []
        for item in self.failed_intents:
            failure = IntentFailedError(
                f"intent {item.title!r} failed after {item.attempts} attempt(s): "
                f"{item.error_type}: {item.error}",
                title=item.title,
                intent_id=item.id,
            )
            failure.__cause__ = self._errors.get(item.id)
            failures.append(failure)
        reasons = "; ".join(
            f"{item.title!r} failed ({item.error_type}: {item.error})"
            for item in self.failed_intents
        )
        reason = reasons if failures else (self.error or "unknown reason")
        error = RunFailedError(f"run of {self.name!r} ({self.portfolio_id}) failed: {reason}",
                               failures)
        if failures:
            raise error from failures[0]
        raise error from self._errors.get("")

    def to_mermaid(self, kind: str = "flowchart") -> str:
        """A Mermaid picture of the run: ``"flowchart"`` (default) colours each intent by its
        final status; ``"gantt"`` is a timeline of when each attempt ran (from the events'
        ``at`` times)."""
        from . import _viz

        return _viz.result_to_mermaid(self, kind)

    def to_dot(self) -> str:
        """The flowchart of :meth:`to_mermaid` as a Graphviz DOT digraph."""
        from . import _viz

        return _viz.to_dot(_viz.graph_of_result(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole result (state values must be serialisable)."""
        return {
            "portfolio_id": self.portfolio_id,
            "name": self.name,
            "status": str(self.status),
            "output": self.output,
            "error": self.error,
            "breach": _to_dict(self.breach) if self.breach is not None else None,
            "cost_usd": self.cost_usd,
            "intents": {title: item.to_dict() for title, item in self.intents.items()},
            "decisions": [_to_dict(decision) for decision in self.decisions],
            "events": [event.to_dict() for event in self.events],
        }


def _to_dict(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value
