"""A throwaway PostgreSQL server for the tests: a cluster in a temporary directory, reached on
a Unix socket only, started once per test session and stopped at its end.

The server's programs are looked for in ``$OPENINTENT_PG_BIN``, then ``pg_config --bindir``,
then Debian's ``/usr/lib/postgresql/<version>/bin``. Where none is found the tests that need
the server skip, saying how to run them; with ``OPENINTENT_REQUIRE_POSTGRES=1`` (``.ci/run``
sets it) that skip is a failure instead, so CI always runs them.

As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_bindir", "require_or_skip", "with_option"]

REQUIRE = "OPENINTENT_REQUIRE_POSTGRES"


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are, or ``None``."""
    candidates: list[str] = []
    if os.environ.get("OPENINTENT_PG_BIN"):
        candidates.append(os.environ["OPENINTENT_PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True,
                                             text=True, check=True).stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def require_or_skip(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when CI requires PostgreSQL."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1 makes this a failure, not a skip)")
    pytest.skip(reason)


class PostgresServer:
    """One throwaway cluster (see the module docstring). ``url(dbname)`` names a database on
    it; :meth:`database` creates a fresh one; :meth:`stop` / :meth:`start` restart it (the
    tests of reconnecting)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="openintent-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.socket_dir.mkdir()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._numbers = itertools.count(1)
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--no-sync"])
        # Tests want speed, not durability of the test cluster itself.
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "listen_addresses = ''\nmax_connections = 200\n"
                       f"unix_socket_directories = '{self.socket_dir}'\n")

    def _run(self, argv: Sequence[str]) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True)

    def start(self) -> None:
        """Start the server (and wait until it accepts connections)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                   "-l", str(self.root / "server.log"), "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: ``fast`` or ``immediate``, as ``pg_ctl stop -m``)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode,
                   "stop"])

    def url(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URL of database ``dbname`` on this server."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def database(self) -> str:
        """Create a fresh, empty database and return its URL."""
        import psycopg

        name = f"openintent_test_{os.getpid()}_{next(self._numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def with_option(url: str, option: str) -> str:
    """A store URL with one more query option (``lease_ttl=600``), whether it has a query
    already (a ``postgresql://...?host=/socket/dir``) or not."""
    return f"{url}{'&' if '?' in url else '?'}{option}"
