"""The ports of a run: what each collaborator of the scheduler may use of it, and no more.

The scheduler (:class:`openintent._scheduler.Run`) implements each of these but
:class:`RuntimePort`, which the :class:`~openintent.Runtime` does; the collaborators
(:mod:`._attempt`, :mod:`._coordination`, :mod:`._guarding`, :mod:`._notify`,
:mod:`._workers`) import only this module, never the scheduler, so no import goes up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._bus import EventBus
from ._clock import Clock
from ._dispatch import BoundAgent
from ._guardrail_core import Breach
from ._nodes import Node
from ._plan import IntentPlan, Planner
from ._registry import HookKind
from ._store import EventStore
from ._views import Views
from .models import Event, Intent, RunResult

if TYPE_CHECKING:
    from ._specs import PortfolioSpec

__all__ = [
    "CoordinatedRun",
    "GuardedRun",
    "NotifiedRun",
    "Outcomes",
    "RuntimePort",
    "Stoppable",
]


class Stoppable(Protocol):
    """A run that may have been halted (a sub-portfolio's parent)."""

    @property
    def portfolio_id(self) -> str:
        """The run's id."""
        ...

    @property
    def stopped(self) -> bool:
        """Halted, or inside a run that was halted."""
        ...


class Outcomes(Protocol):
    """Where the attempts at an intent report how it ended (:mod:`._attempt`)."""

    @property
    def breach(self) -> Breach | None:
        """Why a guardrail halted the run (``None``: it was not halted)."""
        ...

    def complete(self, node: Node, intent: Intent, result: dict[str, Any] | None) -> None:
        """The intent completed with ``result``."""
        ...

    def fail(self, node: Node, attempts: int, error: Exception) -> None:
        """The intent failed for good after ``attempts`` attempts."""
        ...


class NotifiedRun(Protocol):
    """What the lifecycle notifications use of a run (:mod:`._notify`)."""

    @property
    def store(self) -> EventStore:
        """The run's log and projection, to read."""
        ...

    @property
    def bus(self) -> EventBus:
        """Where the run's events are emitted."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def views(self) -> Views: ...


class GuardedRun(NotifiedRun, Protocol):
    """What the guardrail chain uses of a run (:mod:`._guarding`), beyond notifying."""

    def halt(self, breach: Breach) -> None:
        """Ask the scheduler to stop the run (it records why, and cancels running work)."""
        ...

    def record_decision(
        self, intent_id: str | None, decision: str, rationale: str, data: Mapping[str, Any]
    ) -> Any:
        """Record a decision on the coordinator's behalf."""
        ...

    def notify_coordinator(self, kind: HookKind, *args: Any) -> None: ...

    def start_background(self, job: Callable[[], Awaitable[Any]]) -> None: ...


class CoordinatedRun(NotifiedRun, Protocol):
    """What the coordinator's session uses of a run (:mod:`._coordination`)."""

    @property
    def portfolio_id(self) -> str:
        """The run's id."""
        ...

    @property
    def name(self) -> str:
        """The portfolio's name."""
        ...

    @property
    def coordinator(self) -> BoundAgent | None: ...

    @property
    def breach(self) -> Breach | None: ...

    @property
    def accepting(self) -> bool:
        """Whether intents may still be added (the run has neither settled nor halted)."""
        ...

    @property
    def stopped(self) -> bool: ...

    def node(self, intent_id: str) -> Node: ...

    def titles(self) -> Mapping[str, str]:
        """The intents' ids by title."""
        ...

    async def call_agent(self, agent: BoundAgent, intent: Intent) -> dict[str, Any] | None: ...

    def learn_agent(self, agent: BoundAgent) -> None: ...

    def add_intent(self, planned: IntentPlan) -> str: ...


class RuntimePort(Protocol):
    """What a run needs from the runtime that started it."""

    @property
    def planner(self) -> Planner: ...

    async def run_nested(
        self,
        spec: PortfolioSpec,
        coordinator: BoundAgent | None,
        on_event: Callable[[Event], None],
        parent: Stoppable,
    ) -> RunResult: ...
