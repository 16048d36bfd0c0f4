"""Fixtures and settings shared by the library's own tests.

The openintent pytest plugin (``openintent.testing.pytest_plugin``) gives every test its own
registry; what is here concerns only this test suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings

from _postgres import PostgresServer, find_bindir, require_or_skip

pytest_plugins = ["pytester"]

# The suite must pass on a loaded machine: how fast Hypothesis *generates* examples depends on
# the load, not on openintent, so the "too slow" health check is off. (Every property test
# sets deadline=None itself, for the same reason.)
settings.register_profile("openintent", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("openintent")


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    """structlog at its defaults during the test and again after it.

    Use it in every test that configures structlog, ``structlog.testing.capture_logs()``
    included (it leaves ``structlog.is_configured()`` true), so no configuration leaks into
    the tests that run after it.
    """
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the whole session (see ``tests/_postgres.py``);
    skips (or, with ``OPENINTENT_REQUIRE_POSTGRES=1``, fails) where none can be started."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require_or_skip("psycopg is not installed: pip install -e '.[test]' installs it")
    bindir = find_bindir()
    if bindir is None:
        require_or_skip(
            "no PostgreSQL server programs (initdb, pg_ctl) found: install PostgreSQL 15 "
            "(Debian: apt install postgresql-15) or set OPENINTENT_PG_BIN to their directory"
        )
        raise AssertionError("unreachable")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh durable store, once per durable backend: a SQLite file in ``tmp_path``, then a
    fresh database on the session's PostgreSQL server (for the tests that must hold on
    both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return str(request.getfixturevalue("postgres_url"))

