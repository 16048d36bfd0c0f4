"""One run of a portfolio: readiness tracking, the dispatch loop, retries, failure propagation.

Design notes (why it looks like this):

* Intents are dispatched the moment their last dependency completes; there are no "levels".
* Work is done by *reusable worker tasks* in one anyio task group. A worker takes the next ready
  intent; a new worker is started only when ready work is waiting and no worker is idle or
  about to start. A handler that never suspends therefore costs no task at all, and every
  handler that does suspend lets another worker pick up the next ready intent, so concurrency
  grows exactly as far as the work allows. Cancelling the run cancels the task group.
* Every change to an intent goes through :meth:`EventStore.emit`; the scheduler's own
  bookkeeping (waiting counts, the ready queue) is not intent state.
* Lifecycle notifications (``on_complete``, ``on_state_change``, ``on_event``) go through one
  ordered queue drained by a single task (:mod:`openintent._notify`), so they fire in event
  order.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._blocking import BlockingWatch, current_watch, timed
from ._clock import Clock
from ._context import active_run
from ._coordination import RUNTIME, Coordination, Host
from ._data import inputs, json_data, json_state, unwrap
from ._dispatch import BoundAgent, call
from ._guarding import Guarding, cancelled_reason, is_denied
from ._handler_context import HandlerContext
from ._notify import Notifications
from ._plan import IntentPlan, intent_id_prefix
from ._registry import HookKind
from ._retrying import call_error, never_retried
from ._store import EventStore, IntentRecord
from .errors import Escalate, IntentTimeoutError
from .guardrails import Breach, DispatchContext, Guardrail
from .models import EventType, Intent, IntentStatus, RunStatus

if TYPE_CHECKING:
    from ._specs import IntentSpec, PortfolioSpec

__all__ = ["Node", "Run"]

Node = IntentRecord  # the scheduler keeps its bookkeeping on the projection record

# A worker yields to the event loop after this many intents even if no handler suspended, so
# a long run of instant handlers cannot starve cancellation or other tasks.
_YIELD_EVERY = 256


class Run:
    """Everything about one run of a portfolio."""

    def __init__(
        self,
        spec: PortfolioSpec,
        nodes: list[Node],
        store: EventStore,
        clock: Clock,
        rng: random.Random,
        coordinator: BoundAgent | None,
        agents: list[BoundAgent],
        fallbacks: dict[str, BoundAgent],
        max_workers: int | None,
        sequential: bool,
        host: Host,
        guardrails: list[Guardrail] | None = None,
    ) -> None:
        self.spec = spec
        self.nodes = nodes
        self.id_of_title = {node.spec.title: node.id for node in nodes}
        self.store = store
        self.records = store.records  # intent id -> its record, which is also its node
        self.clock = clock
        self.rng = rng
        self.coordinator = coordinator
        self.agents = agents
        self.fallbacks = fallbacks
        self.errors: dict[str, BaseException] = {}
        self.log = store.log
        self._sequential = sequential
        # Sequential: one worker. A max_concurrency cap: a limiter around dispatches only, so
        # an intent waiting for approval or in retry backoff holds no slot.
        self._max_workers = 1 if sequential else 1 << 62
        self._limiter = (
            anyio.CapacityLimiter(max_workers) if max_workers and not sequential else None
        )
        # Ready intents: FIFO, or by declaration order for the sequential strategy.
        self._ready: deque[Node] = deque()
        self._ready_heap: list[tuple[int, Node]] = []
        self._tg: TaskGroup | None = None
        self._background: TaskGroup | None = None
        self._background_scopes: list[anyio.CancelScope] = []
        self._work_scope: anyio.CancelScope | None = None
        self.halted: Breach | None = None
        self.parent: Run | None = None  # the run whose coordinator executes this one
        self.blocking: BlockingWatch | None = None  # times async handlers' steps (the runtime's)
        self.guarding = Guarding(self, guardrails) if guardrails else None
        self._idle: list[anyio.Event] = []
        self._starting = 0  # workers started or woken but not yet running
        self._workers = 0
        self._closing = False
        self._ended = False
        self._finished = 0
        self._done = anyio.Event()
        self.hooks = Notifications(self, agents, coordinator)
        self.context = HandlerContext(self)
        self.coordination = Coordination(self, host)
        self._total = len(nodes)

    # ------------------------------------------------------------------ the run

    async def execute(self, finish: Callable[[], Awaitable[None]] | None = None) -> RunStatus:
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
                drive = getattr(self.clock, "drive", None)
                if drive is not None:  # a virtual clock jumps time while the run is idle
                    self.start_background(lambda: drive(self._deadlocked))
                async with anyio.create_task_group() as work:
                    # Inner group: the workers. A halt cancels exactly this group.
                    self._tg = work
                    self._work_scope = work.cancel_scope
                    if self.guarding is not None:
                        self.guarding.start(tg)
                    for node in list(self.nodes):
                        if node.waiting == 0 and self.halted is None:
                            self._make_ready(node)
                    await self._until_settled()
                    self._stop_workers()
                if self.halted is not None:
                    self._cancel_started(cancelled_reason(self.halted))
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
        if self.halted is not None:
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
            if self._finished == self._total:
                self._done.set()
            await self._done.wait()
            await self.hooks.drain()
            if self._finished == self._total or self.halted is not None:
                return
            self._done = anyio.Event()  # a hook added work: keep going

    def start_background(self, job: Callable[[], Any]) -> None:
        """Run ``job`` in the run's outer task group until the run closes."""
        assert self._background is not None

        async def guarded() -> None:
            if self._closing:
                return
            with anyio.CancelScope() as scope:
                self._background_scopes.append(scope)
                await job()

        self._background.start_soon(guarded)

    def halt(self, breach: Breach) -> None:
        """Stop the run for a guardrail: dispatch nothing new, cancel what runs, record why."""
        if self.halted is not None or self._ended:
            return
        data = json_data(breach.to_dict(), f"the breach of the {breach.guardrail} guardrail")
        self.halted = breach
        self.store.emit(EventType.GUARDRAIL_BREACH, breach.intent_id, data)
        self.coordination.record_decision(
            RUNTIME, breach.intent_id, "guardrail_breach", breach.reason, data
        )
        node = self.records.get(breach.intent_id) if breach.intent_id else None
        intent = self.view(node, node.attempts, node.assigned_to) if node is not None else None
        self.notify_coordinator(HookKind.GUARDRAIL_BREACH, intent, breach)
        self.log.warning("run halted", guardrail=breach.guardrail, reason=breach.reason)
        if self._work_scope is not None:
            self._work_scope.cancel()
        self._done.set()

    def _deadlocked(self, reason: str) -> None:
        self.halt(Breach("virtual_clock", f"deadlock: {reason}"))

    def notify_coordinator(self, kind: HookKind, *args: Any) -> None:
        """Queue the coordinator's handlers of ``kind`` (they fire in event order)."""
        self.hooks.notify_coordinator(kind, *args)

    def learn_agent(self, agent: BoundAgent) -> None:
        """Take the hooks of an agent that joined mid-run (a delegate, an added intent's)."""
        self.hooks.learn_agent(agent)

    def _cancel_started(self, reason: dict[str, Any]) -> None:
        """After a halt: work that had started is cancelled; what never started stays pending."""
        for node in self.nodes:
            status = node.status
            if status.is_terminal:
                continue
            if node.attempts > 0 or status == IntentStatus.AWAITING_APPROVAL:
                self.store.emit(EventType.CANCELLED, node.id, reason)

    def _stop_workers(self) -> None:
        self._closing = True
        for event in self._idle:
            event.set()
        self._idle.clear()

    def _close(self) -> None:
        self._ended = True
        self._stop_workers()
        self.hooks.close()
        for scope in self._background_scopes:
            scope.cancel()

    def cancel_unfinished(self) -> None:
        """Mark every intent that has not finished as cancelled (the run was cancelled)."""
        for node in self.nodes:
            if not node.status.is_terminal:
                self.store.emit(EventType.CANCELLED, node.id, {"reason": "run cancelled"})

    # ------------------------------------------------------------------ workers

    @property
    def stopped(self) -> bool:
        """Halted, or inside a run (a sub-portfolio's parent) that was halted."""
        if self.halted is not None:
            return True
        run = self.parent
        while run is not None:
            if run.halted is not None:
                return True
            run = run.parent
        return False

    def _make_ready(self, node: Node) -> None:
        if self.stopped:
            return  # a halted run starts nothing new: the intent stays pending
        self.store.emit(EventType.READY, node.id)
        if self._sequential:
            heapq.heappush(self._ready_heap, (node.index, node))
        else:
            self._ready.append(node)
        self._wake()

    def _wake(self) -> None:
        if self._idle:
            self._starting += 1
            self._idle.pop().set()
        elif self._starting == 0 and self._workers < self._max_workers:
            assert self._tg is not None
            self._starting += 1
            self._workers += 1
            self._tg.start_soon(self._worker)

    async def _worker(self) -> None:
        self._starting -= 1
        ready = self._ready
        heap = self._ready_heap
        watch = self.blocking
        done = 0
        try:
            while not self._closing:
                if self.stopped:
                    return  # a guardrail stopped the run: dispatch nothing new
                if ready or heap:
                    # Sequential: the ready intent declared first, chosen when it is needed.
                    node = ready.popleft() if ready else heapq.heappop(heap)[1]
                    if ready or heap:
                        self._wake()
                    work = node.fast
                    if (work is None or self.guarding is not None or node.attempts
                            or self._limiter is not None):
                        await self._run_intent(node)
                    else:
                        # The hot path, inlined: the first attempt of an intent with one
                        # agent, one async handler and no timeout, run in the worker itself.
                        agent_id = node.agents[0].id
                        self.store.emit(DISPATCHED, node.id, (1, agent_id))
                        intent = self.view(node, 1, agent_id)
                        try:
                            result = await (work(intent) if watch is None else timed(
                                work(intent), watch, node.agents[0].work_handler, intent))
                            if result is not None and (result or type(result) is not dict):
                                # copied in, so the log keeps its own (an empty dict: no-op)
                                result = json_state(result, node.agents[0].work_name)
                        except Exception as exc:
                            await self._run_intent(node, exc, intent)
                        else:
                            self._complete(node, intent, result)
                    done += 1
                    if done % _YIELD_EVERY == 0:
                        await anyio.lowlevel.checkpoint()
                else:
                    wakeup = anyio.Event()
                    self._idle.append(wakeup)
                    await wakeup.wait()
                    if not self._closing:
                        self._starting -= 1
        finally:
            self._workers -= 1

    # ------------------------------------------------------------------ one intent

    def view(self, node: Node, attempt: int, agent_id: str | None) -> Intent:
        record = node
        spec = node.spec
        state = record.state  # replaced on every change, never changed in place: a snapshot
        return Intent(
            node.id,
            spec.title,
            spec.description,
            record.status,
            state,
            record.version,
            agent_id,
            spec.depends_on,
            spec.constraints,
            self.store.portfolio_id,
            attempt,
            inputs(self.records, self.id_of_title, spec.depends_on),
            spec.tags,
            node.id,
        )

    async def _run_intent(
        self, node: Node, failure: Exception | None = None, intent: Intent | None = None
    ) -> None:
        """Attempt an intent until it completes or fails for good.

        ``failure`` (with its ``intent`` view) is the error of a first attempt the worker
        already made inline on its fast path.
        """
        spec = node.spec
        policy = spec.retry
        primary = node.agents[0]
        attempt = node.attempts
        if type(failure) is TypeError and intent is not None and primary.work is not None:
            # From the worker's inline call: the handler may not take (intent) at all.
            error = call_error(primary.work, primary.work_name, (intent,), failure)
            if error is not failure:
                error.__cause__ = failure
                failure = error
        if isinstance(failure, Escalate) and intent is not None:
            try:
                result = await self.coordination.escalate(intent, failure)
            except Exception as exc:
                failure = exc
            else:
                self._complete(node, intent, result)
                return
        while True:
            if failure is not None:
                if not self._retry_or_fail(node, attempt, failure, primary.id):
                    return
                next_agent = policy.agent_for(attempt + 1, primary.id)
                await self._before_retry(node, attempt, failure, next_agent or primary.id)
                failure = None
            attempt += 1
            if len(node.agents) > 1:
                agents = node.agents
                agent_id = ",".join(agent.id for agent in agents)
            else:
                agent_id = policy.agent_for(attempt, primary.id) or primary.id
                agents = (primary if agent_id == primary.id else self.fallbacks[agent_id],)
            try:
                if self.guarding is not None:
                    result, intent = await self._guarded_attempt(node, agents, agent_id, attempt)
                else:
                    async with self._slot():
                        await self._unless_halted()  # halted while waiting for a slot?
                        # packed data (attempt, agent): see models.PACKED_FIELDS
                        self.store.emit(DISPATCHED, node.id, (attempt, agent_id))
                        intent = self.view(node, attempt, agent_id)
                        if spec.timeout is None:
                            result = await self._attempt(node, agents, intent)
                        else:
                            result = await self._attempt_with_timeout(
                                node, agents, intent, spec.timeout
                            )
            except Exception as exc:
                failure = exc
                continue
            self._complete(node, intent, result)
            return

    async def _unless_halted(self) -> None:
        """Stop an attempt about to be dispatched in a halted run (as cancelled)."""
        if self.halted is not None:
            # The halt cancelled the scope every worker runs in, so this raises the backend's
            # own cancellation (never build one by hand: trio's has no public constructor).
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise RuntimeError("openintent bug: a worker of a halted run was not cancelled")

    def _slot(self) -> AbstractAsyncContextManager[Any]:
        """A max_concurrency slot for one dispatch (a no-op without a cap)."""
        return self._limiter if self._limiter is not None else _NO_SLOT

    async def _guarded_attempt(
        self, node: Node, agents: tuple[BoundAgent, ...], agent_id: str | None, attempt: int
    ) -> tuple[dict[str, Any] | None, Intent]:
        """One attempt through the guardrail chain; the innermost link dispatches it."""
        assert self.guarding is not None
        label = agent_id or ",".join(agent.id for agent in agents)
        views: list[Intent] = []

        async def dispatch(ctx: DispatchContext) -> dict[str, Any] | None:
            await self._unless_halted()  # a guardrail halted the run on the way in?
            async with AsyncExitStack() as slots:
                for slot in (*ctx.reservations, self._slot(), *ctx.slots):
                    await slots.enter_async_context(slot)
                await self._unless_halted()  # halted while this attempt waited for a slot?
                self.store.emit(DISPATCHED, node.id, (attempt, label))
                intent = self.view(node, attempt, agent_id)
                views.append(intent)
                if node.spec.timeout is None:
                    return await self._attempt(node, agents, intent)
                return await self._attempt_with_timeout(
                    node, agents, intent, node.spec.timeout
                )

        ctx = self.guarding.context(node, tuple(agent.id for agent in agents), attempt)
        result = await self.guarding.dispatch(ctx, dispatch)
        if result is not None:  # a guardrail may have answered or changed it: copy it in
            result = json_state(result, f"the guardrail chain of intent {node.spec.title!r}")
        # A guardrail may answer without calling call_next (a cache, say): no dispatch then.
        return result, views[-1] if views else self.view(node, node.attempts, agent_id)

    async def _attempt_with_timeout(
        self, node: Node, agents: tuple[BoundAgent, ...], intent: Intent, seconds: float
    ) -> dict[str, Any] | None:
        result: dict[str, Any] | None = None
        with self.clock.timeout(seconds) as scope:
            result = await self._attempt(node, agents, intent)
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
                return await self.coordination.attempt_many(node, agents, intent)
            if agents[0] is self.coordinator:
                return await self.coordination.route(intent)
            return await self.call_agent(agents[0], intent)
        except Escalate as escalation:
            return await self.coordination.escalate(intent, escalation)

    async def call_agent(self, agent: BoundAgent, intent: Intent) -> dict[str, Any] | None:
        """One agent's ``@on_assignment`` work: its result as a checked copy (or ``None``)."""
        work = agent.work
        if work is not None:  # the common case: one async @on_assignment handler
            watch = self.blocking
            try:
                value = await (work(intent) if watch is None
                               else timed(work(intent), watch, agent.work_handler, intent))
            except TypeError as exc:
                error = call_error(work, agent.work_name, (intent,), exc)
                if error is exc:
                    raise
                raise error from exc
            return None if value is None else json_state(value, agent.work_name)
        merged: dict[str, Any] | None = None
        for handler in agent.of(HookKind.ASSIGNMENT):
            value = json_state(await call(handler, intent, clock=self.clock), handler.name)
            if value is not None:
                merged = value if merged is None else {**merged, **value}
        return merged

    def _complete(self, node: Node, intent: Intent, result: dict[str, Any] | None) -> None:
        if self.stopped:
            return  # a halt lands first: the attempt counts as cancelled, not completed
        record = node
        old_state = record.state
        # ``result`` is already the run's own copy (see json_state): nobody else holds it.
        self.store.emit(EventType.COMPLETED, node.id, result or None)
        agent_id = record.assigned_to
        hooks = self.hooks
        if hooks.state_watched and result:
            hooks.state_changed(node, old_state, record.state, result)
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
        self._finished += 1
        if self._finished == self._total:
            self._done.set()

    def _finish_one(self) -> None:
        self._finished += 1
        if self._finished == self._total:
            self._done.set()

    def _retry_or_fail(self, node: Node, attempt: int, exc: Exception, primary: str) -> bool:
        """Record a failed attempt; return whether the intent will be retried."""
        if is_denied(exc):  # refused before its dispatch: a denial is not an attempt
            attempt = node.attempts
        else:
            error = {"attempt": attempt, "error": str(exc), "error_type": type(exc).__name__}
            self.store.emit(EventType.ATTEMPT_FAILED, node.id, error)
        # Some failures no retry can fix (an unresolved escalation, a denied approval, a
        # programming error); the policy's retry_on / never_retry_on filter the rest.
        policy = node.spec.retry
        next_agent = (
            None if never_retried(exc) or not policy.retries(exc)
            else policy.agent_for(attempt + 1, primary)
        )
        if next_agent is not None:
            this_agent = policy.agent_for(attempt, primary)
            if next_agent != this_agent and len(node.agents) == 1:
                self.coordination.record_decision(
                    RUNTIME, node.id, "failover",
                    f"{this_agent} gave up after {attempt} attempt(s); "
                    f"{next_agent} takes over",
                    {"from": this_agent, "to": next_agent},
                )
            return True
        self.errors[node.id] = exc
        self.store.emit(
            EventType.FAILED,
            node.id,
            {"attempts": attempt, "error": str(exc), "error_type": type(exc).__name__},
        )
        self.log.warning(
            "intent failed", intent_id=node.id, intent=node.spec.title, attempts=attempt,
            error=str(exc), error_type=type(exc).__name__,
        )
        self._skip_descendants(node)
        self._finish_one()
        return False

    async def _before_retry(self, node: Node, attempt: int, exc: Exception, agent: str) -> None:
        retries_so_far = attempt - 1
        delay = node.spec.retry.delay(retries_so_far, self.rng)
        self.store.emit(
            EventType.RETRY_SCHEDULED,
            node.id,
            {"attempt": attempt + 1, "agent": agent, "delay": delay},
        )
        failed_agent = node.assigned_to
        handlers = self.hooks.watchers_of(HookKind.RETRY, failed_agent)
        if handlers:
            await self.hooks.drain()  # earlier events' hooks first: everything in log order
            intent = self.view(node, attempt + 1, agent)
            for handler in handlers:
                await self.hooks.call_safely(handler, intent, attempt + 1, exc)
        if delay > 0:
            await self.clock.sleep(delay)

    def _skip_descendants(self, failed: Node) -> None:
        reason = {"reason": f"dependency {failed.spec.title!r} failed"}
        nodes = self.nodes
        stack = list(failed.dependents)
        while stack:
            node = nodes[stack.pop()]
            if node.status is not IntentStatus.PENDING:
                continue
            self.store.emit(EventType.SKIPPED, node.id, reason)
            self._finish_one()
            stack.extend(node.dependents)

    # ------------------------------------------------------------------ growing the plan

    @property
    def finished(self) -> bool:
        """Whether the run takes no more intents (it has ended, or a guardrail halted it)."""
        return self._closing or self.halted is not None

    def add_node(self, planned: IntentPlan) -> str:
        """Add a checked intent to the running portfolio; dispatch or skip it if it can."""
        spec, agents, fallbacks = planned.spec, planned.agents, planned.fallbacks
        intent_id = f"{intent_id_prefix(self.store.portfolio_id)}{len(self.nodes)}"
        initial_state = spec.initial_state
        self.store.emit(
            EventType.CREATED,
            intent_id,
            (spec.title, spec.depends_on, spec.assign,
             unwrap(initial_state) if initial_state else None),
        )
        node = self.records[intent_id]
        node.spec = spec
        node.index = len(self.nodes)
        node.agents = agents
        node.fast = fast_path(agents, spec, self.coordinator)
        for agent in (*agents, *fallbacks.values()):
            self.learn_agent(agent)
        self.nodes.append(node)
        self.id_of_title[spec.title] = intent_id
        self.fallbacks.update(fallbacks)
        self._total += 1
        parents = [self.records[self.id_of_title[title]] for title in spec.depends_on]
        for parent in parents:
            parent.dependents = (*parent.dependents, node.index)
        node.waiting = sum(parent.status != IntentStatus.COMPLETED for parent in parents)
        broken = [parent for parent in parents if parent.status.is_terminal
                  and parent.status != IntentStatus.COMPLETED]
        if broken:
            self.store.emit(EventType.SKIPPED, intent_id,
                            {"reason": f"dependency {broken[0].title!r} {broken[0].status}"})
            self._finish_one()
        elif node.waiting == 0:
            self._make_ready(node)
        return intent_id

    # ------------------------------------------------------------------ notifications

    async def fire_all_complete(self, portfolio: Any) -> Any:
        """Fire ``@on_all_complete`` on the coordinator, then on agents; return the output.

        The coordinator's handler decides the output, so its exception propagates (the
        runtime fails the run with it); an agent's is recorded like any hook failure.
        """
        output: Any = None
        token = active_run.set(self.context)
        watching = current_watch.set(self.blocking)
        try:
            if self.coordinator is not None:
                for handler in self.coordinator.of(HookKind.ALL_COMPLETE):
                    output = await call(handler, portfolio, clock=self.clock)
            for agent in self.agents:
                if agent is self.coordinator:
                    continue
                for handler in agent.of(HookKind.ALL_COMPLETE):
                    await self.hooks.call_safely(handler, portfolio)
        finally:
            current_watch.reset(watching)
            active_run.reset(token)
        return output


DISPATCHED = EventType.DISPATCHED


class _NoSlot:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_SLOT = _NoSlot()


def fast_path(
    agents: tuple[BoundAgent, ...], spec: IntentSpec, coordinator: BoundAgent | None
) -> Callable[[Intent], Any] | None:
    """The handler a worker may await directly for an intent's first attempt, if any."""
    if len(agents) != 1 or agents[0] is coordinator or spec.timeout is not None:
        return None
    return agents[0].work
