"""The SQLite journal (``sqlite:///path.db``): every run's events in a file, with the
standard library's :mod:`sqlite3`.

The file (see :mod:`._sqlite_file`) is checked before anything is written to it, runs in WAL
mode, and holds two tables: ``runs`` (one row per run: name, parent, status, when it started
and ended, its time base and its lease) and ``batches`` (the events of one commit per row;
the ``events`` view shows a row per event). A run's log is a
:class:`~._sqlite_journal.JournalLog`; its commits run on one long-lived writer thread per backend
(:mod:`._writer_thread`; started by the first commit, stopped and joined by ``close()``), in
one transaction each. What a killed process leaves is everything committed; with
``?synchronous=full`` a power loss loses nothing committed either.

Run leases (``acquire_run``) keep two processes from continuing one run: the row names the
holder, its process id and host, and when the lease expires (the run renews it while it goes
on: ``Launcher.hold``). A holder
whose process is gone from this host loses the lease at once, any other once it expired.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import weakref
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from anyio.streams.memory import MemoryObjectSendStream

from ..errors import RunNotFoundError, StoreError
from ..models import Event, EventType
from . import CommitFailed, RunInfo, Subscribers
from ._journal_backend import JournalCommits
from ._run_lease_check import LeaseHolders, check_lease
from ._sqlite_file import JournalFile, prepare
from ._sqlite_inbox import SqliteInbox
from ._sqlite_journal import JournalLog, RawEvent, decode_batches
from ._sqlite_leases import SqliteLeases, client_transaction
from ._writer_thread import WriterThread

__all__ = ["SqliteBackend"]

# What changes a run's row: its end, a resume, a settled effect (the run is open again).
_ENDS = frozenset({EventType.RUN_FINISHED, EventType.RUN_RESUMED, EventType.EFFECT_RESOLVED})


class SqliteBackend(JournalCommits, LeaseHolders, Subscribers):
    """Runs' events in a SQLite file (see the module docstring)."""

    durable = True
    #: Seconds a run lease lasts unless renewed (a run going on renews it every third of it).
    lease_ttl = 60.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.file = file = JournalFile.parse(url)
        prepare(file)
        self.path = file.path
        if file.lease_ttl is not None:
            self.lease_ttl = file.lease_ttl
        self.subscribers: list[MemoryObjectSendStream[Event]] = []
        # Two connections: this one for what the event loop asks at once (a new run's row,
        # reads, listings, leases), the writer's for commits on the writer thread.
        self._conn = self._connect()
        try:
            self._writer = self._connect()
        except StoreError:
            self._conn.close()
            raise
        # Commits run on one long-lived thread, in the order they are submitted.
        self._thread = WriterThread(f"openintent journal writer {self.path}")
        self._closing = False
        self._finalizer = weakref.finalize(self, _close_all, [self._conn, self._writer],
                                           self._thread)
        self._live: weakref.WeakValueDictionary[str, JournalLog] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()  # the writer connection: a commit, or closing it
        self._closed = False
        self._host = socket.gethostname()
        #: Approval decisions other processes send to this file's runs.
        self.inbox = SqliteInbox(self._conn, url, self.path, self.run_lease, self.holder_gone)

    def _connect(self) -> sqlite3.Connection:
        try:
            return self.file.connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the journal {self.path} ({self.url}): {exc}") from exc

    def _failed(self, what: str, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"the journal {self.path} ({self.url}) could not {what}: {exc}")

    # ------------------------------------------------------------------ runs

    def create_run(
        self, run_id: str, name: str, *, parent: str | None = None, timebase: float = 0.0
    ) -> JournalLog:
        # One row, written at once on the event loop's thread: a run starts rarely, and the
        # id must be known to be new before the run logs anything.
        try:
            self._conn.execute(
                "INSERT INTO runs (id, name, parent, timebase) VALUES (?, ?, ?, ?)",
                (run_id, name, parent, timebase))
        except sqlite3.IntegrityError:
            raise ValueError(f"run {run_id!r} ({name!r}) is already in the store "
                             f"{self.url}") from None
        except sqlite3.Error as exc:
            raise self._failed(f"record the new run {run_id!r}", exc) from exc
        log = JournalLog(run_id, name, parent, timebase, self)
        self._live[run_id] = log
        return log

    def _on_file(self, run_id: str) -> int:
        """How many events of the run the file holds (from its last commit's row alone)."""
        try:
            row = self._conn.execute(
                "SELECT first_seq, json_array_length(events) FROM batches WHERE run_id = ? "
                "ORDER BY first_seq DESC LIMIT 1", (run_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(f"read run {run_id!r}", exc) from exc
        return 0 if row is None else int(row[0]) + int(row[1])

    def _row(self, run_id: str) -> tuple[str, str | None, float]:
        try:
            row = self._conn.execute("SELECT name, parent, timebase FROM runs WHERE id = ?",
                                     (run_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(f"read run {run_id!r}", exc) from exc
        if row is None:
            raise RunNotFoundError(
                f"the store {self.url} holds no run {run_id!r}; rt.runs() lists the runs it "
                "holds"
            )
        return row[0], row[1], row[2]

    def _events(self, run_id: str) -> list[RawEvent]:
        try:
            rows = self._conn.execute(
                "SELECT events FROM batches WHERE run_id = ? ORDER BY first_seq",
                (run_id,)).fetchall()
        except sqlite3.Error as exc:
            raise self._failed(f"read the events of run {run_id!r}", exc) from exc
        return decode_batches(rows)

    def runs(self) -> list[RunInfo]:
        try:
            rows = self._conn.execute(
                "SELECT id, name, status, started, ended, parent FROM runs ORDER BY rowid"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._failed("list its runs", exc) from exc
        return [RunInfo(run_id, name, status, _utc(started), _utc(ended), parent)
                for run_id, name, status, started, ended, parent in rows]

    # ------------------------------------------------------------------ commits

    def _commit(self, log: JournalLog, start: int, events: list[RawEvent], text: str) -> None:
        """Write ``events`` in one transaction of the writer connection (``_lock`` held)."""
        conn = self._writer
        row = (log.run_id, start, text)
        try:
            if start and not any(event[0] in _ENDS for event in events):
                # The common case: one statement, its own transaction (one call into SQLite).
                conn.execute("INSERT INTO batches VALUES (?, ?, ?)", row)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO batches VALUES (?, ?, ?)", row)
                self._update_run(conn, log, start, events)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise CommitFailed(
                f"the journal {self.path} ({self.url}) could not commit events "
                f"{start}-{start + len(events) - 1} of run {log.run_id} ({log.name!r}): {exc}; "
                "the run stops here (nothing acts on an event that is not on disk)"
            ) from exc

    def _update_run(self, conn: sqlite3.Connection, log: JournalLog, start: int,
                    events: list[RawEvent]) -> None:
        """Keep the run's row up to date with the events of one commit."""
        run_id = log.run_id
        if start == 0 and events:
            conn.execute("UPDATE runs SET started = ? WHERE id = ?",
                         (log.timebase + events[0][1], run_id))
        for type_, time_, _intent_id, data in events:
            if type_ in _ENDS:
                if type_ == EventType.RUN_FINISHED:
                    status = (data or {}).get("status", "failed")
                    conn.execute("UPDATE runs SET status = ?, ended = ? WHERE id = ?",
                                 (status, log.sitting + time_, run_id))
                else:  # run_resumed (going on again, on another clock), effect_resolved
                    log.sitting = float((data or {}).get("timebase", log.sitting))
                    conn.execute("UPDATE runs SET status = 'running', ended = NULL "
                                 "WHERE id = ?", (run_id,))

    # ------------------------------------------------------------------ client

    def client_write(self, run_id: str) -> AbstractContextManager[list[RawEvent]]:
        """A client's write to a run's log: one transaction (see :mod:`._sqlite_leases`)."""
        return client_transaction(self._conn, run_id, self.read_list, self.url)

    def lease_table(self) -> SqliteLeases:
        """The client leases of this file (real time: :mod:`._sqlite_leases`)."""
        return SqliteLeases(self._conn, self.url)

    # ------------------------------------------------------------------ leases

    def acquire_run(self, run_id: str, holder: str) -> None:
        pid, host, now = os.getpid(), self._host, time.time()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT lease_holder, lease_pid, lease_host, lease_expires FROM runs "
                    "WHERE id = ?", (run_id,)).fetchone()
                check_lease(row, run_id, self.url, holder, pid, host, now, self._gone)
                conn.execute(
                    "UPDATE runs SET lease_holder = ?, lease_pid = ?, lease_host = ?, "
                    "lease_expires = ? WHERE id = ?",
                    (holder, pid, host, now + self.lease_ttl, run_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._failed(f"take the lease of run {run_id!r}", exc) from exc

    def run_lease(self, run_id: str) -> dict[str, Any] | None:
        """Who holds the run's lease (``holder``, ``pid``, ``host``, ``expires``: POSIX
        seconds), or ``None`` when nobody does."""
        try:
            row = self._conn.execute(
                "SELECT lease_holder, lease_pid, lease_host, lease_expires FROM runs "
                "WHERE id = ?", (run_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(f"read the lease of run {run_id!r}", exc) from exc
        if row is None or row[0] is None:
            return None
        return {"holder": row[0], "pid": row[1], "host": row[2], "expires": row[3]}

    def release_run(self, run_id: str, holder: str) -> None:
        try:
            self._conn.execute(
                "UPDATE runs SET lease_holder = NULL, lease_pid = NULL, lease_host = NULL, "
                "lease_expires = NULL WHERE id = ? AND lease_holder = ? AND lease_pid = ? "
                "AND lease_host = ?", (run_id, holder, os.getpid(), self._host))
        except sqlite3.Error as exc:
            raise self._failed(f"give back the lease of run {run_id!r}", exc) from exc

    # ------------------------------------------------------------------ streams, closing

    def close(self) -> None:
        """Close the subscribers' streams and the file's connections. Events appended but
        not committed yet (a run that never waited for them) are written first."""
        self.close_subscribers()
        self._close_journal()

    def __repr__(self) -> str:
        return f"<SqliteBackend {self.url}>"


def _close_all(connections: list[sqlite3.Connection], thread: WriterThread) -> None:
    thread.stop(join=False)  # idle: a commit in its queue would hold the backend
    for conn in connections:
        conn.close()


def _utc(posix: float | None) -> datetime | None:
    return None if posix is None else datetime.fromtimestamp(posix, UTC)
