"""Guardrails: policies enforced by middleware around every dispatch.

Every attempt of every intent passes through one chain of guardrails, outermost first:
``Runtime(guardrails=[...])``, then the coordinator's ``@Coordinator(guardrails=[...])`` (or a
YAML ``guardrails:`` block). A guardrail is given as an object or as a dict
``{"type": "budget", "max_cost_usd": 5}``; register your own types with
:func:`register_guardrail`.

The protocol (subclass :class:`Guardrail` and override what you need)::

    class NoFridays(Guardrail):
        type = "no_fridays"

        async def before_dispatch(self, ctx):          # may wait, or raise to fail the attempt
            if ctx.run.clock.now() % 7 == 4:
                ctx.run.halt(Breach("no_fridays", "it is Friday", intent_id=ctx.intent_id))

        async def after_result(self, ctx, result):    # may check or change the result
            return result

``__call__(ctx, call_next)`` wraps the whole attempt and by default calls ``before_dispatch``,
``call_next(ctx)`` and ``after_result``; override it for full control. ``bind(run)`` is called
once per run and returns the instance that serves it (built-ins return a fresh copy, so their
counters are per run); ``on_event(event)`` sees every event of the run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs

from ._budget import BudgetGuardrail as BudgetGuardrail
from ._guardrail_core import Breach as Breach
from ._guardrail_core import CallNext as CallNext
from ._guardrail_core import DispatchContext as DispatchContext
from ._guardrail_core import Guardrail as Guardrail
from ._guardrail_core import GuardrailRun as GuardrailRun
from ._guardrail_core import build_guardrails as build_guardrails
from ._guardrail_core import names_field, number_field
from ._guardrail_core import register_guardrail as register_guardrail
from .errors import ApprovalError, GuardrailError, OutputCheckError
from .models import Event, EventType

__all__ = [
    "ApprovalGuardrail",
    "ApprovalRequest",
    "Breach",
    "BudgetGuardrail",
    "DispatchContext",
    "Guardrail",
    "GuardrailRun",
    "MaxConcurrencyGuardrail",
    "RateLimitGuardrail",
    "RequireOutputGuardrail",
    "TimeoutGuardrail",
    "build_guardrails",
    "register_guardrail",
]


# ---------------------------------------------------------------------------- timeout


class TimeoutGuardrail(Guardrail):
    """``{"type": "timeout", "max_seconds": 300}``: the whole run halts after ``max_seconds``
    on the runtime's clock, cancelling what still runs. (Per-intent limits:
    ``IntentSpec(timeout=...)``.)

    A resumed run keeps its deadline: the time it ran before counts, the time it was stopped
    (or its process dead) does not (see ``GuardrailRun.elapsed_before``)."""

    type = "timeout"

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = number_field("max_seconds", max_seconds, strict=True)

    def to_data(self) -> dict[str, Any]:
        return {"type": self.type, "max_seconds": self.max_seconds}

    def bind(self, run: GuardrailRun) -> TimeoutGuardrail:
        fresh = copy.copy(self)
        clock = run.clock
        started = clock.now()
        before = run.elapsed_before  # a resumed run's time so far

        def expire() -> None:
            # The timer may fire late (a loaded loop, a handler that blocked it): report the
            # time that actually went by, on the run's clock.
            elapsed = before + clock.now() - started
            run.halt(Breach("timeout", f"the run exceeded {self.max_seconds:g} s "
                            f"({elapsed:g} s went by)",
                            limit=self.max_seconds, observed=elapsed))

        if before >= self.max_seconds:
            expire()  # a resumed run with no time left: it stops before it dispatches
        else:
            run.start_timer(self.max_seconds - before, expire)
        return fresh


# ---------------------------------------------------------------------------- approval


@attrs.define
class ApprovalRequest:
    """An intent waiting for a human decision (see ``rt.pending_approvals()``)."""

    intent_id: str
    title: str
    portfolio_id: str
    requested_at: float
    approvers: tuple[str, ...] = ()
    decision: str | None = None  # "approved" or "denied" once decided
    decided_by: str | None = None
    note: str = ""
    _decided: anyio.Event = attrs.field(factory=anyio.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the request."""
        return {
            "intent_id": self.intent_id, "title": self.title, "portfolio_id": self.portfolio_id,
            "requested_at": self.requested_at, "approvers": list(self.approvers),
            "decision": self.decision, "decided_by": self.decided_by, "note": self.note,
        }


