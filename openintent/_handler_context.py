"""What a handler reaches while a run is going: the methods behind ``self.patch_state``,
``self.record_cost``, ``self.effect``, ``self.delegate``, ``self.record_decision``,
``self.add_intent`` and ``self.execute`` (see :mod:`openintent._context`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from ._agent_lease import AgentLeases
from ._bus import EventBus
from ._clock import Clock
from ._coordination import RUNTIME, CoordinatorSession
from ._effects import Effects
from ._event_types import check_recorded_event
from ._json_data import json_data
from ._notify import Notifications
from ._store import IntentRecord, is_valid_cost
from .errors import CostError, DataError, OpenIntentError, StateConflictError
from .models import Decision, EventType, Intent, RunResult

if TYPE_CHECKING:
    from ._specs import IntentSpec, PortfolioSpec

__all__ = ["HandlerContext"]


class HandlerContext:
    """The run context of one run (implements ``openintent._context.RunContext``)."""

    def __init__(
        self,
        bus: EventBus,
        clock: Clock,
        coordination: CoordinatorSession,
        hooks: Notifications,
        leases: AgentLeases | None = None,
    ) -> None:
        self._store = bus.store
        self._bus = bus
        self._clock = clock
        self._coordination = coordination
        self._hooks = hooks
        self._effects: Effects | None = None  # made at the run's first effect
        self.leases = leases  # the agent leases (RetryPolicy(lease_seconds=...)), if wired

    @property
    def clock(self) -> Clock:
        """The run's clock (``openintent.sleep`` and simulated agents wait on it)."""
        return self._clock

    @property
    def bus(self) -> EventBus:
        """The run's event bus (a remote agent logs what its worker did through it)."""
        return self._bus

    @property
    def portfolio_id(self) -> str:
        """The id of the running portfolio."""
        return self._store.portfolio_id

    def _record_of(self, intent_id: str) -> IntentRecord:
        """The record of an intent of this run, or an error saying it is not one."""
        record = self._store.records.get(intent_id)
        if record is None:
            raise OpenIntentError(f"intent {intent_id!r} is not part of this run")
        return record

    async def patch_state(
        self, intent: Intent, patch: Mapping[str, Any], expected_version: int | None
    ) -> int:
        """Merge ``patch`` into an intent's state; a stale version goes to ``@on_conflict``."""
        record = self._record_of(intent.id)
        if not isinstance(patch, Mapping):
            raise DataError(f"patch_state takes a dict of changes, got {type(patch).__name__}")
        # A checked copy: the caller may go on changing its dict; the log must not change.
        patch = json_data(patch, f"patch_state of intent {record.title!r}")
        if record.status.is_terminal:
            raise OpenIntentError(
                f"intent {record.title!r} is {record.status}; its state is final"
            )
        if expected_version is not None and expected_version != record.version:
            winner = await self._coordination.resolve_patch_conflict(
                intent, patch, expected_version
            )
            if winner is not None:  # the coordinator's @on_conflict chose the state to write
                return await self.patch_state(intent, winner, None)
            raise StateConflictError(
                f"intent {record.title!r} is at version {record.version}, not the expected "
                f"{expected_version}; re-read its state and try again",
                intent_id=intent.id,
                expected=expected_version,
                actual=record.version,
            )
        old_state = record.state
        if self.leases is not None:
            self.leases.renew(intent.id)  # progress shows the agent is alive
        self._bus.emit(EventType.STATE_PATCHED, intent.id,
                       {"patch": patch, "by": intent.assigned_to})
        intent.state = record.state
        intent.version = record.version
        if self._hooks.state_watched:
            self._hooks.state_changed(record, old_state, record.state, patch)
        return record.version

    async def record_cost(
        self, agent_id: str, intent: Intent, usd: float, details: Mapping[str, Any]
    ) -> None:
        """Add spend to the run's ledger (a ``cost_recorded`` event)."""
        # A handler cancelled by a halt records nothing more (its cancellation lands here).
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not is_valid_cost(usd):
            raise CostError(f"record_cost takes a finite amount >= 0 in USD, got {usd!r}")
        self._record_of(intent.id)
        if self.leases is not None:
            self.leases.renew(intent.id)  # progress shows the agent is alive
        data = {"usd": float(usd), "agent": agent_id,
                **json_data(details, "record_cost details")}
        self._bus.emit(EventType.COST_RECORDED, intent.id, data)

    async def renew_lease(self, intent: Intent) -> float | None:
        """Renew the agent lease of an intent's running attempt (see :mod:`._agent_lease`)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._record_of(intent.id)
        return None if self.leases is None else self.leases.renew(intent.id)

    async def record_event(
        self, agent_id: str, intent: Intent | None, event_type: str, data: Mapping[str, Any]
    ) -> None:
        """Append an event of a declared custom type (``register_event_type``)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        where = f"record_event({event_type!r}) by {agent_id!r}"
        check_recorded_event(event_type, data, where)
        intent_id = None if intent is None else intent.id
        if intent_id is not None:
            self._record_of(intent_id)
        self._bus.emit(event_type, intent_id, {**json_data(data, where), "agent": agent_id})

    async def effect(
        self,
        intent: Intent,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        check: Callable[..., Any] | None,
    ) -> Any:
        """A named side effect of ``intent``, run once (see :mod:`openintent._effects`)."""
        effects = self._effects
        if effects is None:
            coordination = self._coordination

            def decide(intent_id: str, decision: str, rationale: str,
                       data: Mapping[str, Any]) -> Any:
                return coordination.record_decision(RUNTIME, intent_id, decision, rationale,
                                                    data)

            effects = self._effects = Effects(self._bus, self._clock, decide)
        return await effects.run(intent, name, fn, args, kwargs, check)

    async def delegate(self, coordinator_id: str, intent: Intent, to: str) -> Any:
        return await self._coordination.delegate(coordinator_id, intent, to)

    def record_decision(
        self,
        coordinator_id: str,
        intent_id: str | None,
        decision: str,
        rationale: str,
        data: Mapping[str, Any],
    ) -> Decision:
        return self._coordination.record_decision(
            coordinator_id, intent_id, decision, rationale, data
        )

    async def add_intent(self, spec: IntentSpec) -> str:
        return await self._coordination.add_intent(spec)

    async def execute_portfolio(self, spec: PortfolioSpec, coordinator_id: str) -> RunResult:
        return await self._coordination.run_subportfolio(spec, coordinator_id)
