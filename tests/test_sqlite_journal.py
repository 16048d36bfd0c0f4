"""The SQLite journal backend (``sqlite:///path``): its URL, the files it refuses and leaves
untouched, schema versions and migrations, what it reads back, run leases, and closing."""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from openintent import StoreError
from openintent._stores import open_backend
from openintent._stores._sqlite_file import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    JournalFile,
)
from openintent._stores.sqlite import SqliteBackend
from openintent.errors import RunInUseError, RunNotFoundError


def url_of(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}{query}"  # an absolute path: sqlite:////tmp/...


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def backend(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = SqliteBackend(url_of(tmp_path / "runs.db"))
    yield opened
    opened.close()


def commit(backend: SqliteBackend, log) -> None:  # type: ignore[no-untyped-def]
    """Commit what ``log`` holds (as the runtime's flusher does), from a sync test."""
    anyio.run(log.wait_committed, len(log))


# ---------------------------------------------------------------------------- URLs


def test_a_relative_url_is_relative_to_the_working_directory(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_backend("sqlite:///sub/dir/runs.db")
    try:
        assert isinstance(backend, SqliteBackend)
        assert (tmp_path / "sub" / "dir" / "runs.db").exists()
    finally:
        backend.close()


def test_url_options() -> None:
    assert JournalFile.parse("sqlite:////abs/runs.db").path == Path("/abs/runs.db")
    assert JournalFile.parse("sqlite:///rel.db").path == Path("rel.db")
    assert JournalFile.parse("sqlite:///rel.db?synchronous=full").synchronous == "FULL"
    assert JournalFile.parse("sqlite:///rel.db").synchronous == "NORMAL"
    with pytest.raises(StoreError, match="unknown option fsync"):
        JournalFile.parse("sqlite:///rel.db?fsync=1")
    with pytest.raises(StoreError, match="not a SQLite journal URL"):
        JournalFile.parse("sqlite://host/rel.db")


def test_synchronous_full_is_set_on_the_connections(tmp_path: Path) -> None:
    backend = SqliteBackend(url_of(tmp_path / "runs.db", "?synchronous=full"))
    try:
        assert backend._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert backend._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        backend.close()


# ---------------------------------------------------------------------------- files


def test_a_new_file_gets_the_schema_its_id_and_version(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SqliteBackend(url_of(path)).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_an_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.touch()
    backend = SqliteBackend(url_of(path))
    try:
        assert backend.runs() == []
    finally:
        backend.close()
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"


def test_a_corrupt_file_is_refused_naming_it_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.write_bytes(os.urandom(8192))
    before = digest(path)
    with pytest.raises(StoreError, match=f"{path}.*not a SQLite database"):
        open_backend(url_of(path))
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]


def test_a_damaged_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 100)
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(4096 - 100)  # the schema page, past the header
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StoreError, match=f"{path}"):
        open_backend(url_of(path))
    assert digest(path) == before


def test_another_applications_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match=f"{path}.*another application's.*customers"):
        open_backend(url_of(path))
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal, no -shm
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched
    finally:
        conn.close()


def test_a_journal_of_a_newer_version_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SqliteBackend(url_of(path)).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match=f"{path}.*version {SCHEMA_VERSION + 1}.*upgrade"):
        open_backend(url_of(path))
    assert digest(path) == before


def test_an_older_journal_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0][1]:  # a version-1 journal: no run leases yet
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO runs (id, name, timebase, started) VALUES ('pf_old', 'old', 0, 5)")
    conn.execute("INSERT INTO batches VALUES ('pf_old', 0, ?)",
                 ('[["run_started",5.0,null,{"name":"old"}],'
                  '["created",5.0,"in_old_0",["A",[],"w",null]]]',))
    conn.close()
    backend = SqliteBackend(url_of(path))
    try:
        assert backend._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [info.portfolio_id for info in backend.runs()] == ["pf_old"]
        assert backend.read("pf_old")[1] == ("created", 5.0, "in_old_0", ("A", [], "w", None))
        backend.acquire_run("pf_old", "resume-1")  # the lease columns came with version 2
    finally:
        backend.close()


# ---------------------------------------------------------------------------- runs


def test_read_gives_the_shapes_of_the_live_log(backend: SqliteBackend) -> None:
    log = backend.create_run("pf_1", "first", timebase=1_767_225_600.0)
    events = [
        ("run_started", 1.0, None, {"name": "first", "intents": 1, "coordinator": None}),
        ("created", 1.0, "in_1_0", ("A", ("B",), ("a", "b"), {"k": [1, 2.5]})),
        ("ready", 1.5, "in_1_0", None),
        ("dispatched", 2.0, "in_1_0", (1, "a,b")),
        ("completed", 3.25, "in_1_0", {"out": {"nested": [True, None, "é"]}}),
        ("run_finished", 4.0, None, {"status": "completed"}),
    ]
    log.extend(events)
    commit(backend, log)
    back = backend.read("pf_1")
    assert back == [
        events[0],
        ("created", 1.0, "in_1_0", ("A", ["B"], ["a", "b"], {"k": [1, 2.5]})),
        *events[2:],
    ]
    assert type(back[3][3]) is tuple and type(back[4][3]) is dict
    [info] = backend.runs()
    assert (info.portfolio_id, info.name, info.status, info.parent) == (
        "pf_1", "first", "completed", None)
    assert info.started_at is not None and info.started_at.timestamp() == 1_767_225_601.0
    assert info.ended_at is not None and info.ended_at.timestamp() == 1_767_225_604.0
    # the events view: one row per event, seq from 0
    rows = backend._conn.execute(
        "SELECT seq, type, data FROM events WHERE run_id = 'pf_1' ORDER BY seq").fetchall()
    assert [row[:2] for row in rows] == [(seq, event[0]) for seq, event in enumerate(events)]
    assert rows[2][2] is None


