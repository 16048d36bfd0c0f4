"""Client leases and client writes in the PostgreSQL store: shared by every process on the
database, as the SQLite journal's are by every process on its file (:mod:`._sqlite_leases`).

:class:`PgLeases` is :class:`openintent._leases.LeaseTable` over the ``leases`` table, on real
time (POSIX seconds). Each change is one transaction holding the store's client lock (a
transaction-level advisory lock), so two processes never both take a lease; a row stays after
a release (holder ``NULL``), so a target's token only grows.

:func:`client_transaction` is how a client writes to a run's log: one transaction, under the
same lock, that reads the log, lets the client check (the portfolio is still a draft, its
leases are current: see ``_client_core``) and append, and commits the new events as one
batch; a refused check rolls back, so a stale write is never applied, and no other process
can take a lease between the check and the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._leases import check_ttl
from ._lease_rows import LeaseRows
from ._pg_calls import PgCalls
from ._pg_listen import EVENTS
from ._sqlite_journal import encode_events

__all__ = ["PgLeases", "client_transaction"]

#: Taken (until the transaction ends) by every client write and lease change.
_CLIENT_LOCK = "SELECT pg_advisory_xact_lock(hashtext('openintent client writes'))"


class PgLeases(LeaseRows):
    """The leases of one PostgreSQL store (see the module docstring)."""

    def __init__(self, calls: PgCalls, schema: str, url: str) -> None:
        self._calls = calls
        self._table = f"{schema}.leases"
        self._url = url

    def _row(self, target: str, scope: str) -> tuple[str | None, int, float] | None:
        sql = f"SELECT holder, token, expires FROM {self._table} WHERE target = %s AND scope = %s"
        row = self._calls.call(lambda conn: conn.execute(sql, (target, scope)).fetchone(),
                               f"read the {scope} lease of {target}")
        return None if row is None else (row[0], int(row[1]), float(row[2]))

    def targets(self) -> list[tuple[str, str]]:
        """Every ``(target, scope)`` with a holder (live or not)."""
        sql = f"SELECT target, scope FROM {self._table} WHERE holder IS NOT NULL"
        rows = self._calls.call(lambda conn: conn.execute(sql).fetchall(), "list its leases")
        return [(row[0], row[1]) for row in rows]

    def acquire(self, target: str, scope: str, holder: str, ttl: float,
                now: float) -> tuple[int, float]:
        check_ttl(ttl)
        with self._calls.transaction("take a lease") as conn:
            conn.execute(_CLIENT_LOCK)
            token = self._next_token(target, scope, holder, now)
            conn.execute(
                f"INSERT INTO {self._table} VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (target, scope) DO UPDATE SET holder = excluded.holder, "
                "token = excluded.token, expires = excluded.expires",
                (target, scope, holder, token, now + ttl))
        return token, now + ttl

    def renew(self, target: str, scope: str, token: int, ttl: float, now: float) -> float:
        check_ttl(ttl)
        with self._calls.transaction("renew a lease") as conn:
            conn.execute(_CLIENT_LOCK)
            self.check(target, scope, token, now, "renew()")
            conn.execute(f"UPDATE {self._table} SET expires = %s WHERE target = %s "
                         "AND scope = %s", (now + ttl, target, scope))
        return now + ttl

    def release(self, target: str, scope: str, token: int) -> None:
        with self._calls.transaction("release a lease") as conn:
            conn.execute(_CLIENT_LOCK)
            conn.execute(f"UPDATE {self._table} SET holder = NULL, expires = 0 "
                         "WHERE target = %s AND scope = %s AND token = %s",
                         (target, scope, token))


@contextmanager
def client_transaction(calls: PgCalls, runs: str, batches: str, run_id: str,
                       read: Callable[[str], list[Any]], url: str) -> Iterator[list[Any]]:
    """Begin the transaction, yield the run's log (``read`` inside it) to append to, and
    commit what was appended as one batch (see the module docstring)."""
    with calls.transaction(f"write to run {run_id} for a client") as conn:
        conn.execute(_CLIENT_LOCK)
        events = read(run_id)
        start = len(events)
        yield events
        new = events[start:]
        if new:
            conn.execute(f"INSERT INTO {batches} VALUES (%s, %s, %s)",
                         (run_id, start, encode_events(new)))
            conn.execute(f"SELECT pg_notify('{EVENTS}', %s)", (run_id,))  # for followers
            if start == 0:
                conn.execute(f"UPDATE {runs} SET started = timebase + %s, status = 'draft' "
                             "WHERE id = %s", (new[0][1], run_id))
