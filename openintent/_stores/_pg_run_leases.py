"""The run leases of the PostgreSQL store (:mod:`.postgres`), as the SQLite journal's
(:mod:`.sqlite`): the ``runs`` row names the holder, its process id and host, and when the lease
expires (the run renews it while it goes on: ``Launcher.hold``). A holder whose process is gone
from this host loses the lease at once, any other once it expired. Each new holder draws a new
``lease_token``.

A run can also be left for another process to go on with: :meth:`PgRunLeases.detach_run`
gives its lease back and marks it detached; :meth:`PgRunLeases.adoptable_runs` lists the runs
that need a coordinator (``rt.serve`` adopts them).
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from ..errors import RunNotFoundError
from ._pg_calls import PgCalls
from ._run_lease_check import LeaseHolders, check_lease

__all__ = ["PgRunLeases"]

_LEASE = "lease_holder, lease_pid, lease_host, lease_expires"

Conn = psycopg.Connection[Any]


class PgRunLeases(LeaseHolders):
    """The run-lease methods of :class:`~.postgres.PostgresBackend` (see the module
    docstring)."""

    url: str
    calls: PgCalls
    lease_ttl: float
    _runs: str  # the runs table's qualified name
    _batches: str  # the batches table's

    def acquire_run(self, run_id: str, holder: str) -> None:
        pid, host = os.getpid(), self._host
        runs = self._runs

        def acquire(conn: Conn) -> None:
            now = time.time()
            with conn.transaction():
                row = conn.execute(f"SELECT {_LEASE} FROM {runs} WHERE id = %s FOR UPDATE",
                                   (run_id,)).fetchone()
                same = check_lease(row, run_id, self.url, holder, pid, host, now, self._gone)
                conn.execute(
                    f"UPDATE {runs} SET lease_holder = %s, lease_pid = %s, lease_host = %s, "
                    "lease_expires = %s, detached = false, lease_token = lease_token + %s "
                    "WHERE id = %s",
                    (holder, pid, host, now + self.lease_ttl, 0 if same else 1, run_id))

        self.calls.call(acquire, f"take the lease of run {run_id!r}")

    def run_lease(self, run_id: str) -> dict[str, Any] | None:
        """Who holds the run's lease (``holder``, ``pid``, ``host``, ``expires``: POSIX
        seconds), or ``None`` when nobody does."""
        sql = f"SELECT {_LEASE} FROM {self._runs} WHERE id = %s"
        row = self.calls.call(lambda conn: conn.execute(sql, (run_id,)).fetchone(),
                              f"read the lease of run {run_id!r}")
        if row is None or row[0] is None:
            return None
        return {"holder": row[0], "pid": row[1], "host": row[2], "expires": row[3]}

    def release_run(self, run_id: str, holder: str) -> None:
        sql = (f"UPDATE {self._runs} SET lease_holder = NULL, lease_pid = NULL, "
               "lease_host = NULL, lease_expires = NULL WHERE id = %s AND lease_holder = %s "
               "AND lease_pid = %s AND lease_host = %s")
        params = (run_id, holder, os.getpid(), self._host)
        self.calls.call(lambda conn: _notify(conn, conn.execute(sql, params).rowcount, run_id),
                        f"give back the lease of run {run_id!r}")

    def detach_run(self, run_id: str) -> None:
        """Give the run's lease back (whoever holds it) and mark it detached: any process
        that can coordinate it may take it over (:meth:`adoptable_runs`); the next
        :meth:`acquire_run` clears the mark. :class:`RunNotFoundError` for an unknown id."""
        sql = (f"UPDATE {self._runs} SET lease_holder = NULL, lease_pid = NULL, "
               "lease_host = NULL, lease_expires = NULL, detached = true WHERE id = %s")
        changed = self.calls.call(
            lambda conn: _notify(conn, conn.execute(sql, (run_id,)).rowcount, run_id),
            f"detach run {run_id!r}")
        if not changed:
            raise RunNotFoundError(f"the store {self.url} holds no run {run_id!r}; "
                                   "rt.runs() lists the runs it holds")

    def adoptable_runs(self) -> list[str]:
        """The ids of the runs going on that need a coordinator, oldest first: detached
        ones, and those with committed events whose lease is free, expired or held by a
        process of this host that is gone. Never a sub-portfolio: its parent's coordinator
        runs it; never a run being started (no event committed yet)."""
        # A run with nothing committed yet is being started (its creator takes the lease
        # just after the row is in), unless it was detached: never adopt it from under them.
        sql = (f"SELECT id, detached, {_LEASE} FROM {self._runs} AS r WHERE status = 'running' "
               f"AND parent IS NULL AND (detached OR EXISTS (SELECT 1 FROM {self._batches} "
               "AS b WHERE b.run_id = r.id)) ORDER BY position")
        rows = self.calls.call(lambda conn: conn.execute(sql).fetchall(),
                               "list the runs that need a coordinator")
        now = time.time()
        return [run_id for run_id, detached, held, pid, host, expires in rows
                if detached or held is None or (expires or 0) <= now or self._gone(pid, host)]


def _notify(conn: Conn, rowcount: int, run_id: str) -> int:
    """Tell the processes listening that a run's lease changed (when it did)."""
    if rowcount:
        conn.execute("SELECT pg_notify('openintent_runs', %s)", (run_id,))
    return rowcount