def test_runs_are_listed_oldest_first_with_their_parent(backend: SqliteBackend) -> None:
    backend.create_run("pf_b", "outer")
    backend.create_run("pf_a", "inner", parent="pf_b")
    listed = backend.runs()
    assert [(info.portfolio_id, info.status, info.parent) for info in listed] == [
        ("pf_b", "running", None), ("pf_a", "running", "pf_b")]
    assert listed[0].started_at is None


def test_a_run_id_is_created_once_across_backends(tmp_path: Path) -> None:
    first = SqliteBackend(url_of(tmp_path / "runs.db"))
    second = SqliteBackend(url_of(tmp_path / "runs.db"))
    try:
        first.create_run("pf_1", "first")
        with pytest.raises(ValueError, match="pf_1"):
            second.create_run("pf_1", "again")
    finally:
        first.close()
        second.close()


def test_open_run_continues_a_run_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    backend = SqliteBackend(url_of(path))
    log = backend.create_run("pf_1", "first", timebase=100.0)
    log.append(("run_started", 0.0, None, {"name": "first"}))
    commit(backend, log)
    backend.close()
    again = SqliteBackend(url_of(path))
    try:
        reopened = again.open_run("pf_1")
        assert list(reopened) == [("run_started", 0.0, None, {"name": "first"})]
        assert reopened.committed == 1 and reopened.timebase == 100.0
        reopened.append(("ready", 1.0, "in_1_0", None))
        commit(again, reopened)
        assert [event[0] for event in again.read("pf_1")] == ["run_started", "ready"]
        with pytest.raises(RunNotFoundError, match=r"holds no run 'pf_x'.*rt\.runs\(\)"):
            again.open_run("pf_x")
        with pytest.raises(KeyError):
            again.read("pf_x")
    finally:
        again.close()


def test_close_writes_what_was_appended_and_closes_the_connections(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    backend = SqliteBackend(url_of(path))
    log = backend.create_run("pf_1", "first")
    log.append(("run_started", 0.0, None, None))
    backend.close()
    backend.close()  # twice: nothing more
    with pytest.raises(sqlite3.ProgrammingError):
        backend._writer.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError):
        backend._conn.execute("SELECT 1")
    reader = SqliteBackend(url_of(path))
    try:
        assert reader.read("pf_1") == [("run_started", 0.0, None, None)]
    finally:
        reader.close()


# ---------------------------------------------------------------------------- leases


def test_a_run_lease_refuses_another_live_holder_naming_it(tmp_path: Path) -> None:
    url = url_of(tmp_path / "runs.db")
    mine, other = SqliteBackend(url), SqliteBackend(url)
    try:
        mine.create_run("pf_1", "first")
        mine.acquire_run("pf_1", "resume-1")
        mine.acquire_run("pf_1", "resume-1")  # the holder again: fine
        with pytest.raises(RunInUseError,
                           match=rf"in use by resume-1 \(pid {os.getpid()} on host "
                                 rf"{socket.gethostname()}\) until "):
            other.acquire_run("pf_1", "resume-2")
        other.release_run("pf_1", "resume-2")  # not the holder: ignored
        mine.release_run("pf_1", "resume-1")
        other.acquire_run("pf_1", "resume-2")
    finally:
        mine.close()
        other.close()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    url = url_of(tmp_path / "runs.db")
    path = tmp_path / "runs.db"
    backend = SqliteBackend(url)
    backend.create_run("pf_1", "first")
    backend.close()
    # Another process takes the lease and dies without giving it back.
    code = (f"from openintent._stores.sqlite import SqliteBackend\n"
            f"b = SqliteBackend({url!r}); b.acquire_run('pf_1', 'crashed'); import os\n"
            f"os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})
    conn = sqlite3.connect(path)
    held = conn.execute("SELECT lease_holder, lease_expires FROM runs").fetchone()
    conn.close()
    assert held[0] == "crashed"
    again = SqliteBackend(url)
    try:
        again.acquire_run("pf_1", "resume")  # at once, its TTL not over
        assert again._conn.execute("SELECT lease_holder, lease_pid FROM runs").fetchone() == (
            "resume", os.getpid())
        again.release_run("pf_1", "resume")
        assert again._conn.execute("SELECT lease_holder FROM runs").fetchone() == (None,)
    finally:
        again.close()


def test_an_expired_lease_of_another_host_is_taken_over(backend: SqliteBackend) -> None:
    backend.create_run("pf_1", "first")
    backend._conn.execute("UPDATE runs SET lease_holder = 'far', lease_pid = 1, "
                          "lease_host = 'elsewhere', lease_expires = 4102444800")
    with pytest.raises(RunInUseError, match="far.*pid 1 on host elsewhere.*2100-01-01"):
        backend.acquire_run("pf_1", "here")
    backend._conn.execute("UPDATE runs SET lease_expires = 1")
    backend.acquire_run("pf_1", "here")
    with pytest.raises(RunNotFoundError):
        backend.acquire_run("pf_x", "here")

