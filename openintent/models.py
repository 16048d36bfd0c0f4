"""Records of the runtime: statuses, events, retry policy, intents as handlers see them, results.

Events are plain tuples (cheap to create by the hundred thousand); results are frozen attrs
classes built from the event log.
"""

from __future__ import annotations

import copy
import enum
import math
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

import attrs

from ._events import PACKED_FIELDS as PACKED_FIELDS
from ._events import Event as Event
from ._events import EventLog as EventLog
from ._events import EventType as EventType
from ._events import public_event as public_event
from .errors import (
    IntentFailedError,
    RunCancelledError,
    RunFailedError,
    RunHaltedError,
    SpecError,
)

__all__ = [
    "Decision",
    "Event",
    "EventLog",
    "EventType",
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


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
        raise SpecError(f"RetryPolicy.{attribute.name} must be a finite number >= 0, got {value!r}")


def _at_least_one(_instance: object, _attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"RetryPolicy.max_attempts must be an int >= 1, got {value!r}")


def _agent_ids(value: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@attrs.frozen
class RetryPolicy:
    """How an intent retries a failed attempt.

    Each agent in ``[assignee, *fallback]`` gets up to ``max_attempts`` attempts, in that
    order. Before retry number ``n`` (0-based, counted over the whole intent) the runtime waits
    ``min(max_delay, initial_delay * multiplier**n)`` on its clock; with ``jitter`` the wait is
    drawn uniformly from the upper half of that, using the runtime's seeded random generator.

    >>> RetryPolicy(max_attempts=3, initial_delay=0.5).delay(1, random.Random(0), jitter=False)
    1.0
    """

    max_attempts: int = attrs.field(default=3, validator=_at_least_one)
    initial_delay: float = attrs.field(default=1.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=_positive)
    max_delay: float = attrs.field(default=60.0, validator=_positive)
    jitter: bool = True
    fallback: tuple[str, ...] = attrs.field(default=(), converter=_agent_ids)

    @classmethod
    def coerce(cls, value: RetryPolicy | Mapping[str, Any] | None) -> RetryPolicy:
        """Accept a policy, a dict of its fields, or ``None`` (one attempt, no retry)."""
        if value is None:
            return NO_RETRY
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {field.name for field in attrs.fields(cls)}
            if unknown:
                raise SpecError(
                    f"unknown RetryPolicy field(s) {sorted(unknown)}; valid fields are "
                    "max_attempts, initial_delay, multiplier, max_delay, jitter, fallback"
                )
            return cls(**value)
        raise SpecError(f"retry must be a RetryPolicy, a dict or None, got {type(value).__name__}")

    def delay(self, retry_number: int, rng: random.Random, *, jitter: bool | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier**retry_number)
        if self.jitter if jitter is None else jitter:
            return rng.uniform(base / 2, base)
        return float(base)

    def agent_for(self, attempt: int, assignee: str) -> str | None:
        """The agent that makes attempt ``attempt`` (1-based), or ``None`` when none is left."""
        chain = (assignee, *self.fallback)
        index = (attempt - 1) // self.max_attempts
        return chain[index] if index < len(chain) else None


NO_RETRY = RetryPolicy(max_attempts=1, initial_delay=0.0, jitter=False)


class Intent:
    """An intent as a handler sees it during one attempt.

    ``state`` is a copy the handler may read (write through ``patch_state`` or by returning a
    dict); ``inputs`` maps each dependency's title to its final state (read-only).
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
        state: dict[str, Any],
        version: int,
        assigned_to: str | None,
        depends_on: tuple[str, ...],
        constraints: Any,
        portfolio_id: str,
        attempt: int,
        inputs: Mapping[str, Mapping[str, Any]],
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


def to_plain(value: Any) -> Any:
    """``value`` with every mapping as a dict and every list or tuple as a list (read-only
    views the library hands out included), so it is JSON-serialisable when its leaves are."""
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return [to_plain(item) for item in value]
    return value


def plain_copy(value: Any) -> Any:
    """A deep copy of :func:`to_plain` ``(value)``, for records that must never change."""
    return copy.deepcopy(to_plain(value))


def _read_only_copy(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(plain_copy(value))


class Response(dict[str, Any]):
    """One assignee's answer to a multi-agent intent: a dict of what it returned, plus
    ``agent_id`` and ``version`` (the intent's state version it answered against).

    Handed to ``@on_quorum`` and ``@on_conflict``; returning one as the result writes just the
    answer into the intent's state.
    """

    __slots__ = ("agent_id", "version")

    def __init__(self, answer: Mapping[str, Any] | None, agent_id: str, version: int) -> None:
        super().__init__(answer or {})
        self.agent_id = agent_id
        self.version = version

    def __repr__(self) -> str:
        return f"Response({dict(self)!r}, agent_id={self.agent_id!r}, version={self.version})"


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
    data: Mapping[str, Any] = attrs.field(factory=dict, converter=_read_only_copy)

    @classmethod
    def from_event(cls, event: Event) -> Decision:
        """The decision a ``decision_recorded`` event holds."""
        data = dict(event.data or {})
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
            "data": plain_copy(self.data),
        }


@attrs.frozen
class IntentResult:
    """An intent's final record in a :class:`RunResult`, derived from the event log."""

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this record (state values must be JSON-serialisable)."""
        return {
            "id": self.id,
            "title": self.title,
            "status": str(self.status),
            "state": dict(self.state),
            "version": self.version,
            "assigned_to": self.assigned_to,
            "attempts": self.attempts,
            "depends_on": list(self.depends_on),
            "error": self.error,
            "error_type": self.error_type,
            "cost_usd": self.cost_usd,
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
