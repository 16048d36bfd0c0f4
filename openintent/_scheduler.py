"""The scheduler of one run: readiness, completion and skip propagation, and the run's
lifecycle (its worker pool is :mod:`openintent._workers`).

Design notes (why it looks like this):

* Intents are dispatched the moment their last dependency completes; there are no "levels".
* Work is done by *reusable worker tasks* in one anyio task group (:mod:`._workers`); a halt
  cancels that group.
* What one intent's attempts do is :mod:`openintent._attempt`'s job; how they end comes back
  here (:meth:`Run.complete`, :meth:`Run.fail`).
* Every change to an intent goes through the run's bus (:mod:`openintent._bus`); its own
  bookkeeping (:class:`~openintent._nodes.Node`: waiting counts, the ready queue) is not
  intent state.
* The run's lifecycle is one :class:`RunState`; a guardrail's breach says why it halted.
* Lifecycle notifications (``on_complete``, ``on_state_change``, ``on_event``) go through one
  ordered queue drained by a single task (:mod:`openintent._notify`), so they fire in event
  order.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ._attempt import Attempts
from ._blocking import BlockingWatch, current_watch
from ._bus import EventBus
from ._clock import Clock
from ._context import active_run
from ._coordination import RUNTIME, CoordinatorSession
from ._dispatch import BoundAgent
from ._guarding import GuardrailChain, cancelled_reason
from ._handler_context import HandlerContext
from ._json_data import json_data
from ._nodes import Node, graft
from ._notify import Notifications
from ._plan import IntentPlan, Plan
from ._ports import RuntimePort, Stoppable
from ._registry import HookKind
from ._views import Views
from ._workers import WorkerPool
from .guardrails import Breach
from .models import EventType, Intent, IntentStatus, RunStatus

__all__ = ["Run", "RunState"]


class RunState(enum.Enum):
    """Where a run is in its life; it only moves down this list (a halt may skip a step)."""

    #: Intents are dispatched as they become ready.
    RUNNING = "running"
    #: A guardrail stopped the run: nothing new starts, running work is being cancelled.
    HALTED = "halted"
    #: No worker is left: only ``@on_all_complete`` and queued hooks may still run.
    SETTLED = "settled"
    #: Closed: every hook has fired and the background jobs are cancelled.
    ENDED = "ended"


READY = EventType.READY
COMPLETED = EventType.COMPLETED


class Run:
    """One run of a portfolio, from its first dispatch to its last notification."""

    def __init__(
        self,
        plan: Plan,
        bus: EventBus,
        nodes: list[Node],
        clock: Clock,
        rng: random.Random,
        runtime: RuntimePort,
        *,
        parent: Stoppable | None = None,
        watch: BlockingWatch | None = None,
        settled: int = 0,
    ) -> None:
        self.spec = plan.spec
        #: Renews the run's lease in a durable store while the run goes on (the launcher's).
        self.keep_lease: Callable[[], Awaitable[None]] | None = None
        #: A client's run (``run_portfolio``): says why a completion may not be applied (the
        #: caller's lease was lost), else ``None``.
        self.fence: Callable[[], str | None] | None = None
        self.coordinator = plan.coordinator
        self.agents = list(plan.agents)
        store = self.store = bus.store
        self.bus = bus
        self.clock = clock
        self.nodes = nodes
        self.id_of_title = {node.spec.title: node.id for node in nodes}
        self._nodes_by_id = {node.id: node for node in nodes}
        self.views = Views(self.id_of_title, self._nodes_by_id, store.portfolio_id)
        self.errors: dict[str, BaseException] = {}
        self.parent = parent  # the run whose coordinator executes this one
        self.blocking = watch  # times async handlers' steps (the runtime's)
        self.state = RunState.RUNNING
        self.breach: Breach | None = None  # why a guardrail halted the run
        self._background: TaskGroup | None = None
        self._background_scopes: list[anyio.CancelScope] = []
        self._work_scope: anyio.CancelScope | None = None
        self._settled = settled  # intents that reached a terminal status (resumed: so far)
        self._total = len(nodes)
        self._done = anyio.Event()
        self.guardrails = GuardrailChain(self, list(plan.guardrails)) if plan.guardrails else None
        self.hooks = Notifications(self, self.agents, self.coordinator)
        self.coordination = CoordinatorSession(self, runtime)
        self.context = HandlerContext(bus, clock, self.coordination, self.hooks)
        self._fallbacks = dict(plan.fallbacks)
        self.attempts = Attempts(
            self, bus, self.views, clock, rng, self.coordinator, self._fallbacks,
            self.guardrails, self.coordination, self.hooks,
            None if plan.sequential else plan.max_concurrency, watch,
        )
        self.context.leases = self.attempts.leases
        self.workers = WorkerPool(self, self.attempts.run, sequential=plan.sequential,
                                  batch=self.attempts if self.attempts.batches_dispatches
                                  else None)

    # ------------------------------------------------------------------ the run

    async def run_to_end(self, finish: Callable[[], Awaitable[None]] | None = None) -> RunStatus:
        """Run every intent to a terminal status (or until a guardrail halts the run).

        ``finish`` (the runtime's ``@on_all_complete``) runs after every intent completed,
        still under the run's supervision: guardrails, hooks and the virtual clock's driver
        keep working, and a halt cancels it.
        """
        token = active_run.set(self.context)
        watching = current_watch.set(self.blocking)
        try:
            async with anyio.create_task_group() as tg:
                # Outer group: notifications, the virtual clock's driver, guardrail timers.
                self._background = tg
                tg.start_soon(self.hooks.serve)
                journal = self.store.journal
                if journal is not None:  # a durable store: commit what is logged, as it is
                    self.start_background(journal.serve)
                if self.keep_lease is not None:  # renew the run's lease in the store
                    self.start_background(self.keep_lease)
                drive = getattr(self.clock, "drive", None)
                if drive is not None:  # a virtual clock jumps time while the run is idle
                    self.start_background(lambda: drive(self._deadlocked))
                async with anyio.create_task_group() as work:
                    # Inner group: the workers. A halt cancels exactly this group.
                    self.workers.start(work)
                    self._work_scope = work.cancel_scope
                    if self.guardrails is not None:
                        self.guardrails.start(tg)
                    for node in list(self.nodes):  # (a resumed run's: the pending ones)
                        if node.waiting == 0 and self.breach is None and (
                                node.status is IntentStatus.PENDING):
                            self._make_ready(node)
                    await self._until_settled()
                    self._stop_workers()
                if self.breach is not None:
                    self._cancel_started(cancelled_reason(self.breach))
                elif finish is not None and self._all_completed():
                    with anyio.CancelScope() as scope:
                        self._work_scope = scope  # what a halt cancels from now on
                        await finish()
                # Hooks queued so far still fire (after a halt too) while the clock's driver
                # runs: on a virtual clock a hook that sleeps needs it.
                await self.hooks.drain()
                self._close()
        finally:
            current_watch.reset(watching)
            active_run.reset(token)
        if self.breach is not None:
            return RunStatus.HALTED
        return RunStatus.COMPLETED if self._all_completed() else RunStatus.FAILED

    def _all_completed(self) -> bool:
        return all(node.status == IntentStatus.COMPLETED for node in self.nodes)

    async def _until_settled(self) -> None:
        """Wait until every intent is terminal and every notification has fired.

        A lifecycle hook (``@on_complete`` of the last intent, say) may still add intents; the
        run goes on until nothing is left to run and nothing left to notify.
        """
        while True:
            if self._settled == self._total:
                self._done.set()
            await self._done.wait()
            await self.hooks.drain()
            if self._settled == self._total or self.breach is not None:
                return
            self._done = anyio.Event()  # a hook added work: keep going

    def start_background(self, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` in the run's outer task group until the run closes."""
        assert self._background is not None

        async def guarded() -> None:
            if self.state in (RunState.SETTLED, RunState.ENDED):
                return
            with anyio.CancelScope() as scope:
                self._background_scopes.append(scope)
                await job()

        self._background.start_soon(guarded)

    def halt(self, breach: Breach) -> None:
        """Stop the run for a guardrail: dispatch nothing new, cancel what runs, record why."""
        if self.breach is not None or self.state is RunState.ENDED:
            return
        data = json_data(breach.to_dict(), f"the breach of the {breach.guardrail} guardrail")
        self.breach = breach
        if self.state is RunState.RUNNING:
            self.state = RunState.HALTED
        self.bus.emit(EventType.GUARDRAIL_BREACH, breach.intent_id, data)
        self.coordination.record_decision(
            RUNTIME, breach.intent_id, "guardrail_breach", breach.reason, data
        )
        intent = None
        if breach.intent_id is not None and breach.intent_id in self._nodes_by_id:
            intent = self.views.now(breach.intent_id)
        self.notify_coordinator(HookKind.GUARDRAIL_BREACH, intent, breach)
        self.store.logger.warning("run halted", guardrail=breach.guardrail,
                                  reason=breach.reason)
        if self._work_scope is not None:
            self._work_scope.cancel()
        self._done.set()

    def _deadlocked(self, reason: str) -> None:
        self.halt(Breach("virtual_clock", f"deadlock: {reason}"))

    def record_decision(
        self, intent_id: str | None, decision: str, rationale: str, data: Mapping[str, Any]
    ) -> Any:
        """Record a decision on the coordinator's behalf (``coordinator_id="runtime"``)."""
        return self.coordination.record_decision(RUNTIME, intent_id, decision, rationale, data)

    def notify_coordinator(self, kind: HookKind, *args: Any) -> None:
        """Queue the coordinator's handlers of ``kind`` (they fire in event order)."""
        self.hooks.notify_coordinator(kind, *args)

    def learn_agent(self, agent: BoundAgent) -> None:
        """Take the hooks of an agent that joined mid-run (a delegate, an added intent's)."""
        self.hooks.learn_agent(agent)

    def _cancel_started(self, reason: dict[str, Any]) -> None:
        """After a halt: work that had started is cancelled; what never started stays pending."""
        for node in self.nodes:
            record = node  # a node is its intent's record
            status = record.status
            if status.is_terminal:
                continue
            if record.attempts > 0 or status == IntentStatus.AWAITING_APPROVAL:
                self.bus.emit(EventType.CANCELLED, node.id, reason)

    def _stop_workers(self) -> None:
        if self.state is not RunState.ENDED:
            self.state = RunState.SETTLED
        self.workers.stop()

    def _close(self) -> None:
        self._stop_workers()
        self.state = RunState.ENDED
        self.hooks.close()
        for scope in self._background_scopes:
            scope.cancel()

    def cancel_unfinished(self) -> None:
        """Mark every intent that has not finished as cancelled (the run was cancelled)."""
        for node in self.nodes:
            if not node.status.is_terminal:
                self.bus.emit(EventType.CANCELLED, node.id, {"reason": "run cancelled"})

    # ------------------------------------------------------------------ the ports

    @property
    def name(self) -> str:
        """The portfolio's name."""
        return self.spec.name

    @property
    def portfolio_id(self) -> str:
        """The run's id."""
        return self.store.portfolio_id

    @property
    def stopped(self) -> bool:
        """Halted, or inside a run (a sub-portfolio's parent) that was halted."""
        return self.breach is not None or (self.parent is not None and self.parent.stopped)

    @property
    def accepting(self) -> bool:
        """Whether intents may still be added: the run has neither settled nor halted."""
        return self.state is RunState.RUNNING

    def node(self, intent_id: str) -> Node:
        """The node of an intent of this run."""
        return self._nodes_by_id[intent_id]

    def titles(self) -> Mapping[str, str]:
        """The intents' ids by title."""
        return self.id_of_title

    async def call_agent(self, agent: BoundAgent, intent: Intent) -> dict[str, Any] | None:
        """One agent's ``@on_assignment`` work (see :meth:`Attempts.call_agent`)."""
        return await self.attempts.call_agent(agent, intent)

    # ------------------------------------------------------------------ readiness

    def _make_ready(self, node: Node) -> None:
        if self.stopped:
            return  # a halted run starts nothing new: the intent stays pending
        self.bus.emit(READY, node.id)
        self.workers.push(node)

    # ------------------------------------------------------------------ outcomes

    def complete(self, node: Node, intent: Intent, result: dict[str, Any] | None) -> None:
        """An intent's attempt succeeded: log it, notify, and make its dependents ready."""
        if self.stopped:
            return  # a halt lands first: the attempt counts as cancelled, not completed
        fence = self.fence
        if fence is not None and (refused := fence()) is not None:
            self.halt(Breach("lease", refused, intent_id=node.id))  # never applied
            return
        record = node  # a node is its intent's record
        old_state = record.state
        # ``result`` is already the run's own copy (see json_state): nobody else holds it.
        self.bus.emit(COMPLETED, node.id, result or None)
        agent_id = record.assigned_to
        hooks = self.hooks
        if hooks.state_watched and result:
            hooks.state_changed(record, old_state, record.state, result)
        if hooks.complete_watched:
            intent.status = IntentStatus.COMPLETED
            intent.state = record.state
            intent.version = record.version
            intent.assigned_to = agent_id
            for handler in hooks.watchers_of(HookKind.COMPLETE, agent_id):
                hooks.notify(handler, intent)
        nodes = self.nodes
        for index in node.dependents:
            dependent = nodes[index]
            dependent.waiting -= 1
            if dependent.waiting == 0:
                self._make_ready(dependent)
        self._settled += 1  # as _settle_one, inline: once per intent
        if self._settled == self._total:
            self._done.set()

    def fail(self, node: Node, attempts: int, error: Exception) -> None:
        """An intent failed for good: log it and skip everything that depends on it."""
        self.errors[node.id] = error
        self.bus.emit(
            EventType.FAILED,
            node.id,
            {"attempts": attempts, "error": str(error), "error_type": type(error).__name__},
        )
        self.store.logger.warning(
            "intent failed", intent_id=node.id, intent=node.spec.title, attempts=attempts,
            error=str(error), error_type=type(error).__name__,
        )
        self._skip_descendants(node)
        self._settle_one()

    def _settle_one(self) -> None:
        self._settled += 1
        if self._settled == self._total:
            self._done.set()

    def _skip_descendants(self, failed: Node) -> None:
        reason = {"reason": f"dependency {failed.spec.title!r} failed"}
        nodes = self.nodes
        stack = list(failed.dependents)
        while stack:
            node = nodes[stack.pop()]
            if node.status is not IntentStatus.PENDING:
                continue
            self.bus.emit(EventType.SKIPPED, node.id, reason)
            self._settle_one()
            stack.extend(node.dependents)

    # ------------------------------------------------------------------ growing the plan

    def add_intent(self, planned: IntentPlan) -> str:
        """Add a checked intent to the running portfolio; dispatch or skip it if it can."""
        titles = self.id_of_title
        node, broken = graft(planned, self.store, self.nodes,
                             lambda title: self._nodes_by_id[titles[title]], self.coordinator)
        for agent in (*planned.agents, *planned.fallbacks.values()):
            self.learn_agent(agent)
        self.nodes.append(node)
        self._nodes_by_id[node.id] = node
        titles[node.spec.title] = node.id
        self._fallbacks.update(planned.fallbacks)
        self._total += 1
        if broken is not None:
            self.bus.emit(EventType.SKIPPED, node.id,
                          {"reason": f"dependency {broken.title!r} {broken.status}"})
            self._settle_one()
        elif node.waiting == 0:
            self._make_ready(node)
        return node.id
