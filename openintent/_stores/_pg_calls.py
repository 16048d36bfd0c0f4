"""How the PostgreSQL store talks to its database: a :class:`psycopg_pool.ConnectionPool` of
autocommit connections, and every call made through :meth:`PgCalls.call`, which retries a
call that failed because the connection did (the server restarted, the network dropped)
with backoff until a deadline, then raises a :class:`~openintent.errors.StoreError` naming
the database.

Only the SYNC psycopg API is used (its async API is asyncio-only; the runtime runs on trio
too): a call blocks the thread that makes it, the journal writer's thread for commits, the
event loop's for the short reads and row updates the backend makes at once (as the SQLite
journal does).

The retrying is :func:`._pg_retry.retrying`'s (the task queue's too). A call is retried
whole, so it must be safe to repeat: the callers make each one a single statement or one
transaction, and the journal's commits check on a retry whether their row
is there already (a commit whose acknowledgement was lost).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from ..errors import StoreError
from ._pg_retry import DEADLINE, retrying
from ._pg_schema import PgUrl, prepare

__all__ = ["RETRY_DEADLINE", "PgCalls"]

T = TypeVar("T")

#: Seconds a call keeps retrying a lost connection before it gives up.
RETRY_DEADLINE = DEADLINE


class PgCalls:
    """The pool of one backend and the calls made through it (see the module docstring)."""

    def __init__(self, url: PgUrl, where: str, pool_size: int = 4) -> None:
        self.url = url
        #: The database, for messages ("the database runs on /tmp/sock (postgresql://...)").
        self.where = where
        self.deadline = RETRY_DEADLINE
        try:
            with psycopg.connect(url.conninfo, connect_timeout=10) as conn:
                prepare(conn, url)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open {where}: {str(exc).strip()}") from exc
        self.pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = \
            psycopg_pool.ConnectionPool(
                url.conninfo, min_size=1, max_size=max(1, pool_size), open=False,
                kwargs={"autocommit": True}, num_workers=1, timeout=5.0,
                reconnect_timeout=RETRY_DEADLINE, name=f"openintent {url.schema}")
        self.pool.open(wait=False)
        # The connection of a client's write in progress on this thread (its calls join
        # its transaction, as the SQLite journal's do on its one connection).
        self._local = threading.local()

    def call(self, fn: Callable[[psycopg.Connection[Any]], T], what: str) -> T:
        """``fn(connection)``, retried while the connection fails, up to the deadline;
        another database error is a :class:`StoreError` saying it could not ``what``."""
        joined: psycopg.Connection[Any] | None = getattr(self._local, "tx", None)
        if joined is not None:  # inside a client's transaction: it cannot be repeated alone
            try:
                return fn(joined)
            except psycopg.Error as exc:
                raise self.failed(what, exc) from exc
        give_up = time.monotonic() + self.deadline

        def attempt() -> T:
            wait = min(5.0, max(0.05, give_up - time.monotonic()))
            try:
                with self.pool.connection(timeout=wait) as conn:
                    return fn(conn)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise self.failed(what, exc) from exc

        try:
            return retrying(attempt, what, self.url, deadline=self.deadline,
                            after_failure=self._drop_dead,
                            warning="database connection failed; retrying")
        except StoreError as exc:
            cause = exc.__cause__
            if not isinstance(cause, psycopg.OperationalError):
                raise
            raise StoreError(
                f"{self.where} could not {what}: {cause} (gave up after "
                f"{self.deadline:g} s of retries)".replace(":  (", ": (")) from cause

    def _drop_dead(self) -> None:
        """After a failed call: let the pool drop its other dead connections at once."""
        try:
            self.pool.check()
        except psycopg.Error:
            pass

    def failed(self, what: str, exc: BaseException) -> StoreError:
        """The error of a call that could not ``what``."""
        return StoreError(f"{self.where} could not {what}: {str(exc).strip()}")

    @contextmanager
    def transaction(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one connection of this thread: every :meth:`call` made on this
        thread meanwhile joins it (a client's write and the lease checks within it)."""
        if getattr(self._local, "tx", None) is not None:
            yield self._local.tx
            return
        try:
            conn = self.pool.getconn()
        except psycopg.Error as exc:
            raise self.failed(what, exc) from exc
        try:
            with conn.transaction():
                self._local.tx = conn
                try:
                    yield conn
                finally:
                    self._local.tx = None
        except psycopg.Error as exc:
            raise self.failed(what, exc) from exc
        finally:
            self.pool.putconn(conn)

    def close(self) -> None:
        """Close the pool (its connections and threads)."""
        self.pool.close(timeout=5.0)
