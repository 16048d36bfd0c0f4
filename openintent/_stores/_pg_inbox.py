"""The inbox of the PostgreSQL store: approval decisions sent to a run by another process, as
in the SQLite journal (:mod:`._sqlite_inbox`: the same rows, the same
:class:`~._sqlite_inbox.InboxDecision`).

Noticing a new row is cheap: :meth:`PgInbox.data_version` reads the inbox's highest row id
(one index lookup) and adds how many commits this process made (a run's own commit may be what
lets a decision apply), so the watch reads the pending rows only when something changed.
A submitted decision is also announced on the ``openintent_runs`` channel (payload: the run
id): the process running the run waits on that notice (:meth:`PgInbox.watch`) and reads the
inbox then, polling slowly only as a fallback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._pg_calls import PgCalls
from ._pg_listen import PgListener, Watch
from ._sqlite_inbox import COLUMNS, InboxDecision, InboxLease, decision_of

__all__ = ["PgInbox"]

class PgInbox(InboxLease):
    """The inbox of one PostgreSQL store (see the module docstring)."""

    def __init__(self, calls: PgCalls, schema: str,
                 lease_of: Callable[[str], dict[str, Any] | None],
                 gone: Callable[[dict[str, Any]], bool],
                 commits: Callable[[], int], listener: PgListener | None = None) -> None:
        self._calls = calls
        self._table = f"{schema}.approval_inbox"
        self._lease_of = lease_of  # who holds a run's lease (the backend's run_lease)
        self._gone = gone  # whether a lease's process is known to be gone (holder_gone)
        self._commits = commits  # how many commits this process's backend made
        self._listener = listener

    def watch(self, run_id: str) -> Watch:
        """The notices of decisions sent to ``run_id`` from now on (they come on the
        ``openintent_runs`` channel, with the run's other changes): the process running the
        run waits on it rather than polling. Close it when done."""
        if self._listener is None:
            raise RuntimeError("this inbox has no listener")
        return self._listener.watch("openintent_runs", [run_id])

    def submit(self, run_id: str, intent_id: str, approve: bool, by: str, note: str) -> int:
        """Insert a pending decision; its row id."""
        sql = (f"INSERT INTO {self._table} (run_id, intent_id, approve, decided_by, note, "
               "submitted) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id")

        def insert(conn: Any) -> int:
            with conn.transaction():
                row = conn.execute(sql, (run_id, intent_id, approve, by, note,
                                         time.time())).fetchone()
                conn.execute("SELECT pg_notify('openintent_runs', %s)", (run_id,))
            return int(row[0])

        return self._calls.call(insert, f"record a decision for run {run_id!r}")

    def data_version(self) -> int:
        """A number that changes when a decision is submitted (by any process) or this
        process commits (see the module docstring)."""
        sql = f"SELECT coalesce(max(id), 0) FROM {self._table}"
        row = self._calls.call(lambda conn: conn.execute(sql).fetchone(),
                               "read its data version")
        return int(row[0] if row else 0) * 1_000_003 + self._commits() % 1_000_003

    def waiting(self, run_id: str) -> list[InboxDecision]:
        """The run's pending decisions, oldest first."""
        sql = (f"SELECT {COLUMNS} FROM {self._table} WHERE run_id = %s AND status = 'pending' "
               "ORDER BY id")
        rows = self._calls.call(lambda conn: conn.execute(sql, (run_id,)).fetchall(),
                                f"read the decisions sent to run {run_id!r}")
        return [decision_of(row) for row in rows]

    def get(self, decision_id: int) -> InboxDecision | None:
        """One decision, as it is now (``None``: no such row)."""
        sql = f"SELECT {COLUMNS} FROM {self._table} WHERE id = %s"
        row = self._calls.call(lambda conn: conn.execute(sql, (decision_id,)).fetchone(),
                               f"read decision {decision_id}")
        return None if row is None else decision_of(row)

    def settle(self, decision_id: int, status: str, reason: str | None = None) -> bool:
        """Mark a pending decision ``applied`` or ``refused``; whether it was pending."""
        sql = (f"UPDATE {self._table} SET status = %s, reason = %s, settled = %s "
               "WHERE id = %s AND status = 'pending'")
        count = self._calls.call(
            lambda conn: conn.execute(sql, (status, reason, time.time(),
                                            decision_id)).rowcount,
            f"mark decision {decision_id} {status}")
        return bool(count == 1)
