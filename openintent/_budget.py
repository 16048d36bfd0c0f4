"""The budget guardrail: spend is summed per run, and the estimates of running attempts are
reserved against the limit so parallel work cannot dispatch past it.

A reservation is an attempt's ``constraints["estimated_cost_usd"]`` less what that attempt has
recorded so far (never below 0), held from its dispatch to its end (success, failure, cancel,
timeout); every attempt, retries too, takes one. An attempt whose estimate does not fit beside
the spend and the reservations held waits, first come first in, without a concurrency slot,
until a running attempt ends; one that can never fit (the spend plus its estimate is past the
limit, and spend only grows) halts the run.

A resumed run's spend carries over (it is the run's ``total_cost``, all of its log), and a
warning already given is not given twice; resumed with a budget it has already spent past,
it halts at its first dispatch.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel

from ._guardrail_core import Breach, DispatchContext, Guardrail, GuardrailRun, number_field
from ._json_data import is_finite_number
from .errors import GuardrailError
from .models import Event, EventType

__all__ = ["BudgetGuardrail"]

# Sums of floats (0.1 + 0.2) must not turn an exact fit into a wait: a billionth of a dollar.
_SLACK = 1e-9


class _Reservation:
    """One attempt's claim on the budget: waits to be admitted, then holds until released.

    An async context manager the dispatch enters before it takes any concurrency slot (see
    ``DispatchContext.reservations``).
    """

    __slots__ = ("budget", "intent_id", "title", "estimate", "recorded", "admitted", "_woken")

    def __init__(self, budget: BudgetGuardrail, intent_id: str, title: str,
                 estimate: float) -> None:
        self.budget = budget
        self.intent_id = intent_id
        self.title = title
        self.estimate = estimate
        self.recorded = 0.0  # what this attempt reported while it held the reservation
        self.admitted = False
        self._woken = anyio.Event()

    @property
    def held(self) -> float:
        """What this reservation holds of the budget now."""
        return max(0.0, self.estimate - self.recorded)

    async def __aenter__(self) -> _Reservation:
        await self.budget._admit(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.budget._release(self)

    def __repr__(self) -> str:
        state = "held" if self.admitted else "waiting"
        return f"<reservation {self.title!r} ${self.held:.2f} {state}>"


class BudgetGuardrail(Guardrail):
    """``{"type": "budget", "max_cost_usd": 5.0, "warn_at": 0.8}``.

    Spend reported with ``record_cost`` is summed per run. Crossing ``warn_at`` (a fraction of
    the budget) logs a ``budget_warning`` event; spend past ``max_cost_usd`` halts the run.

    Estimates are reserved: every attempt of an intent with ``constraints["estimated_cost_usd"]``
    reserves that estimate, less what the attempt has already recorded, from its dispatch to
    its end. An attempt whose estimate does not fit beside the spend and the reservations of
    running attempts waits (it is not dispatched and holds no ``max_concurrency`` slot) until
    one ends; waiting attempts are admitted in the order they started waiting. One that can
    never fit, its estimate past what is left of the budget, halts the run before it is
    dispatched. So nothing is dispatched past the limit on estimates.
    """

    type = "budget"

    def __init__(self, max_cost_usd: float, warn_at: float | None = None) -> None:
        self.max_cost_usd = number_field("max_cost_usd", max_cost_usd)
        if warn_at is not None:
            warn_at = number_field("warn_at", warn_at, strict=True)
            if warn_at > 1:
                raise GuardrailError(f"warn_at is a fraction in (0, 1], got {warn_at}")
        self.warn_at = warn_at
        self._run: GuardrailRun | None = None
        self._warned = False
        self._held: dict[str, _Reservation] = {}  # by intent id: one attempt at a time each
        self._waiting: deque[_Reservation] = deque()

    def bind(self, run: GuardrailRun) -> BudgetGuardrail:
        fresh = copy.copy(self)  # a copy keeps a subclass's overrides
        fresh._run = run
        fresh._warned = False
        fresh._held = {}
        fresh._waiting = deque()
        return fresh

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "max_cost_usd": self.max_cost_usd}
        if self.warn_at is not None:
            data["warn_at"] = self.warn_at
        return data

    @property
    def reserved(self) -> float:
        """The budget held by running attempts' estimates, in USD."""
        return math.fsum(reservation.held for reservation in self._held.values())

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        assert self._run is not None
        spent = self._run.total_cost
        if spent > self.max_cost_usd + _SLACK:
            # Only a resumed run gets here (a live one halted when it went over): its spend
            # carried over, and this budget is no larger than it.
            self._run.halt(Breach(
                "budget", f"spent ${spent:.2f} of a ${self.max_cost_usd:.2f} budget",
                limit=self.max_cost_usd, observed=spent, intent_id=ctx.intent_id))
            await anyio.lowlevel.checkpoint_if_cancelled()
        estimate = _estimate(ctx)
        if estimate > 0:
            ctx.reservations.append(_Reservation(self, ctx.intent_id, ctx.title, estimate))

    # ------------------------------------------------------------------ reservations

    def _fits(self, reservation: _Reservation) -> bool:
        assert self._run is not None
        needed = self._run.total_cost + self.reserved + reservation.estimate
        return needed <= self.max_cost_usd + _SLACK

    def _never_fits(self, reservation: _Reservation) -> bool:
        assert self._run is not None
        return self._run.total_cost + reservation.estimate > self.max_cost_usd + _SLACK

    async def _admit(self, reservation: _Reservation) -> None:
        """Hold ``reservation`` once it fits (first come, first in), or halt if it never can."""
        if not self._never_fits(reservation):
            if not self._waiting and self._fits(reservation):
                self._hold(reservation)
                return
            self._waiting.append(reservation)
            try:
                await reservation._woken.wait()
            except BaseException:
                # Cancelled (a halt, a cancelled run): give back what was held, or leave the
                # line; either way the next in line may fit now.
                if reservation.admitted:
                    self._release(reservation)
                else:
                    if reservation in self._waiting:
                        self._waiting.remove(reservation)
                    self._admit_waiting()
                raise
            if reservation.admitted:
                return
        # It can never fit: spend only grows. Halting here, in the waiting attempt's own task,
        # lets the attempt whose end woke it finish first (its work is paid for).
        assert self._run is not None
        spent = self._run.total_cost
        estimate = reservation.estimate
        self._run.halt(Breach(
            "budget",
            f"intent {reservation.title!r} is estimated at ${estimate:.2f}, which would take "
            f"the spend of ${spent:.2f} past the budget of ${self.max_cost_usd:.2f}",
            limit=self.max_cost_usd, observed=spent + estimate, intent_id=reservation.intent_id,
        ))
        await anyio.lowlevel.checkpoint_if_cancelled()  # the halt cancels this attempt
        # (Not inside the run's work scope? The dispatch sees the halt and stops.)

    def _hold(self, reservation: _Reservation) -> None:
        reservation.admitted = True
        self._held[reservation.intent_id] = reservation
        reservation._woken.set()

    def _release(self, reservation: _Reservation) -> None:
        if self._held.get(reservation.intent_id) is reservation:
            del self._held[reservation.intent_id]
            self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Admit waiting attempts in order while they fit; wake one that never can (it halts
        the run)."""
        waiting = self._waiting
        while waiting:
            if self._never_fits(waiting[0]):
                waiting.popleft()._woken.set()
                return
            if not self._fits(waiting[0]):
                return
            self._hold(waiting.popleft())

    # ------------------------------------------------------------------ spend

    def on_event(self, event: Event) -> None:
        if self._run is None:
            return
        if self._run.replaying:
            # A resumed run's history: the spend is the run's (``total_cost``); a warning
            # this budget gave already is not given twice.
            data = event.data or {}
            if event.type == EventType.BUDGET_WARNING and (
                    data.get("max_cost_usd") == self.max_cost_usd
                    and data.get("warn_at") == self.warn_at):
                self._warned = True
            return
        if event.type != EventType.COST_RECORDED:
            return
        usd = float((event.data or {}).get("usd", 0.0))
        holder = self._held.get(event.intent_id) if event.intent_id else None
        if holder is not None:
            holder.recorded += usd
        spent = self._run.total_cost
        warn_from = None if self.warn_at is None else self.warn_at * self.max_cost_usd
        if warn_from is not None and not self._warned and spent >= warn_from:
            self._warned = True
            self._run.emit(EventType.BUDGET_WARNING, event.intent_id, {
                "spent_usd": spent, "max_cost_usd": self.max_cost_usd, "warn_at": self.warn_at})
        if spent > self.max_cost_usd:
            self._run.halt(Breach(
                "budget",
                f"spent ${spent:.2f} of a ${self.max_cost_usd:.2f} budget",
                limit=self.max_cost_usd, observed=spent, intent_id=event.intent_id,
            ))


def _estimate(ctx: DispatchContext) -> float:
    constraints = ctx.constraints if isinstance(ctx.constraints, Mapping) else {}
    estimate: Any = constraints.get("estimated_cost_usd")
    if estimate is None:
        return 0.0
    if not is_finite_number(estimate) or estimate < 0:
        raise GuardrailError(
            f"intent {ctx.title!r}: constraints['estimated_cost_usd'] must be a number of USD "
            f">= 0, got {estimate!r}; fix the intent's constraints"
        )
    return float(estimate)
