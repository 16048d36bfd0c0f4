"""The journal file of ``sqlite:///path``: its URL, the checks made before anything is written
to it, its schema and the migrations between schema versions.

A journal file says it is one with ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and which
schema it holds with ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). Before the store writes a
byte (even the PRAGMAs that switch to WAL mode write), the file is looked at read-only: a file
that is not a SQLite database, another application's database or a journal of a newer version
is refused with a :class:`~openintent.errors.StoreError` naming it, and stays untouched. A
missing or empty file is initialised; an older journal is migrated step by step.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import attrs

from ..errors import StoreError

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "JournalFile", "prepare"]

#: ``PRAGMA application_id`` of every openintent journal ("OInt").
APPLICATION_ID = 0x4F496E74

# Each step takes the file from the version before it to its own (version 1: the runs and their
# events; version 2: run leases; version 3: client leases, and the inbox of approval
# decisions other processes send a run). A new file runs them all, in one transaction. Events are
# read back only in order and whole runs at a time, so they are stored a commit per row (the
# ``events`` view shows one row per event).
MIGRATIONS: Sequence[tuple[int, Sequence[str]]] = (
    (1, (
        "CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT NOT NULL, parent TEXT, "
        "status TEXT NOT NULL DEFAULT 'running', timebase REAL NOT NULL, started REAL, "
        "ended REAL)",
        # One row per commit: its events as one JSON array of [type, time, intent_id, data]
        # (a row per event costs ~5 µs to insert, a batch ~0.8 µs per event).
        "CREATE TABLE batches (run_id TEXT NOT NULL, first_seq INTEGER NOT NULL, "
        "events TEXT NOT NULL, PRIMARY KEY (run_id, first_seq)) WITHOUT ROWID",
        # One row per event, for reading the file with SQL (sqlite3 runs.db, a DB browser).
        # json_extract rather than ->> (SQLite 3.38+): the view must parse on older SQLite.
        "CREATE VIEW events AS SELECT b.run_id AS run_id, b.first_seq + e.key AS seq, "
        "json_extract(e.value, '$[0]') AS type, json_extract(e.value, '$[1]') AS time, "
        "json_extract(e.value, '$[2]') AS intent_id, "
        "NULLIF(json_quote(json_extract(e.value, '$[3]')), 'null') AS data "
        "FROM batches AS b, json_each(b.events) AS e",
    )),
    (2, (
        "ALTER TABLE runs ADD COLUMN lease_holder TEXT",
        "ALTER TABLE runs ADD COLUMN lease_pid INTEGER",
        "ALTER TABLE runs ADD COLUMN lease_host TEXT",
        "ALTER TABLE runs ADD COLUMN lease_expires REAL",
    )),
    (3, (
        # Approval decisions sent to a run from another process (`openintent approve`): the
        # process running the run applies each one through the run's own log and marks it
        # applied, or refused with the reason (see openintent._inbox).
        "CREATE TABLE approval_inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "run_id TEXT NOT NULL, intent_id TEXT NOT NULL, approve INTEGER NOT NULL, "
        "decided_by TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', submitted REAL NOT NULL, "
        "status TEXT NOT NULL DEFAULT 'pending', reason TEXT, settled REAL)",
        "CREATE INDEX approval_inbox_waiting ON approval_inbox (run_id, status)",
        # Client leases with fencing (openintent._leases): one row per target and scope,
        # kept after a release (holder NULL) so its token only grows. Real time (POSIX).
        "CREATE TABLE leases (target TEXT NOT NULL, scope TEXT NOT NULL, holder TEXT, "
        "token INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (target, scope)) "
        "WITHOUT ROWID",
    )),
)

#: The schema version this library writes (the last migration's).
SCHEMA_VERSION = MIGRATIONS[-1][0]

_MAGIC = b"SQLite format 3\x00"
_SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL", "extra": "EXTRA"}


@attrs.frozen
class JournalFile:
    """Where a ``sqlite:///`` URL points, and how its commits reach the disk."""

    url: str
    path: Path
    synchronous: str = "NORMAL"
    #: Seconds a run lease lasts unless renewed (``?lease_ttl=``); ``None``: the default.
    lease_ttl: float | None = None

    @classmethod
    def parse(cls, url: str) -> JournalFile:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
        ``?synchronous=full`` (each commit survives a power loss; the default ``normal``
        survives a killed process) and ``lease_ttl=SECONDS`` (how long a run's lease lasts
        unless renewed, 60 by default: a standby takes over a hanging process's run after
        it; every process on the file should use the same)."""
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.scheme != "sqlite" or parts.netloc or not path:
            raise StoreError(
                f"store {url!r} is not a SQLite journal URL: write sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        synchronous = "NORMAL"
        lease_ttl: float | None = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "synchronous" and value.lower() in _SYNCHRONOUS:
                synchronous = _SYNCHRONOUS[value.lower()]
            elif key == "lease_ttl":
                lease_ttl = _seconds(url, value)
            else:
                raise StoreError(
                    f"store {url!r}: unknown option {key}={value!r}; the options are "
                    "synchronous=normal|full|extra and lease_ttl=SECONDS"
                )
        return cls(url, Path(path), synchronous, lease_ttl)

    def connect(self) -> sqlite3.Connection:
        """A connection for the store (autocommit: transactions are begun explicitly)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30.0)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn


def _seconds(url: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise StoreError(f"store {url!r}: lease_ttl={value!r} is not a positive number of "
                         "seconds; write e.g. ?lease_ttl=5")
    return seconds


def prepare(file: JournalFile) -> None:
    """Check the file, then create, migrate or accept it (see the module docstring)."""
    version = _probe(file)
    if version == SCHEMA_VERSION:
        return
    try:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        conn = file.connect()
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot create the journal {file.path} ({file.url}): {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        # Another process may have created or migrated it since the probe.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step, statements in MIGRATIONS:
            if step > version:
                for statement in statements:
                    conn.execute(statement)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot set up the journal {file.path} ({file.url}): {exc}") from exc
    finally:
        conn.close()


def _probe(file: JournalFile) -> int:
    """The schema version of an existing journal file (0: a new or empty file), read without
    writing; :class:`StoreError` for a file the store must not touch."""
    path = file.path
    where = f"the store {file.url} ({os.fspath(path)})"
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_MAGIC))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StoreError(f"{where} cannot be read: {exc}") from exc
    if not header:
        return 0  # an empty file: a new journal
    if header != _MAGIC:
        raise StoreError(
            f"{where} is not a SQLite database (corrupt, or another kind of file); it was left "
            "untouched: give the store another path, or move the file away"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{where} cannot be opened: {exc}") from exc
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(
            f"{where} is a damaged SQLite database ({exc}); it was left untouched: restore it "
            "from a backup, or give the store another path"
        ) from exc
    finally:
        conn.close()
    if application_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{where} is an openintent journal of schema version {version}, newer than "
                f"this openintent reads ({SCHEMA_VERSION}); it was left untouched: upgrade "
                "openintent to read it"
            )
        return int(version)
    if application_id == 0 and version == 0 and not tables:
        return 0  # an empty SQLite database: a new journal
    listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    raise StoreError(
        f"{where} is another application's SQLite database (application_id "
        f"{application_id}, tables: {listed or 'none'}), not an openintent journal; it was "
        "left untouched: give the store a path of its own"
    )
