"""The guardrail chain of one run, and the port guardrails see the run through
(:class:`~openintent.guardrails.GuardrailRun`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from anyio.abc import TaskGroup

from ._event_types import is_event_type, unknown_event_type
from ._json_data import json_data
from ._nodes import Node
from ._ports import GuardedRun
from ._registry import HookKind
from .errors import ApprovalError, OpenIntentError
from .guardrails import ApprovalGuardrail, ApprovalRequest, Breach, DispatchContext, Guardrail
from .models import Event, EventType, Intent, public_event

__all__ = ["GuardrailChain", "cancelled_reason", "is_denied", "logged_run_time"]

_HOOKS = {
    "on_approval_granted": HookKind.APPROVAL_GRANTED,
    "on_approval_denied": HookKind.APPROVAL_DENIED,
    "on_guardrail_breach": HookKind.GUARDRAIL_BREACH,
}


_APPROVAL_STATUSES = (
    EventType.APPROVAL_REQUESTED, EventType.APPROVAL_GRANTED, EventType.APPROVAL_DENIED
)


class GuardrailChain:
    """The guardrails bound to one run: each attempt goes through them, outermost first.

    It is also what each guardrail sees of the run (``GuardrailRun``): a guardrail that
    wants the run stopped asks the scheduler through :meth:`halt`.
    """

    def __init__(self, run: GuardedRun, templates: list[Guardrail]) -> None:
        self.run = run
        self._templates = templates
        self.chain: list[Guardrail] = []
        self._tg: TaskGroup | None = None
        #: True while the guardrails of a resumed run hear the events logged before it.
        self.replaying = False
        self._elapsed_before: float | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self, tg: TaskGroup) -> None:
        """Bind every guardrail to the run; timers start in ``tg`` (the run's own group)."""
        self._tg = tg
        self.chain = [template.bind(self) for template in self._templates]
        if any(type(guardrail).on_event is not Guardrail.on_event for guardrail in self.chain):
            # Guardrails see every event of the run, those logged before they were bound too;
            # a resumed run's history first, as a replay (see replaying).
            store = self.run.store
            if store.source.since:
                self.replaying = True
                try:
                    for seq in range(store.source.since):
                        self._on_event(public_event(store.events[seq], seq, store.source))
                finally:
                    self.replaying = False
            self.run.bus.observe(self._on_event, from_start=True)

    def _on_event(self, event: Event) -> None:
        for guardrail in self.chain:
            guardrail.on_event(event)

    async def dispatch(
        self, ctx: DispatchContext, innermost: Callable[[DispatchContext], Awaitable[Any]]
    ) -> Any:
        """Run one attempt through the chain, outermost guardrail first."""
        call_next = innermost
        for guardrail in reversed(self.chain):
            call_next = _link(guardrail, call_next)
        return await call_next(ctx)

    def context(self, node: Node, agents: tuple[str, ...], attempt: int) -> DispatchContext:
        """The context of one attempt of ``node``."""
        spec = node.spec
        return DispatchContext(self, node.id, spec.title, spec.key, spec.tags, spec.constraints,
                               agents, attempt)

    # ------------------------------------------------------------------ GuardrailRun

    @property
    def clock(self) -> Any:
        return self.run.clock

    @property
    def total_cost(self) -> float:
        return self.run.store.total_cost

    @property
    def portfolio_id(self) -> str:
        return self.run.store.portfolio_id

    @property
    def elapsed_before(self) -> float:
        if self._elapsed_before is None:
            store = self.run.store
            self._elapsed_before = logged_run_time(store.events, store.source.since)
        return self._elapsed_before

    def emit(self, type: str, intent_id: str | None, data: Mapping[str, Any]) -> None:
        if self.replaying:
            return  # what a guardrail did then is in the log already
        # Its own (declared) types only: a forged lifecycle event would corrupt the run.
        where = f"a guardrail's emit({type!r})"
        if type in EventType.ALL and type != EventType.BUDGET_WARNING:
            raise OpenIntentError(f"{where}: the runtime records that built-in event itself; "
                                  "declare a type of your own with register_event_type")
        if not is_event_type(type):
            raise OpenIntentError(unknown_event_type(type, where))
        self.run.bus.emit(type, intent_id, json_data(data, f"a guardrail's {type} event"))

    def set_status(self, intent_id: str, type: str, data: Mapping[str, Any]) -> None:
        if self.replaying:
            return
        if type not in _APPROVAL_STATUSES:
            raise OpenIntentError(f"a guardrail's set_status({type!r}): a guardrail changes an "
                                  f"intent's status only to {', '.join(_APPROVAL_STATUSES)}")
        self.run.bus.emit(type, intent_id, json_data(data, f"a guardrail's {type} event"))

    def halt(self, breach: Breach) -> None:
        if not self.replaying:
            self.run.halt(breach)

    def record_decision(
        self, intent_id: str | None, decision: str, rationale: str, data: Mapping[str, Any]
    ) -> Any:
        if self.replaying:
            return None
        return self.run.record_decision(intent_id, decision, rationale, data)

    def notify_coordinator(self, hook: str, *args: Any) -> None:
        if not self.replaying:
            self.run.notify_coordinator(_HOOKS[hook], *args)

    def start_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        assert self._tg is not None, "start_timer is for bind(), while the run starts"
        clock = self.run.clock

        async def timer() -> None:
            await clock.sleep(seconds)
            callback()

        self.run.start_background(timer)

    def view(self, intent_id: str) -> Intent:
        return self.run.views.now(intent_id)

    # ------------------------------------------------------------------ approvals

    @property
    def asks_approval(self) -> bool:
        """Whether an approval guardrail is among the run's (bound or not yet)."""
        return any(isinstance(template, ApprovalGuardrail) for template in self._templates)

    def approvals(self) -> list[ApprovalGuardrail]:
        return [guardrail for guardrail in self.chain if isinstance(guardrail, ApprovalGuardrail)]

    def pending_approvals(self) -> list[ApprovalRequest]:
        return [request for guardrail in self.approvals() for request in guardrail.pending()]

    def decide(self, intent_id: str, approve: bool, by: str, note: str) -> ApprovalRequest | None:
        """Decide the request of ``intent_id`` if one of this run's guardrails holds it."""
        holders = [guardrail for guardrail in self.approvals() if intent_id in guardrail.requests]
        # Several approval guardrails may ask about one intent: decide the one still waiting.
        pending = [g for g in holders if g.requests[intent_id].decision is None]
        for guardrail in pending or holders:
            return guardrail.decide(intent_id, approve, by=by, note=note)
        return None


def logged_run_time(events: Sequence[tuple[Any, ...]], end: int) -> float:
    """How long a run ran in the stretches its first ``end`` events cover, on its clocks:
    from each stretch's first event (``run_started``, ``run_resumed``) to its last. The time
    between stretches (the run was stopped, or its process dead) is not counted."""
    total = 0.0
    first = 0
    for seq in range(1, end + 1):
        if seq == end or events[seq][0] == EventType.RUN_RESUMED:
            total += events[seq - 1][1] - events[first][1]
            first = seq
    return total


def _link(
    guardrail: Guardrail, call_next: Callable[[DispatchContext], Awaitable[Any]]
) -> Callable[[DispatchContext], Awaitable[Any]]:
    async def link(ctx: DispatchContext) -> Any:
        return await guardrail(ctx, call_next)

    return link


def is_denied(exc: BaseException) -> bool:
    """A denied approval: the intent fails without having been dispatched."""
    return isinstance(exc, ApprovalError) and exc.denied


def cancelled_reason(breach: Breach) -> dict[str, Any]:
    """The data of a ``cancelled`` event for work a halt stopped."""
    return {"reason": f"halted by the {breach.guardrail} guardrail: {breach.reason}"}

