"""The PostgreSQL retry helper: an operation failing with psycopg.OperationalError (a server
restarting, a broken connection) is run again until it succeeds or the deadline passes, then
a StoreError names the database and what could not be done. (The tests of the queue and the
journal show it through a real server restart; these pin the rules.)"""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg_pool import PoolClosed

from openintent._stores._pg_retry import retrying
from openintent._stores._pg_schema import PgUrl
from openintent.errors import StoreError

URL = PgUrl.parse("postgresql://app:s3cret@db.example/runs")


def failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return calls, operation


def test_an_operational_error_is_retried_until_the_operation_succeeds() -> None:
    calls, operation = failing(3, psycopg.OperationalError("server closed the connection"))
    assert retrying(operation, "read runs", URL) == "done"  # type: ignore[arg-type]
    assert len(calls) == 4


def test_other_errors_are_not_retried() -> None:
    calls, operation = failing(1, psycopg.errors.UniqueViolation("duplicate key"))
    with pytest.raises(psycopg.errors.UniqueViolation):
        retrying(operation, "read runs", URL)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_past_the_deadline_a_store_error_names_the_database_and_the_operation() -> None:
    calls, operation = failing(10**6, psycopg.OperationalError("connection refused\nmore"))
    with pytest.raises(StoreError) as caught:
        retrying(operation, "claim tasks", URL, deadline=0.2)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("could not claim tasks: the database runs on db.example kept "
                              "failing for 0.2 seconds")
    assert "OperationalError: connection refused" in message and "more" not in message
    assert "s3cret" not in message and len(calls) >= 2
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_a_store_closing_stops_the_retries() -> None:
    stop = threading.Event()
    stop.set()
    calls, operation = failing(10**6, psycopg.OperationalError("gone"))
    with pytest.raises(StoreError, match="was closed while the operation was failing"):
        retrying(operation, "claim tasks", URL, stop=stop)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_closed_pool_is_not_retried() -> None:
    calls, operation = failing(10**6, PoolClosed("the pool 'pool-1' is already closed"))
    with pytest.raises(StoreError, match="was closed while the operation was failing"):
        retrying(operation, "claim tasks", URL)  # type: ignore[arg-type]
    assert len(calls) == 1
