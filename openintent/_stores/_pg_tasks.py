"""The task queue of a ``postgresql://`` store (see :mod:`openintent._tasks`).

Every call is a request to one thread per queue, which runs the database work on a pooled
connection and wakes the caller's event loop (asyncio or trio) when it is done. The thread
takes everything asked since its last round at once, so calls made at about the same time
share a round trip: their submissions are one ``INSERT`` (and one notice per agent), their
finishes one ``UPDATE`` (one notice per run). Each call goes through
:func:`~._pg_retry.retrying`: a server restart or a broken connection costs a pause, not the
call (every statement may safely run twice, see :mod:`._pg_task_sql`; a claim retried after
its answer was lost finds the tasks its first try took by the claim's id).

Waiting is woken by notifications (:mod:`._pg_listen`): ``outcome`` waiters of a run are
looked at together, in one ``SELECT``, when ``openintent_done`` names the run (or at once,
when this process finished the task); a wait for a task this process queued, open then,
with no notice of its run since, needs no first look; ``wait_for_work`` returns at an
``openintent_tasks`` notice for one of its agents. A slow poll (``poll`` seconds) covers a
notice lost while the listener reconnected. Lease times are POSIX seconds from ``clock``
(``time.time``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

from .._tasks import EffectRow, Task, TaskOutcome
from ..errors import StoreError
from ._pg_listen import PgListener, Watch
from ._pg_retry import DEADLINE, retrying, where
from ._pg_schema import PgUrl
from ._pg_task_calls import Call, Outcomes
from ._pg_task_sql import Statements

__all__ = ["PgTaskQueue"]

_ENDED = frozenset({"done", "failed", "cancelled"})
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_decode = json.JSONDecoder().decode


class PgTaskQueue:
    """The :class:`~openintent._tasks.TaskQueue` of a PostgreSQL store (module docstring).

    ``pool`` is the backend's :class:`psycopg_pool.ConnectionPool`, ``listener`` its
    :class:`~._pg_listen.PgListener`. ``poll``: seconds between the slow looks at waiting
    outcomes; ``clock``: the lease clock; ``retry_deadline``: seconds a failing call is retried
    before it raises :class:`~openintent.errors.StoreError`.
    """

    def __init__(self, pool: Any, url: PgUrl, listener: PgListener, *, poll: float = 2.0,
                 clock: Callable[[], float] = time.time,
                 retry_deadline: float = DEADLINE) -> None:
        self.task_ttl: float = url.task_ttl if url.task_ttl is not None else 30.0
        self.url = url
        self.poll = poll
        self._pool = pool
        self._listener = listener
        self._clock = clock
        self._deadline = retry_deadline
        self._sql = Statements(url.quoted_schema)
        self._cond = threading.Condition()
        self._calls: list[Call] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._outcomes = Outcomes(self._cond)
        self._done_unsubscribe: Callable[[], None] | None = None
        self._watches: dict[frozenset[str], Watch] = {}

    # ---------------------------------------------------------------- the coordinator's side

    async def submit(self, run_id: str, intent_id: str, attempt: int, agent_id: str,
                     payload: Mapping[str, Any]) -> int:
        """Queue an attempt (see :meth:`openintent._tasks.TaskQueue.submit`)."""
        if self._done_unsubscribe is None:  # before the task exists: see Outcomes.submitted
            with self._cond:
                self._check_open()
                self._subscribe_done()
        task_id: int = await self._ask("submit", run_id, intent_id, attempt, agent_id,
                                       _encode(payload))
        return task_id

    async def outcome(self, task_id: int) -> TaskOutcome:
        """Wait until the task ended and return how."""
        call = Call("outcome", (task_id,))
        with self._cond:
            self._check_open()
            self._subscribe_done()
            self._outcomes.wait(task_id, call)
            self._start()
        try:
            outcome: TaskOutcome = await call.answered()
        finally:
            if not call.event.is_set():  # cancelled: stop waiting for it
                self._outcomes.stop_waiting(task_id, call)
        return outcome

    async def cancel(self, task_id: int) -> None:
        """End a task that has not ended yet as ``cancelled``."""
        await self._ask("cancel", task_id)

    async def cancel_run(self, run_id: str) -> int:
        """End every open task of ``run_id`` as ``cancelled``; returns how many."""
        count: int = await self._ask("cancel_run", run_id)
        return count

    # ---------------------------------------------------------------- the workers' side

    async def claim(self, worker: str, agents: Collection[str], limit: int) -> list[Task]:
        """Claim up to ``limit`` tasks for ``agents``, oldest first."""
        agents = sorted(set(agents))
        if not agents or limit < 1:
            return []
        # Notices from now on make the next wait_for_work return at once: this claim may
        # not see their tasks.
        self._watch(agents).clear()
        tasks: list[Task] = await self._ask("claim", worker, agents, limit, uuid.uuid4().hex)
        return tasks

    async def wait_for_work(self, agents: Collection[str], poll: float) -> None:
        """Return at a notice of work for ``agents`` since the last claim, or after ``poll``
        seconds."""
        await self._watch(sorted(set(agents))).wait(poll)

    async def renew(self, tasks: Collection[Task]) -> set[int]:
        """Extend the claims; returns the ids no longer held under these tokens."""
        if not tasks:
            return set()
        held: set[int] = await self._ask("renew", [t.id for t in tasks], [t.token for t in tasks])
        return {task.id for task in tasks} - held

    async def finish(self, task: Task, status: Literal["done", "failed"],
                     result: Mapping[str, Any]) -> bool:
        """Record the task's end under its token; ``False`` when the claim is not current."""
        written: bool = await self._ask("finish", task.id, task.token, status, _encode(result),
                                        task)
        return written

    async def forget_worker(self, worker: str) -> int:
        """Let the claims held under ``worker``'s id expire now; returns how many."""
        count: int = await self._ask("forget", worker)
        return count

    async def effects(self, run_id: str, intent_id: str) -> dict[str, EffectRow]:
        """The workers' effect rows of an intent, by name."""
        rows: dict[str, EffectRow] = await self._ask("effects", run_id, intent_id)
        return rows

    async def effect_started(self, task: Task, name: str) -> bool:
        """Record (fenced) that an effect is about to run."""
        written: bool = await self._ask("effect", task.id, task.token, name, "started",
                                        None, None)
        return written

    async def effect_ended(self, task: Task, name: str, status: Literal["completed", "failed"],
                           value: Any = None, error: str | None = None) -> bool:
        """Record (fenced) how an effect ended; kept even if the task was cancelled
        meanwhile (the effect did run), but then ``False``, as after another claim."""
        written: bool = await self._ask("effect", task.id, task.token, name, status,
                                        None if status == "failed" else _encode(value), error)
        return written

    def close(self) -> None:
        """Stop the thread (calls in flight end first; a failing one gives up) and every
        waiter and watch (:class:`StoreError`)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._done_unsubscribe is not None:
            self._done_unsubscribe()
        for watch in self._watches.values():
            watch.close()
        with self._cond:
            leftover, self._calls = self._calls, []
        error = StoreError(f"the task queue of {where(self.url)} was closed")
        self._outcomes.end_all(error)
        for call in leftover:
            call.answer(error=error)

    # ---------------------------------------------------------------- on the event loop

    async def _ask(self, kind: str, *args: Any) -> Any:
        call = Call(kind, args)
        with self._cond:
            self._check_open()
            self._calls.append(call)
            self._start()
        # Cancelled meanwhile, the call still runs (every call may: see the module docstring).
        return await call.answered()

    def _watch(self, agents: list[str]) -> Watch:
        key = frozenset(agents)
        watch = self._watches.get(key)
        if watch is None:
            self._check_open()
            watch = self._watches[key] = self._listener.watch("openintent_tasks", key)
        return watch

    def _subscribe_done(self) -> None:
        """Hear of ended tasks from now on (``_cond`` held)."""
        if self._done_unsubscribe is None:
            self._done_unsubscribe = self._listener.subscribe(
                "openintent_done", self._outcomes.run_ended_some)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the task queue of {where(self.url)} is closed")

    def _start(self) -> None:
        """Wake the thread (``_cond`` held), starting it the first time."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, daemon=True,
                                            name=f"openintent tasks {where(self.url)}")
            self._thread.start()
        self._cond.notify()

    # ---------------------------------------------------------------- on the queue's thread

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._calls or self._closed):
                    left = self._outcomes.pending(self.poll)
                    if left == 0:
                        break
                    self._cond.wait(left)
                calls, self._calls = self._calls, []
                if self._closed and not calls:
                    return
            self._round(calls)

    def _round(self, calls: list[Call]) -> None:
        """Answer the calls (those of a kind that batches, together), then look at the
        outcomes waited for."""
        by_kind: dict[str, list[Call]] = {}
        for call in calls:
            by_kind.setdefault(call.kind, []).append(call)
        for kind, group in by_kind.items():
            if kind == "submit":
                self._outcomes.submitting(True)
                try:
                    self._answer(group, self._submit, "queue tasks")
                finally:
                    self._outcomes.submitting(False)
            elif kind == "finish":
                self._answer(group, self._finish, "record how tasks ended")
            else:
                for call in group:
                    self._answer([call], getattr(self, f"_{kind}"), _WHAT[kind])
        self._look()

    def _answer(self, calls: list[Call], work: Callable[[Any, list[Call]], list[Any]],
                what: str) -> None:
        try:
            results = self._run(lambda conn: work(conn, calls), what)
        except Exception as exc:
            for call in calls:
                call.answer(error=exc)
        else:
            for call, result in zip(calls, results, strict=True):
                call.answer(result)

    def _run(self, work: Callable[[Any], Any], what: str) -> Any:
        """``work(conn)`` on a pooled connection in autocommit mode, retried."""

        end = time.monotonic() + self._deadline

        def attempt() -> Any:
            # Waiting for a connection (the server may be restarting) counts in the deadline.
            left = min(10.0, max(0.05, end - time.monotonic()))
            with self._pool.connection(timeout=left) as conn:
                autocommit = conn.autocommit
                if not autocommit:
                    conn.autocommit = True
                try:
                    return work(conn)
                finally:
                    if not autocommit:
                        try:
                            conn.autocommit = False
                        except Exception:  # a broken connection: the pool drops it
                            pass

        return retrying(attempt, what, self.url, deadline=self._deadline, stop=self._stop)

    def _submit(self, conn: Any, calls: list[Call]) -> list[int]:
        keys: dict[tuple[str, str, int, str], str] = {}
        for call in calls:
            keys.setdefault(call.args[:4], call.args[4])
        rows = conn.execute(self._sql.submit, (
            [key[0] for key in keys], [key[1] for key in keys], [key[2] for key in keys],
            [key[3] for key in keys], list(keys.values()), self._clock())).fetchall()
        ids = {(run_id, intent_id, attempt, agent_id): task_id
               for task_id, run_id, intent_id, attempt, agent_id, _status, _ in rows}
        self._outcomes.submitted([(row[0], row[1], row[5]) for row in rows])
        return [ids[call.args[:4]] for call in calls]

    def _finish(self, conn: Any, calls: list[Call]) -> list[bool]:
        firsts: dict[int, Call] = {}
        for call in calls:
            firsts.setdefault(call.args[0], call)
        rows = conn.execute(self._sql.finish, (
            list(firsts), [call.args[1] for call in firsts.values()],
            [call.args[2] for call in firsts.values()],
            [call.args[3] for call in firsts.values()], self._clock())).fetchall()
        written = {row[0] for row in rows}
        for task_id in written:  # a coordinator in this process need not wait for a notice
            if self._outcomes.waiting(task_id):
                _, _, status, result, task = firsts[task_id].args
                self._outcomes.resolve(task_id, TaskOutcome(status, _decode(result), task.worker,
                                                            task.claims))
        return [call.args[0] in written and firsts[call.args[0]] is call for call in calls]

    def _claim(self, conn: Any, calls: list[Call]) -> list[list[Task]]:
        call = calls[0]
        worker, agents, limit, claim_id = call.args
        call.tries += 1
        rows = []
        if call.tries > 1:  # the answer of an earlier try may have been lost as it committed
            rows = conn.execute(self._sql.claimed_before, (claim_id, worker)).fetchall()
        if len(rows) < limit:
            now = self._clock()
            more = limit - len(rows)
            rows += conn.execute(self._sql.claim, (worker, now + self.task_ttl, claim_id,
                                                   agents, now, more, more)).fetchall()
        rows.sort()
        return [[Task(task_id, run_id, intent_id, attempt, agent_id, _decode(payload), token,
                      claims, worker)
                 for task_id, run_id, intent_id, attempt, agent_id, payload, token, claims
                 in rows]]

    def _renew(self, conn: Any, calls: list[Call]) -> list[set[int]]:
        ids, tokens = calls[0].args
        rows = conn.execute(self._sql.renew,
                            (self._clock() + self.task_ttl, ids, tokens)).fetchall()
        return [{row[0] for row in rows}]

    def _cancel(self, conn: Any, calls: list[Call]) -> list[None]:
        (task_id,) = calls[0].args
        row = conn.execute(self._sql.cancel, (self._clock(), task_id)).fetchone()
        if row is not None:
            self._outcomes.resolve(task_id, TaskOutcome("cancelled", None, row[0], row[1]))
        else:  # it had ended already: its waiters learn how in this round
            self._outcomes.look_again(task_id)
        return [None]

    def _cancel_run(self, conn: Any, calls: list[Call]) -> list[int]:
        (run_id,) = calls[0].args
        row = conn.execute(self._sql.cancel_run, (self._clock(), run_id, run_id)).fetchone()
        return [int(row[0])]

    def _forget(self, conn: Any, calls: list[Call]) -> list[int]:
        row = conn.execute(self._sql.forget, calls[0].args).fetchone()
        return [int(row[0])]

    def _effects(self, conn: Any, calls: list[Call]) -> list[dict[str, EffectRow]]:
        rows = conn.execute(self._sql.effects, calls[0].args).fetchall()
        return [{name: EffectRow(name, status, None if value is None else _decode(value), error)
                 for name, status, value, error in rows}]

    def _effect(self, conn: Any, calls: list[Call]) -> list[bool]:
        task_id, token, name, status, value, error = calls[0].args
        row = conn.execute(self._sql.effect, (task_id, token, status != "started", name,
                                              status, value, error)).fetchone()
        return [row is not None and bool(row[0])]

    def _look(self) -> None:
        """Look at the outcomes waited for (one ``SELECT``) and answer their waiters."""
        ids, unknown = self._outcomes.to_look()
        if not ids:
            return
        try:
            rows = self._run(lambda conn: conn.execute(self._sql.outcomes,
                                                       (ids, unknown)).fetchall(),
                             "look at how tasks ended")
        except Exception as exc:
            for task_id in ids:
                self._outcomes.resolve(task_id, exc)
            return
        seen = set()
        for task_id, run_id, status, result, worker, claims in rows:
            seen.add(task_id)
            if status in _ENDED:
                self._outcomes.resolve(task_id, TaskOutcome(
                    status, None if result is None else _decode(result), worker, claims))
            else:
                self._outcomes.still_going(task_id, run_id)
        for task_id in set(unknown) - seen:
            self._outcomes.resolve(task_id, StoreError(
                f"{where(self.url)} holds no task {task_id}: it cannot be waited for"))

    def __repr__(self) -> str:
        return f"<PgTaskQueue {where(self.url)}>"


_WHAT = {
    "claim": "claim tasks", "renew": "renew task claims", "cancel": "cancel a task",
    "cancel_run": "cancel a resumed run's earlier tasks",
    "forget": "release a restarted worker's claims", "effects": "read effect rows",
    "effect": "record an effect",
}
