"""Client leases and client writes in a SQLite journal: shared by every process on the file.

:class:`SqliteLeases` is :class:`openintent._leases.LeaseTable` over the file's ``leases``
table (schema version 3), on real time (POSIX seconds: processes share no other clock). Each
change is one ``BEGIN IMMEDIATE`` transaction, so two processes never both take a lease; a
row stays after a release (holder ``NULL``), so a target's token only grows.

:func:`client_transaction` is how a client writes to a run's log: one ``BEGIN IMMEDIATE``
transaction that reads the log, lets the client check (the portfolio is still a draft, its
leases are current: see ``_client_core``) and append, and commits the new events as one
batch; a refused check rolls back, so a stale write is never applied, and no other process
can take a lease between the check and the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .._leases import check_ttl
from ..errors import StoreError
from ._lease_rows import LeaseRows
from ._sqlite_journal import encode_events

__all__ = ["SqliteLeases", "client_transaction"]


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    if conn.in_transaction:  # within a client's write: its transaction covers this
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteLeases(LeaseRows):
    """The leases of one SQLite journal (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, url: str) -> None:
        self._conn = conn
        self._url = url

    def _row(self, target: str, scope: str) -> tuple[str | None, int, float] | None:
        row = self._conn.execute(
            "SELECT holder, token, expires FROM leases WHERE target = ? AND scope = ?",
            (target, scope)).fetchone()
        return None if row is None else (row[0], int(row[1]), float(row[2]))

    def targets(self) -> list[tuple[str, str]]:
        """Every ``(target, scope)`` with a holder (live or not)."""
        return [(row[0], row[1]) for row in self._conn.execute(
            "SELECT target, scope FROM leases WHERE holder IS NOT NULL")]

    def acquire(self, target: str, scope: str, holder: str, ttl: float,
                now: float) -> tuple[int, float]:
        check_ttl(ttl)
        try:
            with _immediate(self._conn):
                token = self._next_token(target, scope, holder, now)
                self._conn.execute(
                    "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?, ?)",
                    (target, scope, holder, token, now + ttl))
        except sqlite3.Error as exc:
            raise StoreError(f"the journal {self._url} could not take a lease: {exc}") from exc
        return token, now + ttl

    def renew(self, target: str, scope: str, token: int, ttl: float, now: float) -> float:
        check_ttl(ttl)
        with _immediate(self._conn):
            self.check(target, scope, token, now, "renew()")
            self._conn.execute("UPDATE leases SET expires = ? WHERE target = ? AND scope = ?",
                               (now + ttl, target, scope))
        return now + ttl

    def release(self, target: str, scope: str, token: int) -> None:
        with _immediate(self._conn):
            self._conn.execute(
                "UPDATE leases SET holder = NULL, expires = 0 WHERE target = ? AND scope = ? "
                "AND token = ?", (target, scope, token))


@contextmanager
def client_transaction(conn: sqlite3.Connection, run_id: str,
                       read: Callable[[str], list[Any]], url: str) -> Iterator[list[Any]]:
    """Begin the transaction, yield the run's log (``read`` inside it) to append to, and
    commit what was appended as one batch (see the module docstring)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise StoreError(f"the journal {url} could not begin a client's write: {exc}") from exc
    try:
        events = read(run_id)
        start = len(events)
        yield events
        new = events[start:]
        if new:
            conn.execute("INSERT INTO batches VALUES (?, ?, ?)",
                         (run_id, start, encode_events(new)))
            if start == 0:
                conn.execute("UPDATE runs SET started = timebase + ?, status = 'draft' "
                             "WHERE id = ?", (new[0][1], run_id))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"the journal {url} could not commit a client's write to run "
                         f"{run_id}: {exc}") from exc