class ApprovalGuardrail(Guardrail):
    """``{"type": "approval", "require_for": ["deploy"], "approvers": ["alice"],
    "timeout_seconds": 3600, "on_timeout": "deny"}``.

    Intents matching ``require_for`` (by title, step key or tag, case-insensitively) wait in
    ``awaiting_approval`` until ``await rt.approve(intent_id, by=...)`` or ``rt.deny(...)``.
    ``approvers`` restricts who may decide. After ``timeout_seconds`` the request takes the
    ``on_timeout`` outcome (``"deny"`` by default). A denied intent fails without running and
    its dependents are skipped.
    """

    type = "approval"

    def __init__(
        self,
        require_for: Sequence[str],
        approvers: Sequence[str] | None = None,
        timeout_seconds: float | None = None,
        on_timeout: str = "deny",
    ) -> None:
        self.require_for = names_field("require_for", require_for)
        self.approvers = names_field("approvers", approvers) if approvers is not None else ()
        self.timeout_seconds = (
            None if timeout_seconds is None
            else number_field("timeout_seconds", timeout_seconds, strict=True)
        )
        if on_timeout not in ("deny", "approve"):
            raise GuardrailError(f'on_timeout must be "deny" or "approve", got {on_timeout!r}')
        self.on_timeout = on_timeout
        self._wanted = {name.casefold() for name in self.require_for}
        self._run: GuardrailRun | None = None
        self.requests: dict[str, ApprovalRequest] = {}
        self._timed_out: set[str] = set()  # intent ids the timeout decided

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "require_for": list(self.require_for)}
        if self.approvers:
            data["approvers"] = list(self.approvers)
        if self.timeout_seconds is not None:
            data["timeout_seconds"] = self.timeout_seconds
        if self.on_timeout != "deny":
            data["on_timeout"] = self.on_timeout
        return data

    def bind(self, run: GuardrailRun) -> ApprovalGuardrail:
        fresh = copy.copy(self)
        fresh._run = run
        fresh.requests = {}
        fresh._timed_out = set()
        return fresh

    def matches(self, ctx: DispatchContext) -> bool:
        """Whether an intent needs approval: its title, step key or a tag is listed."""
        names = {ctx.title, *ctx.tags} | ({ctx.key} if ctx.key else set())
        return any(name.casefold() in self._wanted for name in names)

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        if not self.matches(ctx):
            return
        request = self.requests.get(ctx.intent_id)
        if request is None:
            request = ApprovalRequest(ctx.intent_id, ctx.title, ctx.run.portfolio_id,
                                      ctx.run.clock.now(), self.approvers)
            self.requests[ctx.intent_id] = request
            ctx.run.set_status(ctx.intent_id, EventType.APPROVAL_REQUESTED,
                               {"approvers": list(self.approvers)})
            await self._wait(ctx, request)
        if request.decision != "approved":
            # Denied by nobody: the timeout denies with its own reason as the note.
            by = "" if ctx.intent_id in self._timed_out else f" by {request.decided_by}"
            raise ApprovalError(
                f"intent {ctx.title!r} was denied{by}"
                + (f": {request.note}" if request.note else ""),
                denied=True,
            )

    async def _wait(self, ctx: DispatchContext, request: ApprovalRequest) -> None:
        if self.timeout_seconds is None:
            await request._decided.wait()
            return
        with ctx.run.clock.timeout(self.timeout_seconds):
            await request._decided.wait()
        if request.decision is None:
            self._timed_out.add(ctx.intent_id)
            self.decide(ctx.intent_id, self.on_timeout == "approve", by="timeout",
                        note=f"no decision within {self.timeout_seconds:g} s", check=False)

    def decide(self, intent_id: str, approve: bool, *, by: str, note: str = "",
               check: bool = True) -> ApprovalRequest:
        """Approve or deny a pending request; exactly one decision per request wins."""
        request = self.requests.get(intent_id)
        if request is None or request.decision is not None:
            state = "already decided" if request is not None else "not awaiting approval"
            raise ApprovalError(f"intent {intent_id!r} is {state}; nothing changed")
        if check and self.approvers and by not in self.approvers:
            raise ApprovalError(
                f"{by!r} may not decide on {request.title!r}; approvers: "
                f"{', '.join(self.approvers)}. Nothing changed."
            )
        request.decision = "approved" if approve else "denied"
        request.decided_by = by
        request.note = note
        run = self._run
        assert run is not None
        kind = EventType.APPROVAL_GRANTED if approve else EventType.APPROVAL_DENIED
        run.set_status(intent_id, kind, {"by": by, "note": note})
        run.record_decision(intent_id, "approval_granted" if approve else "approval_denied",
                            note or f"{request.decision} by {by}", {"by": by})
        hook = "on_approval_granted" if approve else "on_approval_denied"
        run.notify_coordinator(hook, run.view(intent_id), request)
        request._decided.set()
        return request

    def pending(self) -> list[ApprovalRequest]:
        """The requests still waiting for a decision."""
        return [request for request in self.requests.values() if request.decision is None]

    def on_event(self, event: Event) -> None:
        # A resumed run: an approval granted before it stopped is not asked for again.
        # (Requests still waiting then are asked again when their intent is dispatched.)
        run = self._run
        if run is None or not run.replaying or event.intent_id is None:
            return
        if event.type == EventType.APPROVAL_REQUESTED:
            self.requests.pop(event.intent_id, None)  # asked again: the new request counts
        elif event.type == EventType.APPROVAL_GRANTED:
            data = event.data or {}
            self.requests[event.intent_id] = ApprovalRequest(
                event.intent_id, event.title or "", event.portfolio_id, event.time,
                self.approvers, "approved", data.get("by"), data.get("note", ""))


