"""Lifecycle notifications of a run: ``on_complete``, ``on_state_change``, ``on_event``,
``on_retry`` and the coordinator's notices (breaches, approvals).

Handlers are queued as events happen and called one at a time by a single task, so they fire
in event order; one that raises is logged and recorded as a ``hook_failed`` event, never failing
the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio

from ._data import read_only
from ._dispatch import BoundAgent, Handler, call_handler
from ._ports import NotifiedRun
from ._registry import HookKind
from ._store import IntentRecord
from .models import Event, EventType

__all__ = ["Notifications"]

_WATCHED = (HookKind.COMPLETE, HookKind.STATE_CHANGE, HookKind.EVENT, HookKind.RETRY)
_MISSING = object()


class Notifications:
    """The notification handlers of one run, by kind and agent, and the task that calls them."""

    def __init__(self, run: NotifiedRun, agents: list[BoundAgent], coordinator: BoundAgent | None
                 ) -> None:
        self.run = run
        self.coordinator = coordinator
        self._agents = agents
        # kind -> agent id -> handlers; "" holds the coordinator's (and only there).
        self._table: dict[HookKind, dict[str, list[Handler]]] = {}
        for kind in _WATCHED:
            by_agent = {agent.id: agent.handlers_of(kind) for agent in agents
                        if agent.handlers_of(kind) and agent is not coordinator}
            if coordinator is not None and coordinator.handlers_of(kind):
                by_agent[""] = coordinator.handlers_of(kind)
            self._table[kind] = by_agent
        self._queue: deque[tuple[Handler, tuple[Any, ...]]] = deque()
        self._wakeup: anyio.Event | None = None
        self._busy = False
        self._drained: anyio.Event | None = None
        self._close_requested = False  # close(): finish once the queue is empty
        if self._table[HookKind.EVENT]:
            # Hooks hear the whole run, the events logged before they were set up too.
            run.bus.observe(self._on_event, from_start=True)
        self._refresh()

    def _refresh(self) -> None:
        self.state_watched = bool(self._table[HookKind.STATE_CHANGE])
        self.complete_watched = bool(self._table[HookKind.COMPLETE])

    def learn_agent(self, agent: BoundAgent) -> None:
        """Take the handlers of an agent that joined mid-run."""
        if any(known is agent for known in self._agents):
            return
        self._agents.append(agent)
        had_event_hooks = bool(self._table[HookKind.EVENT])
        for kind, by_agent in self._table.items():
            if agent.handlers_of(kind) and agent is not self.coordinator:
                by_agent[agent.id] = agent.handlers_of(kind)
        if self._table[HookKind.EVENT] and not had_event_hooks:
            self.run.bus.observe(self._on_event)
        self._refresh()

    def watchers_of(self, kind: HookKind, agent_id: str | None) -> list[Handler]:
        """The handlers of ``kind`` on an agent (every assignee of ``"a,b"``) and on the
        coordinator."""
        by_agent = self._table[kind]
        if not by_agent:
            return []
        own: list[Handler] = []
        if agent_id is not None:
            own = by_agent.get(agent_id, [])
            if not own and "," in agent_id:  # a multi-agent intent: every assignee
                own = [handler for one in agent_id.split(",") for handler in by_agent.get(one, [])]
        if self.coordinator is not None and agent_id == self.coordinator.id:
            return by_agent.get("", [])  # the coordinator's own intent: once, not twice
        return own + by_agent.get("", [])

    def state_changed(
        self,
        record: IntentRecord,
        old_state: Mapping[str, Any],
        new_state: Mapping[str, Any],
        changes: Mapping[str, Any],
    ) -> None:
        """Queue ``on_state_change`` handlers whose keys changed."""
        handlers = self.watchers_of(HookKind.STATE_CHANGE, record.assigned_to)
        if not handlers:
            return
        changed = {key for key in changes if old_state.get(key, _MISSING) != changes[key]}
        if not changed:
            return
        intent = self.run.views.now(record.id)
        # States are replaced on change, never changed in place: views are snapshots.
        old = read_only(old_state)
        new = read_only(new_state)
        for handler in handlers:
            keys = handler.options.get("keys")
            if keys is None or keys & changed:
                self.notify(handler, intent, old, new)

    def _on_event(self, event: Event) -> None:
        if event.type == EventType.HOOK_FAILED:
            return  # never feed a hook's failure back into hooks: no feedback loops
        by_agent = self._table[HookKind.EVENT]
        if event.intent_id is None:  # run-level events go to everyone who listens
            handlers = [handler for listed in by_agent.values() for handler in listed]
        else:
            assigned = self.run.store.records[event.intent_id].assigned_to
            handlers = self.watchers_of(HookKind.EVENT, assigned)
        for handler in handlers:
            if handler.options["type"] == event.type:
                self.notify(handler, event)

    def notify_coordinator(self, kind: HookKind, *args: Any) -> None:
        """Queue the coordinator's handlers of ``kind``."""
        if self.coordinator is not None:
            for handler in self.coordinator.handlers_of(kind):
                self.notify(handler, *args)

    def notify(self, handler: Handler, *args: Any) -> None:
        """Queue one handler call."""
        self._queue.append((handler, args))
        if self._wakeup is not None:
            self._wakeup.set()

    async def serve(self) -> None:
        """Call queued handlers in order until :meth:`close` (the run's notifier task)."""
        queue = self._queue
        while True:
            while queue:
                self._busy = True
                handler, args = queue.popleft()
                try:
                    await self.call_safely(handler, *args)
                finally:
                    self._busy = False
            drained = self._drained
            if drained is not None:
                self._drained = None
                drained.set()  # wakes every drainer at once
            if self._close_requested:
                return
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
            self._wakeup = None

    async def drain(self) -> None:
        """Wait until every queued handler has been called.

        Several tasks may drain at once (intents retrying together, each before its
        ``on_retry``): they share one event, which the notifier sets and forgets when the
        queue runs dry, so every one of them wakes.
        """
        while self._queue or self._busy:
            drained = self._drained
            if drained is None:
                drained = self._drained = anyio.Event()
            await drained.wait()

    def close(self) -> None:
        """Let the notifier task finish once the queue is empty."""
        self._close_requested = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def call_safely(self, handler: Handler, *args: Any) -> None:
        """Call a lifecycle hook; a failure is logged and recorded, never fatal to the run."""
        run = self.run
        journal = run.store.journal
        if journal is not None:  # a durable store: the hook's event is on disk first
            await journal.wait_committed(len(run.store.events))
        try:
            await call_handler(handler, *args, clock=run.clock)
        except Exception as exc:
            run.bus.emit(
                EventType.HOOK_FAILED,
                None,
                {"handler": handler.name, "error": str(exc), "error_type": type(exc).__name__},
            )
            run.store.logger.error("lifecycle handler failed", handler=handler.name, exc_info=exc)
