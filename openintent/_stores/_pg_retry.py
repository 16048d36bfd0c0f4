"""Retrying a PostgreSQL operation through a server restart or a broken connection.

Every database call of the PostgreSQL store goes through :func:`retrying`: an operation that
fails with :class:`psycopg.OperationalError` (the server restarting or shutting down, a
broken connection, no connection left in the pool, a deadlock or serialization failure) is
run again, with a growing pause, until it succeeds or a deadline passes; then it raises
:class:`~openintent.errors.StoreError` naming the database (never the password) and what
could not be done. Other errors (a constraint violated, bad SQL) are not retried.

An operation that may run twice must be idempotent: the statement may have committed before
the connection broke. The store's writes are (a batch keyed by run and position, a task
keyed by run, intent and attempt, finishes and effects fenced by the task's token).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import structlog
from psycopg_pool import PoolClosed

from ..errors import StoreError
from ._pg_schema import PgUrl, where_of

__all__ = ["DEADLINE", "retrying", "where"]

T = TypeVar("T")

#: Seconds a failing operation is retried before it raises :class:`StoreError`.
DEADLINE = 60.0

_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 2.0


def where(url: PgUrl) -> str:
    """The database of a store URL, for messages: ``the database NAME on HOST`` (no
    password)."""
    return where_of(url)


def retrying(operation: Callable[[], T], what: str, url: PgUrl, *,
             deadline: float = DEADLINE, stop: threading.Event | None = None,
             after_failure: Callable[[], None] | None = None,
             warning: str = "database operation failed; retrying") -> T:
    """Run ``operation()`` (blocking: call it off the event loop's thread) and return its
    result, retrying :class:`psycopg.OperationalError` for up to ``deadline`` seconds with
    growing pauses (0.05 s, doubling, at most 2 s). Then, or at once when ``stop`` is set or
    the connection pool is closed (the store is closing), raise :class:`StoreError` (its
    ``__cause__``: the last error); ``what`` says what could not be done (``"claim tasks for
    worker w1"``). ``after_failure()`` runs after each failed try (say, to let the pool drop
    its other dead connections); ``warning`` is the log line's event.

    >>> retrying(lambda: pool_query(), "list the runs", url)  # doctest: +SKIP
    """
    started = time.monotonic()
    pause = _FIRST_PAUSE
    tries = 0
    while True:
        try:
            return operation()
        except psycopg.OperationalError as exc:
            tries += 1
            left = started + deadline - time.monotonic()
            if isinstance(exc, PoolClosed) or (stop is not None and stop.is_set()):
                raise StoreError(
                    f"could not {what} in {where(url)}: the store was closed while the "
                    f"operation was failing ({_reason(exc)})") from exc
            if left <= 0:
                raise StoreError(
                    f"could not {what}: {where(url)} kept failing for {deadline:g} seconds "
                    f"({tries} tries; last: {_reason(exc)}); check that the PostgreSQL server "
                    "is running and reachable with the store URL") from exc
            if tries == 1 or tries % 10 == 0:
                structlog.get_logger("openintent").warning(
                    warning, what=what, database=where(url),
                    error=_reason(exc), tries=tries, seconds_left=round(left, 1))
            if after_failure is not None:
                after_failure()
            wait = min(pause, left)
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
            pause = min(pause * 2, _LONGEST_PAUSE)


def _reason(exc: BaseException) -> str:
    """The first line of an error's message (libpq's can run over several)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
