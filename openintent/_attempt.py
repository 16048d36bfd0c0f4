"""The attempts at one intent: guardrail chain -> coordination -> agent call, until it
completes or fails for good (retry, backoff, failover, timeout).

:meth:`Attempts.run` is the one code path for every intent. Its first branch is the common
case kept cheap: one agent with one async ``@on_assignment`` handler, no timeout, no
guardrail and no concurrency cap, whose first attempt is awaited directly; anything else (and
any failure of that first attempt) goes on in the general loop below it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel

from ._agent_lease import AgentLeases
from ._blocking import BlockingWatch, timed
from ._bus import EventBus
from ._clock import Clock
from ._coordination import RUNTIME, CoordinatorSession
from ._dispatch import BoundAgent, call_handler
from ._guarding import GuardrailChain, is_denied
from ._json_data import json_state
from ._nodes import Node
from ._notify import Notifications
from ._ports import Outcomes
from ._registry import HookKind
from ._retrying import call_error, never_retried
from ._stores import CommitFailed
from ._views import Views
from ._wiring import check_wired
from .errors import Escalate, IntentTimeoutError, LeaseExpiredError
from .guardrails import DispatchContext
from .models import EventType, Intent

__all__ = ["Attempts"]

DISPATCHED = EventType.DISPATCHED


class _NoSlot:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_SLOT = _NoSlot()


class Attempts:
    """Makes the attempts at the intents of one run and reports how each ends to the
    scheduler (its :class:`~openintent._ports.Outcomes`)."""

    def __init__(
        self,
        outcomes: Outcomes,
        bus: EventBus,
        views: Views,
        clock: Clock,
        rng: random.Random,
        coordinator: BoundAgent | None,
        fallbacks: Mapping[str, BoundAgent],
        guardrails: GuardrailChain | None,
        coordination: CoordinatorSession,
        hooks: Notifications,
        max_concurrency: int | None,
        watch: BlockingWatch | None,
    ) -> None:
        self._outcomes = outcomes
        self._bus = bus
        self._views = views
        self._clock = clock
        self._rng = rng
        self._coordinator = coordinator
        self._fallbacks = fallbacks  # grows as intents are added
        self._guardrails = guardrails
        self._coordination = coordination
        self._hooks = hooks
        # A max_concurrency cap: a limiter around dispatches only, so an intent waiting for
        # approval or in retry backoff holds no slot.
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self._watch = watch
        self._plain = guardrails is None and self._limiter is None
        self._complete = outcomes.complete
        # A durable store's log: a handler is called only once its dispatch (and so every
        # completion it depends on) is committed. None (memory://): nothing waits.
        self._journal = bus.store.journal
        #: The agent leases of intents whose retry policy has ``lease_seconds``.
        self.leases = AgentLeases(clock)

    @property
    def batches_dispatches(self) -> bool:
        """Whether first dispatches may be logged in a batch that waits for one commit
        (:meth:`dispatch_first`): a durable store, and no guardrail or cap between them."""
        return self._journal is not None and self._plain

    def dispatch_first(self, node: Node) -> bool:
        """Log the first dispatch of an intent of the common case (see :meth:`run`) without
        waiting for its commit; the caller waits for it (:meth:`committed`), then calls
        ``run(node, dispatched=True)``. ``False``: not that case, nothing logged."""
        if node.direct is None or node.attempts:
            return False
        self._bus.emit(DISPATCHED, node.id, (1, node.agents[0].id))
        return True

    async def run(self, node: Node, dispatched: bool = False) -> None:
        """Attempt an intent until it completes or fails for good (``dispatched``: its first
        dispatch is logged and committed already, see :meth:`dispatch_first`)."""
        failure: Exception | None = None
        intent: Intent | None = None
        direct = node.direct
        if direct is not None and self._plain and (dispatched or not node.attempts):
            # The common case: the first attempt awaits the agent's handler right here.
            agent = node.agents[0]
            if not dispatched:
                self._bus.emit(DISPATCHED, node.id, (1, agent.id))
                if self._journal is not None:
                    await self.committed()
            intent = self._views.of(node, 1, agent.id)
            watch = self._watch
            try:
                result = await (direct(intent) if watch is None
                                else timed(direct(intent), watch, agent.assignment, intent))
                if result is not None and (result or type(result) is not dict):
                    # copied in, so the log keeps its own (an empty dict: no-op)
                    result = json_state(result, agent.assignment_name)
            except CommitFailed:
                raise  # the journal broke (a wait in the handler: an effect's commit)
            except Exception as exc:
                failure = exc
                if type(exc) is TypeError:  # the handler may not take (intent) at all
                    error = call_error(direct, agent.assignment_name, (intent,), exc)
                    if error is not exc:
                        error.__cause__ = exc
                        failure = error
                if isinstance(failure, Escalate):
                    try:
                        result = await self._coordination.escalate(intent, failure)
                    except Exception as exc:
                        failure = exc
                    else:
                        failure = None
            if failure is None:
                self._complete(node, intent, result)
                return
        await self._until_done(node, failure)

    async def _until_done(self, node: Node, failure: Exception | None) -> None:
        spec = node.spec
        policy = spec.retry
        primary = node.agents[0]
        attempt = node.attempts
        while True:
            if failure is not None:
                next_agent = self._next_agent(node, attempt, failure, primary.id)
                if next_agent is None:
                    return
                await self._before_retry(node, attempt, failure, next_agent)
                if type(failure) is LeaseExpiredError and len(node.agents) == 1:
                    self._lease_handoff(node, policy.agent_for(attempt, primary.id), next_agent)
                failure = None
            attempt += 1
            if len(node.agents) > 1:
                agents = node.agents
                agent_id = ",".join(agent.id for agent in agents)
            else:
                # Past the policy's attempts (a resume re-dispatches an interrupted last
                # attempt): the last agent of [assignee, *fallback] goes on.
                agent_id = policy.agent_for(attempt, primary.id) or (
                    policy.fallback[-1] if policy.fallback else primary.id)
                agents = (primary if agent_id == primary.id else self._fallbacks[agent_id],)
            try:
                if self._guardrails is not None:
                    result, intent = await self._guarded(node, agents, agent_id, attempt)
                else:
                    async with self._slot():
                        await self._unless_halted()  # halted while waiting for a slot?
                        # packed data (attempt, agent): see models.PACKED_FIELDS
                        self._bus.emit(DISPATCHED, node.id, (attempt, agent_id))
                        if self._journal is not None:
                            await self.committed()
                        intent = self._views.of(node, attempt, agent_id)
                        result = await self._timed(node, agents, intent)
            except CommitFailed:
                raise  # the journal broke: a fault of the runtime, never the handler's
            except Exception as exc:
                failure = exc
                continue
            self._outcomes.complete(node, intent, result)
            return

    async def committed(self) -> None:
        """Wait until every event logged so far is committed (a durable store only)."""
        assert self._journal is not None
        await self._journal.wait_committed(len(self._bus.store.events))

    async def _unless_halted(self) -> None:
        """Stop an attempt about to be dispatched in a halted run (as cancelled)."""
        if self._outcomes.breach is not None:
            # The halt cancelled the scope every worker runs in, so this raises the backend's
            # own cancellation (never build one by hand: trio's has no public constructor).
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise RuntimeError("openintent bug: a worker of a halted run was not cancelled")

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        """A max_concurrency slot for one dispatch (a no-op without a cap)."""
        return self._limiter if self._limiter is not None else _NO_SLOT

    async def _guarded(
        self, node: Node, agents: tuple[BoundAgent, ...], agent_id: str | None, attempt: int
    ) -> tuple[dict[str, Any] | None, Intent]:
        """One attempt through the guardrail chain; the innermost link dispatches it."""
        assert self._guardrails is not None
        label = agent_id or ",".join(agent.id for agent in agents)
        views: list[Intent] = []

        async def dispatch(ctx: DispatchContext) -> dict[str, Any] | None:
            await self._unless_halted()  # a guardrail halted the run on the way in?
            async with AsyncExitStack() as slots:
                for slot in (*ctx.reservations, self._slot(), *ctx.slots):
                    await slots.enter_async_context(slot)
                await self._unless_halted()  # halted while this attempt waited for a slot?
                self._bus.emit(DISPATCHED, node.id, (attempt, label))
                if self._journal is not None:
                    await self.committed()
                intent = self._views.of(node, attempt, agent_id)
                views.append(intent)
                return await self._timed(node, agents, intent)

        ctx = self._guardrails.context(node, tuple(agent.id for agent in agents), attempt)
        result = await self._guardrails.dispatch(ctx, dispatch)
        if result is not None:  # a guardrail may have answered or changed it: copy it in
            result = json_state(result, f"the guardrail chain of intent {node.spec.title!r}")
        # A guardrail may answer without calling call_next (a cache, say): no dispatch then.
        if views:
            return result, views[-1]
        return result, self._views.of(node, node.attempts, agent_id)

    async def _timed(
        self, node: Node, agents: tuple[BoundAgent, ...], intent: Intent
    ) -> dict[str, Any] | None:
        """One attempt, within the intent's timeout if it has one."""
        if node.spec.inputs:  # a wired input its dependency lacks fails the attempt
            check_wired(node.spec, intent)
        seconds = node.spec.timeout
        lease = node.spec.retry.lease_seconds
        if seconds is None:
            if lease is not None:
                return await self.leases.hold(
                    intent, lease, lambda: self._attempt(node, agents, intent))
            return await self._attempt(node, agents, intent)
        result: dict[str, Any] | None = None
        with self._clock.timeout(seconds) as scope:
            result = await (self._attempt(node, agents, intent) if lease is None
                            else self.leases.hold(
                                intent, lease, lambda: self._attempt(node, agents, intent)))
        if scope.cancelled_caught:
            raise IntentTimeoutError(
                f"intent {intent.title!r} attempt {intent.attempt} timed out after {seconds:g} s; "
                "raise IntentSpec(timeout=...) if the work needs longer"
            )
        return result

    async def _attempt(
        self, node: Node, agents: tuple[BoundAgent, ...], intent: Intent
    ) -> dict[str, Any] | None:
        """One attempt: a multi-agent vote, the coordinator routing, or one agent's work.

        An escalation from any of them goes to the coordinator's ``@on_escalation``.
        """
        try:
            if len(agents) > 1:
                return await self._coordination.attempt_many(node, agents, intent)
            if agents[0] is self._coordinator:
                return await self._coordination.route(intent)
            return await self.call_agent(agents[0], intent)
        except Escalate as escalation:
            return await self._coordination.escalate(intent, escalation)

    async def call_agent(self, agent: BoundAgent, intent: Intent) -> dict[str, Any] | None:
        """One agent's ``@on_assignment`` work: its result as a checked copy (or ``None``)."""
        direct = agent.direct
        if direct is not None:  # the common case: one async @on_assignment handler
            watch = self._watch
            try:
                value = await (direct(intent) if watch is None
                               else timed(direct(intent), watch, agent.assignment, intent))
            except TypeError as exc:
                error = call_error(direct, agent.assignment_name, (intent,), exc)
                if error is exc:
                    raise
                raise error from exc
            return None if value is None else json_state(value, agent.assignment_name)
        merged: dict[str, Any] | None = None
        for handler in agent.handlers_of(HookKind.ASSIGNMENT):
            value = json_state(await call_handler(handler, intent, clock=self._clock),
                               handler.name)
            if value is not None:
                merged = value if merged is None else {**merged, **value}
        return merged

    # ------------------------------------------------------------------ retries

    def _next_agent(self, node: Node, attempt: int, exc: Exception, primary: str) -> str | None:
        """Record a failed attempt; return the agent of the retry, or ``None`` when the
        intent will not be retried (the scheduler fails it then)."""
        if is_denied(exc):  # refused before its dispatch: a denial is not an attempt
            attempt = node.attempts
        else:
            error = {"attempt": attempt, "error": str(exc), "error_type": type(exc).__name__}
            self._bus.emit(EventType.ATTEMPT_FAILED, node.id, error)
        # Some failures no retry can fix (an unresolved escalation, a denied approval, a
        # programming error); the policy's retry_on / never_retry_on filter the rest.
        policy = node.spec.retry
        next_agent = (
            None if never_retried(exc) or not policy.retries(exc)
            else policy.agent_for(attempt + 1, primary)
        )
        if next_agent is None:
            self._outcomes.fail(node, attempt, exc)
            return None
        this_agent = policy.agent_for(attempt, primary)
        if next_agent != this_agent and len(node.agents) == 1:
            self._coordination.record_decision(
                RUNTIME, node.id, "failover",
                f"{this_agent} gave up after {attempt} attempt(s); {next_agent} takes over",
                {"from": this_agent, "to": next_agent},
            )
        return next_agent

    def _lease_handoff(self, node: Node, from_agent: str | None, to_agent: str) -> None:
        """A fallback agent takes over from one whose lease expired: a ``handoff`` event."""
        if from_agent != to_agent:
            self._bus.emit(EventType.HANDOFF, node.id,
                           {"from": from_agent, "to": to_agent, "reason": "lease expired"})

    async def _before_retry(self, node: Node, attempt: int, exc: Exception, agent: str) -> None:
        retries_so_far = attempt - 1
        delay = node.spec.retry.delay(retries_so_far, self._rng)
        self._bus.emit(
            EventType.RETRY_SCHEDULED,
            node.id,
            {"attempt": attempt + 1, "agent": agent, "delay": delay},
        )
        failed_agent = node.assigned_to
        hooks = self._hooks
        handlers = hooks.watchers_of(HookKind.RETRY, failed_agent)
        if handlers:
            await hooks.drain()  # earlier events' hooks first: everything in log order
            intent = self._views.of(node, attempt + 1, agent)
            for handler in handlers:
                await hooks.call_safely(handler, intent, attempt + 1, exc)
        if delay > 0:
            await self._clock.sleep(delay)
