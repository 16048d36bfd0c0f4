"""The PostgreSQL store (``postgresql://user@host/db``, or ``postgres://``): every run's events
in a database several processes (on several machines) share, with psycopg 3.

It behaves as the SQLite journal (:mod:`.sqlite`) does: the same tables (in the schema
``openintent``, see :mod:`._pg_schema`), the same logs (:class:`~._sqlite_journal.JournalLog`:
group commits on one writer thread per backend, :mod:`._writer_thread`), the same run leases
(a holder whose process is gone from this host loses the lease at once, any other once it
expired: ``?lease_ttl=SECONDS``, 60 by default: :mod:`._pg_run_leases`), client leases with fencing
(:mod:`._pg_leases`) and the inbox of approval decisions (:mod:`._pg_inbox`). What differs:
the database may restart under a run. A commit or a read whose connection failed is retried
with backoff (:mod:`._pg_calls`) for up to a minute, and a commit is idempotent: the row of a
commit is keyed by its run and first event, so a retry that finds an identical row knows the
commit went through.

Runs can also be left for another process to go on with: :meth:`PostgresBackend.detach_run`
gives a run's lease back and marks it detached; :meth:`PostgresBackend.adoptable_runs` lists
the runs that need a coordinator (detached, or their lease free, expired or held by a dead
process of this host). ``tasks`` is the store's task queue for workers (:mod:`._pg_tasks`),
woken through ``listener`` (:mod:`._pg_listen`: one thread on its own connection that
listens). A run's start, end, resume, detach or released lease, and a decision sent to
its inbox, are announced on the ``openintent_runs`` channel (payload: the run id); every
commit of a run's events, in its own statement, on ``openintent_events`` (payload: the run
id), which only a process following a run listens to (:meth:`PostgresBackend.watch_events`).
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import psycopg
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import RunNotFoundError, StoreError
from ..models import Event, EventType
from . import CommitFailed, RunInfo, Subscribers
from ._journal_backend import JournalCommits
from ._pg_calls import PgCalls
from ._pg_inbox import PgInbox
from ._pg_leases import PgLeases, client_transaction
from ._pg_listen import EVENTS, PgListener, Watch
from ._pg_run_leases import PgRunLeases
from ._pg_schema import PgUrl, shown_url, where_of
from ._pg_tasks import PgTaskQueue
from ._sqlite_journal import JournalLog, RawEvent, decode_batches
from ._writer_thread import WriterThread

__all__ = ["PostgresBackend"]

# What changes a run's row: its end, a resume, a settled effect (the run is open again).
_ENDS = frozenset({EventType.RUN_FINISHED, EventType.RUN_RESUMED, EventType.EFFECT_RESOLVED})

Conn = psycopg.Connection[Any]


class PostgresBackend(JournalCommits, PgRunLeases, Subscribers):
    """Runs' events in a PostgreSQL database (see the module docstring)."""

    durable = True
    #: Its calls may be made from any thread (they take a pooled connection each), and may
    #: wait long (retried through a server restart): callers make them off the event loop.
    thread_safe = True
    #: Seconds a run lease lasts unless renewed (a run going on renews it every third of it).
    lease_ttl = 60.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = pg = PgUrl.parse(url)
        if pg.lease_ttl is not None:
            self.lease_ttl = pg.lease_ttl
        #: The database, for messages.
        self.where = f"{where_of(pg)} ({shown_url(url)})"
        self.calls = calls = PgCalls(pg, self.where, pg.pool_size or 4)
        self.pool = calls.pool
        s = pg.quoted_schema
        self._runs, self._batches = f"{s}.runs", f"{s}.batches"
        self.subscribers: list[MemoryObjectSendStream[Event]] = []
        # Commits run on one long-lived thread, in the order they are submitted.
        self._thread = WriterThread(f"openintent journal writer {pg.schema}")
        self._closing = False
        self._live: weakref.WeakValueDictionary[str, JournalLog] = weakref.WeakValueDictionary()
        self._events_listener: PgListener | None = None  # see watch_events
        self._events_closer: Callable[[], Any] = lambda: None
        self._lock = threading.Lock()  # a commit, or closing
        self._closed = False
        self._host = socket.gethostname()
        #: Where its processes are notified (tasks ready and ended, runs changed).
        self.listener = PgListener(pg)
        #: Approval decisions other processes send to this database's runs.
        self.inbox = PgInbox(calls, s, self.run_lease, self.holder_gone,
                             lambda: self.commits, self.listener)
        #: The task queue of this store's workers (:mod:`._pg_tasks`).
        self.tasks = PgTaskQueue(self.pool, pg, self.listener)
        self._finalizer = weakref.finalize(self, _close_all, calls, self._thread, self.tasks,
                                           self.listener)

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        return self.calls.failed(what, exc)

    # ------------------------------------------------------------------ runs

    def create_run(
        self, run_id: str, name: str, *, parent: str | None = None, timebase: float = 0.0
    ) -> JournalLog:
        sql = (f"INSERT INTO {self._runs} (id, name, parent, timebase) VALUES (%s, %s, %s, %s) "
               "ON CONFLICT (id) DO NOTHING")
        row = (run_id, name, parent, timebase)
        tries: list[None] = []

        def create(conn: Conn) -> bool:
            tries.append(None)
            if conn.execute(sql, row).rowcount:
                return True
            # Not new: a retry whose first try went through (its answer was lost) finds its
            # own row, with no events yet; anything else is another run of that id.
            found = conn.execute(
                f"SELECT name, parent, timebase, (SELECT count(*) FROM {self._batches} "
                f"WHERE run_id = %s) FROM {self._runs} WHERE id = %s",
                (run_id, run_id)).fetchone()
            return len(tries) > 1 and found == (name, parent, timebase, 0)

        if not self.calls.call(create, f"record the new run {run_id!r}"):
            raise ValueError(f"run {run_id!r} ({name!r}) is already in the store {self.url}")
        log = JournalLog(run_id, name, parent, timebase, self)
        self._live[run_id] = log
        return log

    def _on_file(self, run_id: str) -> int:
        """How many events of the run the database holds (from its last commit's row)."""
        sql = (f"SELECT first_seq, json_array_length(events::json) FROM {self._batches} "
               "WHERE run_id = %s ORDER BY first_seq DESC LIMIT 1")
        row = self.calls.call(lambda conn: conn.execute(sql, (run_id,)).fetchone(),
                              f"read run {run_id!r}")
        return 0 if row is None else int(row[0]) + int(row[1])

    def _row(self, run_id: str) -> tuple[str, str | None, float]:
        sql = f"SELECT name, parent, timebase FROM {self._runs} WHERE id = %s"
        row = self.calls.call(lambda conn: conn.execute(sql, (run_id,)).fetchone(),
                              f"read run {run_id!r}")
        if row is None:
            raise RunNotFoundError(
                f"the store {self.url} holds no run {run_id!r}; rt.runs() lists the runs it "
                "holds"
            )
        return row[0], row[1], float(row[2])

    def _events(self, run_id: str) -> list[RawEvent]:
        sql = f"SELECT events FROM {self._batches} WHERE run_id = %s ORDER BY first_seq"
        rows = self.calls.call(lambda conn: conn.execute(sql, (run_id,)).fetchall(),
                               f"read the events of run {run_id!r}")
        return decode_batches(rows)

    def runs(self) -> list[RunInfo]:
        sql = (f"SELECT id, name, status, started, ended, parent FROM {self._runs} "
               "ORDER BY position")
        rows = self.calls.call(lambda conn: conn.execute(sql).fetchall(), "list its runs")
        return [RunInfo(run_id, name, status, _utc(started), _utc(ended), parent)
                for run_id, name, status, started, ended, parent in rows]

    # ------------------------------------------------------------------ commits

    def _commit(self, log: JournalLog, start: int, events: list[RawEvent], text: str) -> None:
        """Write ``events`` in one transaction (``_lock`` held), retried while the
        connection fails; a retry that finds the row written already is done."""
        run_id = log.run_id
        # One statement: the row, and (when it is new) the notice for followers.
        insert = (f"WITH ins AS (INSERT INTO {self._batches} VALUES (%s, %s, %s) "
                  "ON CONFLICT (run_id, first_seq) DO NOTHING RETURNING run_id) "
                  f"SELECT count(pg_notify('{EVENTS}', run_id)) FROM ins")
        row = (run_id, start, text)
        alone = bool(start) and not any(event[0] in _ENDS for event in events)
        updates = [] if alone else self._run_updates(log, start, events)

        def commit(conn: Conn) -> str | None:
            if alone:  # the common case: one statement, its own transaction
                inserted = _count(conn.execute(insert, row).fetchone())
            else:
                with conn.transaction():
                    inserted = _count(conn.execute(insert, row).fetchone())
                    if inserted:
                        for sql, params in updates:
                            conn.execute(sql, params)
            if inserted:
                return None
            found = conn.execute(f"SELECT events FROM {self._batches} WHERE run_id = %s "
                                 "AND first_seq = %s", (run_id, start)).fetchone()
            return None if found is not None and found[0] == text else "conflict"

        what = (f"commit events {start}-{start + len(events) - 1} of run {run_id} "
                f"({log.name!r})")
        try:
            outcome = self.calls.call(commit, what)
        except StoreError as exc:
            raise CommitFailed(f"{exc}; the run stops here (nothing acts on an event that is "
                               "not committed)") from exc
        if outcome is not None:
            raise CommitFailed(
                f"{self.where} could not {what}: another process wrote events from {start} "
                "on already (it took the run over); the run stops here (nothing acts on an "
                "event that is not committed)")
        for type_, _time, _intent_id, data in events:
            if type_ in (EventType.RUN_RESUMED, EventType.EFFECT_RESOLVED):
                log.sitting = float((data or {}).get("timebase", log.sitting))

    def _run_updates(self, log: JournalLog, start: int,
                     events: list[RawEvent]) -> list[tuple[str, tuple[Any, ...]]]:
        """The updates of the run's row that go with one commit's events."""
        run_id, runs = log.run_id, self._runs
        updates: list[tuple[str, tuple[Any, ...]]] = []
        if start == 0 and events:
            updates.append((f"UPDATE {runs} SET started = %s WHERE id = %s",
                            (log.timebase + events[0][1], run_id)))
        sitting = log.sitting
        for type_, time_, _intent_id, data in events:
            if type_ == EventType.RUN_FINISHED:
                status = (data or {}).get("status", "failed")
                updates.append((f"UPDATE {runs} SET status = %s, ended = %s WHERE id = %s",
                                (status, sitting + time_, run_id)))
            elif type_ in _ENDS:  # run_resumed (on another clock), effect_resolved
                sitting = float((data or {}).get("timebase", sitting))
                updates.append((f"UPDATE {runs} SET status = 'running', ended = NULL "
                                "WHERE id = %s", (run_id,)))
        if updates:  # (rare: a run's start, end or resume) for processes that listen
            updates.append(("SELECT pg_notify('openintent_runs', %s)", (run_id,)))
        return updates

    def watch_events(self, run_id: str) -> Watch:
        """The notices that events of ``run_id`` were committed (by any process), from now
        on: what follows a run in another process waits on (``openintent runs events
        --follow``). Their channel is listened to by a second listener, made at the first
        call (a process that follows no run does not receive a notice per commit)."""
        with self._lock:
            if self._events_listener is None:
                if self._closed:
                    raise StoreError(f"the store {self.url} is closed")
                self._events_listener = PgListener(self.pg, (EVENTS,))
                self._events_closer = weakref.finalize(self, self._events_listener.close)
            listener = self._events_listener
        return listener.watch(EVENTS, [run_id])

    # ------------------------------------------------------------------ client

    def client_write(self, run_id: str) -> AbstractContextManager[list[RawEvent]]:
        """A client's write to a run's log: one transaction (see :mod:`._pg_leases`)."""
        return client_transaction(self.calls, self._runs, self._batches, run_id,
                                  self.read_list, self.url)

    def lease_table(self) -> PgLeases:
        """The client leases of this database (real time: :mod:`._pg_leases`)."""
        return PgLeases(self.calls, self.pg.quoted_schema, self.url)

    # ------------------------------------------------------------------ streams, closing

    def close(self) -> None:
        """Close the subscribers' streams and the pool. Events appended but not committed
        yet (a run that never waited for them) are written first."""
        self.close_subscribers()
        if self._close_journal():
            self._events_closer()

    def __repr__(self) -> str:
        return f"<PostgresBackend {self.url}>"


def _close_all(calls: PgCalls, thread: WriterThread, tasks: PgTaskQueue,
               listener: PgListener) -> None:
    thread.stop(join=False)
    tasks.close()  # before the pool: a call in flight ends, then the queue's thread
    listener.close()
    calls.close()


def _count(row: Any) -> int:
    return 0 if row is None else int(row[0])


def _utc(posix: float | None) -> datetime | None:
    return None if posix is None else datetime.fromtimestamp(posix, UTC)