# ---------------------------------------------------------------------------- more built-ins


class RateLimitGuardrail(Guardrail):
    """``{"type": "rate_limit", "per_second": 2, "per_agent": false}``: at most
    ``per_second`` dispatches per second (per agent with ``per_agent``), on the run's clock.

    With ``per_agent``, an intent assigned to several agents uses one call of each assignee's
    own allowance, and waits until every one of them has a call free."""

    type = "rate_limit"

    def __init__(self, per_second: float, per_agent: bool = False) -> None:
        self.per_second = number_field("per_second", per_second, strict=True)
        self.per_agent = bool(per_agent)
        self._next_slot: dict[str, float] = {}

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "per_second": self.per_second}
        if self.per_agent:
            data["per_agent"] = True
        return data

    def bind(self, run: GuardrailRun) -> RateLimitGuardrail:
        fresh = copy.copy(self)
        fresh._next_slot = {}
        return fresh

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        keys = ctx.agents if self.per_agent else ("",)
        clock = ctx.run.clock
        now = clock.now()
        slot = max(now, *(self._next_slot.get(key, now) for key in keys))
        for key in keys:
            self._next_slot[key] = slot + 1.0 / self.per_second
        if slot > now:
            await clock.sleep(slot - now)


class MaxConcurrencyGuardrail(Guardrail):
    """``{"type": "max_concurrency", "limit": 4}``: at most ``limit`` attempts dispatched at
    once (waiting for approval or a rate limit holds no slot)."""

    type = "max_concurrency"

    def __init__(self, limit: int) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise GuardrailError(f"limit must be an int >= 1, got {limit!r}")
        self.limit = limit
        self._slots: anyio.Semaphore | None = None

    def to_data(self) -> dict[str, Any]:
        return {"type": self.type, "limit": self.limit}

    def bind(self, run: GuardrailRun) -> MaxConcurrencyGuardrail:
        fresh = copy.copy(self)
        fresh._slots = anyio.Semaphore(self.limit)
        return fresh

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        # The slot is taken around the dispatch itself, so an approval wait or a rate-limit
        # pause further along the chain holds none.
        assert self._slots is not None
        ctx.slots.append(self._slots)


class RequireOutputGuardrail(Guardrail):
    """``{"type": "require_output", "keys": ["summary"], "for": ["Write"]}``: an attempt whose
    result lacks a key fails (and may be retried). ``for`` limits it to intents by title, key or
    tag; without it every intent is checked."""

    type = "require_output"

    def __init__(self, keys: Sequence[str], **options: Any) -> None:
        self.keys = names_field("keys", keys)
        unknown = set(options) - {"for"}
        if unknown:
            raise GuardrailError(f"unknown field(s) {sorted(unknown)}; valid: keys, for")
        only = options.get("for")
        self.only_for = names_field("for", only) if only else ()
        self.only = {name.casefold() for name in self.only_for} if only else None

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "keys": list(self.keys)}
        if self.only_for:
            data["for"] = list(self.only_for)
        return data

    async def after_result(self, ctx: DispatchContext, result: Any) -> Any:
        if self.only is not None:
            names = {ctx.title, *ctx.tags} | ({ctx.key} if ctx.key else set())
            if not any(name.casefold() in self.only for name in names):
                return result
        missing = [key for key in self.keys if not isinstance(result, Mapping) or key not in result]
        if missing:
            raise OutputCheckError(
                f"intent {ctx.title!r} returned no {', '.join(map(repr, missing))}; "
                f"the require_output guardrail needs {list(self.keys)}"
            )
        return result


for _guardrail in (BudgetGuardrail, TimeoutGuardrail, ApprovalGuardrail, RateLimitGuardrail,
                   MaxConcurrencyGuardrail, RequireOutputGuardrail):
    register_guardrail(_guardrail.type, _guardrail)
