"""The task queue of a ``memory://?workers=1`` store: :class:`~openintent._tasks.TaskQueue`
in one process, so coordinators and workers (``rt.serve``) of the same process share work
the way processes share a PostgreSQL store's queue, and tests drive it deterministically.

Claims expire on the clock of the runtime that opened the store (:meth:`MemoryTaskQueue.attach`;
a test's ``VirtualClock`` then makes lease expiry and reclaiming instant and repeatable),
else on the monotonic real clock. Nothing here is durable: it is the process's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from typing import Any, Literal

import anyio
import anyio.lowlevel

from ._tasks import EffectRow, Task, TaskOutcome

__all__ = ["MemoryTaskQueue"]

_ENDED = ("done", "failed", "cancelled")


class _Row:
    __slots__ = ("id", "run_id", "intent_id", "attempt", "agent_id", "payload", "status",
                 "token", "claims", "worker", "expires", "result", "ended")

    def __init__(self, task_id: int, run_id: str, intent_id: str, attempt: int, agent_id: str,
                 payload: Mapping[str, Any]) -> None:
        self.id = task_id
        self.run_id = run_id
        self.intent_id = intent_id
        self.attempt = attempt
        self.agent_id = agent_id
        self.payload = payload
        self.status = "ready"  # ready, claimed, done, failed, cancelled
        self.token = 0
        self.claims = 0
        self.worker: str | None = None
        self.expires = math.inf
        self.result: Mapping[str, Any] | None = None
        self.ended: anyio.Event | None = None  # made by the first outcome() waiting

    def current(self, task: Task) -> bool:
        return self.status == "claimed" and self.token == task.token


class MemoryTaskQueue:
    """Tasks of one process's ``memory://`` store (see the module docstring)."""

    def __init__(self, task_ttl: float = 30.0) -> None:
        self.task_ttl = task_ttl
        self.clock: Any = None
        self._rows: dict[int, _Row] = {}
        self._open: dict[int, _Row] = {}  # ready or claimed, oldest first
        self._keys: dict[tuple[str, str, int, str], int] = {}
        self._effects: dict[tuple[str, str], dict[str, EffectRow]] = {}
        self._work: anyio.Event | None = None

    def attach(self, clock: Any) -> None:
        """Expire claims on ``clock`` (a runtime's; the first one attached is kept)."""
        if self.clock is None:
            self.clock = clock

    def _now(self) -> float:
        return float(self.clock.now()) if self.clock is not None else time.monotonic()

    def _wake(self) -> None:
        if self._work is not None:
            self._work.set()
            self._work = None

    # ---------------------------------------------------------------- the coordinator's side

    async def submit(self, run_id: str, intent_id: str, attempt: int, agent_id: str,
                     payload: Mapping[str, Any]) -> int:
        await anyio.lowlevel.checkpoint()
        key = (run_id, intent_id, attempt, agent_id)
        known = self._keys.get(key)
        if known is not None:
            return known
        task_id = len(self._rows) + 1
        self._rows[task_id] = self._open[task_id] = _Row(task_id, run_id, intent_id, attempt,
                                                         agent_id, payload)
        self._keys[key] = task_id
        self._wake()
        return task_id

    async def outcome(self, task_id: int) -> TaskOutcome:
        row = self._rows[task_id]
        while row.status not in _ENDED:
            if row.ended is None:
                row.ended = anyio.Event()
            await row.ended.wait()
        await anyio.lowlevel.checkpoint()
        status: Any = row.status
        return TaskOutcome(status, row.result, row.worker, row.claims)

    async def cancel(self, task_id: int) -> None:
        await anyio.lowlevel.checkpoint()
        row = self._rows.get(task_id)
        if row is not None and row.status not in _ENDED:
            self._end(row, "cancelled", None)

    async def cancel_run(self, run_id: str) -> int:
        await anyio.lowlevel.checkpoint()
        stale = [row for row in self._open.values() if row.run_id == run_id]
        for row in stale:
            self._end(row, "cancelled", None)
        return len(stale)

    def _end(self, row: _Row, status: str, result: Mapping[str, Any] | None) -> None:
        row.status = status
        row.result = result
        row.expires = math.inf
        self._open.pop(row.id, None)
        if row.ended is not None:
            row.ended.set()

    # ---------------------------------------------------------------- the workers' side

    def _claimable(self, row: _Row, agents: Collection[str], now: float) -> bool:
        return row.agent_id in agents and (
            row.status == "ready" or (row.status == "claimed" and row.expires <= now))

    async def claim(self, worker: str, agents: Collection[str], limit: int) -> list[Task]:
        await anyio.lowlevel.checkpoint()
        now = self._now()
        claimed: list[Task] = []
        for row in self._open.values():
            if len(claimed) >= limit:
                break
            if not self._claimable(row, agents, now):
                continue
            row.status = "claimed"
            row.token += 1
            row.claims += 1
            row.worker = worker
            row.expires = now + self.task_ttl
            claimed.append(Task(row.id, row.run_id, row.intent_id, row.attempt, row.agent_id,
                                row.payload, row.token, row.claims, worker))
        return claimed

    async def wait_for_work(self, agents: Collection[str], poll: float) -> None:
        now = self._now()
        delay = poll
        for row in self._open.values():
            if self._claimable(row, agents, now):
                await anyio.lowlevel.checkpoint()
                return
            if row.status == "claimed" and row.agent_id in agents:
                delay = min(delay, row.expires - now)  # reclaimable then
        if self._work is None:
            self._work = anyio.Event()
        work = self._work
        if self.clock is not None:
            with self.clock.timeout(max(delay, 0.0)):
                await work.wait()
        else:
            with anyio.move_on_after(max(delay, 0.0)):
                await work.wait()

    async def renew(self, tasks: Collection[Task]) -> set[int]:
        await anyio.lowlevel.checkpoint()
        now = self._now()
        lost: set[int] = set()
        for task in tasks:
            row = self._rows[task.id]
            if row.current(task):
                row.expires = now + self.task_ttl
            else:
                lost.add(task.id)
        return lost

    async def finish(self, task: Task, status: Literal["done", "failed"],
                     result: Mapping[str, Any]) -> bool:
        await anyio.lowlevel.checkpoint()
        row = self._rows[task.id]
        if not row.current(task):
            return False
        self._end(row, status, result)
        return True

    async def forget_worker(self, worker: str) -> int:
        await anyio.lowlevel.checkpoint()
        forgotten = 0
        for row in self._open.values():
            if row.status == "claimed" and row.worker == worker:
                row.expires = -math.inf
                forgotten += 1
        if forgotten:
            self._wake()
        return forgotten

    async def effects(self, run_id: str, intent_id: str) -> dict[str, EffectRow]:
        await anyio.lowlevel.checkpoint()
        return dict(self._effects.get((run_id, intent_id), {}))

    async def effect_started(self, task: Task, name: str) -> bool:
        await anyio.lowlevel.checkpoint()
        if not self._rows[task.id].current(task):
            return False
        self._effects.setdefault((task.run_id, task.intent_id), {})[name] = EffectRow(
            name, "started")
        return True

    async def effect_ended(self, task: Task, name: str, status: Literal["completed", "failed"],
                           value: Any = None, error: str | None = None) -> bool:
        # How an effect that ran ended is kept even when its task was cancelled meanwhile
        # (the truth, for the next attempt); a claim taken over by another worker is fenced.
        with anyio.CancelScope(shield=True):
            await anyio.lowlevel.checkpoint()
        row = self._rows[task.id]
        if row.token != task.token or row.status not in ("claimed", "cancelled"):
            return False
        self._effects.setdefault((task.run_id, task.intent_id), {})[name] = EffectRow(
            name, status, value, error)
        return row.status == "claimed"

    def close(self) -> None:
        """Nothing to stop: the queue lives as long as its store."""
