"""The inbox of a SQLite journal: approval decisions sent to a run by another process.

``openintent approve`` (or :func:`openintent._inbox.submit_decision`) inserts a row into the
``approval_inbox`` table (schema version 3); the process running the run (it holds the run's
lease) applies it through the run's own log and marks it ``applied``, or ``refused`` with the
reason. The run's log has one writer, always: the inbox is only a request.

Noticing a new row is cheap: ``PRAGMA data_version`` (a counter in memory that changes when
another connection commits to the file) is compared before the table is read.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from ..errors import StoreError

__all__ = ["COLUMNS", "InboxDecision", "InboxLease", "SqliteInbox", "decision_of"]

#: The columns a decision is read from (:func:`decision_of`), in both stores.
COLUMNS = ("id, run_id, intent_id, approve, decided_by, note, submitted, status, reason, "
            "settled")


@attrs.frozen
class InboxDecision:
    """One row of the inbox: a decision on a run's approval request, and what became of it.

    ``status``: ``pending`` (not applied yet: the running process applies it within about a
    second; a run no process runs now applies it once resumed), ``applied`` (the run's log has
    its ``approval_granted``/``approval_denied``) or ``refused`` (``reason`` says why).
    """

    id: int
    run_id: str
    intent_id: str
    approve: bool
    by: str
    note: str
    submitted_at: datetime
    status: str
    reason: str | None = None
    settled_at: datetime | None = None


def decision_of(row: tuple[Any, ...]) -> InboxDecision:
    """The decision of an inbox row (its :data:`COLUMNS`)."""
    id_, run_id, intent_id, approve, by, note, submitted, status, reason, settled = row
    return InboxDecision(
        int(id_), str(run_id), str(intent_id), bool(approve), str(by), str(note),
        datetime.fromtimestamp(float(submitted), UTC),
        str(status), None if reason is None else str(reason),
        None if settled is None else datetime.fromtimestamp(float(settled), UTC),
    )


class InboxLease:
    """Whether a run's decisions are applied now, in both stores' inboxes: they set
    ``_lease_of`` (the backend's ``run_lease``) and ``_gone`` (its ``holder_gone``)."""

    _lease_of: Callable[[str], dict[str, Any] | None]
    _gone: Callable[[dict[str, Any]], bool]

    def lease_live(self, run_id: str) -> bool:
        """Whether a process holds the run's lease now (it runs the run and applies the
        decisions sent to it)."""
        lease = self._lease_of(run_id)
        return (lease is not None and (lease["expires"] or 0) > time.time()
                and not self._gone(lease))


class SqliteInbox(InboxLease):
    """The inbox of one journal file, over the backend's own connection (used on the event
    loop's thread, like the backend's reads)."""

    def __init__(self, conn: sqlite3.Connection, url: str, path: Path,
                 lease_of: Callable[[str], dict[str, Any] | None],
                 gone: Callable[[dict[str, Any]], bool]) -> None:
        self._conn = conn
        self._lease_of = lease_of  # who holds a run's lease (the backend's run_lease)
        self._gone = gone  # whether a lease's process is known to be gone (holder_gone)
        self._where = f"the journal {path} ({url})"

    def _failed(self, what: str, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"{self._where} could not {what}: {exc}")

    def submit(self, run_id: str, intent_id: str, approve: bool, by: str, note: str) -> int:
        """Insert a pending decision; its row id."""
        try:
            cursor = self._conn.execute(
                "INSERT INTO approval_inbox (run_id, intent_id, approve, decided_by, note, "
                "submitted) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, intent_id, int(approve), by, note, time.time()))
        except sqlite3.Error as exc:
            raise self._failed(f"record a decision for run {run_id!r}", exc) from exc
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes when another connection (another
        process, or this one's writer) commits to the file."""
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._failed("read its data version", exc) from exc

    def waiting(self, run_id: str) -> list[InboxDecision]:
        """The run's pending decisions, oldest first."""
        try:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM approval_inbox WHERE run_id = ? AND status = 'pending' "
                "ORDER BY id", (run_id,)).fetchall()
        except sqlite3.Error as exc:
            raise self._failed(f"read the decisions sent to run {run_id!r}", exc) from exc
        return [decision_of(row) for row in rows]

    def get(self, decision_id: int) -> InboxDecision | None:
        """One decision, as it is now (``None``: no such row)."""
        try:
            row = self._conn.execute(f"SELECT {COLUMNS} FROM approval_inbox WHERE id = ?",
                                     (decision_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(f"read decision {decision_id}", exc) from exc
        return None if row is None else decision_of(row)

    def settle(self, decision_id: int, status: str, reason: str | None = None) -> bool:
        """Mark a pending decision ``applied`` or ``refused``; whether it was pending."""
        try:
            cursor = self._conn.execute(
                "UPDATE approval_inbox SET status = ?, reason = ?, settled = ? "
                "WHERE id = ? AND status = 'pending'",
                (status, reason, time.time(), decision_id))
        except sqlite3.Error as exc:
            raise self._failed(f"mark decision {decision_id} {status}", exc) from exc
        return cursor.rowcount == 1
