"""Coordinator failover (``rt.standby``), with real processes on one SQLite file (and on one
PostgreSQL database): a standby
process takes over a run whose process was killed (at once) or hangs (after the lease's TTL,
short here: ``?lease_ttl=``), and continues it from the journal. No completed intent runs
again, in-flight ones are dispatched again, a ``coordinator_failed_over`` event and a decision
say who took over, and a hanging process that wakes up writes nothing more.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_crash_kill import (
    committed_events,
    completed,
    dispatches,
    in_flight,
    load,
    runs_of,
)

from openintent import Runtime
from openintent._stores import CommitFailed
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.errors import StoreError
from openintent.models import Event

from _postgres import with_option

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "failover_workflow.py"
INTENTS = 40


def child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    process = subprocess.Popen([sys.executable, str(CHILD), *args], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "started":
        out, err = process.communicate(timeout=60)
        raise AssertionError(f"child did not start: {line!r} {out} {err}")
    return process


def wait_for(what: str, ready: object) -> None:
    """Poll ``ready()`` (a plain pause between looks), failing after a generous bound."""
    deadline = time.monotonic() + 120
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def run_id(database: Path) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        [(portfolio_id,)] = connection.execute("SELECT id FROM runs").fetchall()
    connection.close()
    return str(portfolio_id)


def start_mid_run(tmp_path: Path, store: str) -> tuple[subprocess.Popen[str], str, Path]:
    """The active process, once layers 0 and 1 ran and layer 2 waits for the go file."""
    calls = tmp_path / "calls.txt"
    calls.touch()
    active = child("start", store, str(calls))
    wait_for("layers 0 and 1", lambda: len(calls.read_text().splitlines()) >= 10)
    if store.startswith("postgresql://"):
        [portfolio_id] = runs_of(store)
        return active, portfolio_id, calls
    return active, run_id(tmp_path / "runs.db"), calls


def check_failover(events: list[Event], active_pid: int, calls: Path) -> None:
    """The journal of a run taken over once: complete, contiguous, nothing completed re-run."""
    assert [event.seq for event in events] == list(range(len(events)))
    assert events[-1].type == "run_finished" and events[-1].data["status"] == "completed"
    [failover] = [event for event in events if event.type == "coordinator_failed_over"]
    assert failover.data["from_pid"] == active_pid
    assert "rt.standby()" in failover.data["to"]
    [decision] = [event for event in events if event.type == "decision_recorded"]
    assert decision.data["coordinator_id"] == "runtime"
    assert decision.data["decision"] == "coordinator_failed_over"
    assert decision.data["data"]["to"] == failover.data["to"]
    resumed = next(index for index, event in enumerate(events) if event.type == "run_resumed")
    before, after = events[:resumed], events[resumed:]
    assert len(completed(before)) >= 10
    assert not completed(before) & set(dispatches(after)), "a completed intent ran again"
    for intent_id in in_flight(before):
        assert dispatches(after)[intent_id] == 1, intent_id
    assert len(completed(events)) == INTENTS
    made = [tuple(line.split()[:2]) for line in calls.read_text().splitlines()]
    assert len(made) == len(set(made)), "an attempt was called twice"


def integrity_ok(database: Path | str) -> None:
    if isinstance(database, str):
        return  # PostgreSQL: the server's own business
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()


def journal(tmp_path: Path, journal_url: str) -> Path | str:
    """What committed_events reads: the SQLite file, or the PostgreSQL store's URL."""
    return tmp_path / "runs.db" if journal_url.startswith("sqlite:") else journal_url


def test_a_standby_takes_over_a_killed_coordinator_at_once(tmp_path: Path,
                                                           journal_url: str) -> None:
    database = journal(tmp_path, journal_url)
    # A long TTL: only the dead process (gone from this host) lets the standby in early.
    store = with_option(journal_url, "lease_ttl=600")
    active, portfolio_id, calls = start_mid_run(tmp_path, store)
    standby = child("standby", store, str(calls), portfolio_id)
    active.send_signal(signal.SIGKILL)
    active.communicate(timeout=60)
    (tmp_path / "calls.txt.go").touch()
    out, err = standby.communicate(timeout=120)
    assert standby.returncode == 0, (out, err)
    result = load(store, portfolio_id)
    assert result.status == "completed"
    events = list(result.events)
    check_failover(events, active.pid, calls)
    [decision] = result.decisions
    assert decision.decision == "coordinator_failed_over"
    integrity_ok(database)


def test_a_standby_takes_over_a_hanging_coordinator_after_the_ttl(tmp_path: Path,
                                                                  journal_url: str) -> None:
    database = journal(tmp_path, journal_url)
    store = with_option(journal_url, "lease_ttl=2")
    active, portfolio_id, calls = start_mid_run(tmp_path, store)
    standby = child("standby", store, str(calls), portfolio_id)
    active.send_signal(signal.SIGSTOP)
    try:
        (tmp_path / "calls.txt.go").touch()
        out, err = standby.communicate(timeout=120)
        assert standby.returncode == 0, (out, err)
        events = list(load(store, portfolio_id).events)
        check_failover(events, active.pid, calls)
        written = committed_events(database)
        assert written == len(events)
    finally:
        active.send_signal(signal.SIGCONT)
    # The old process wakes up: its renewal or its next commit is refused, and its run stops.
    try:
        out, err = active.communicate(timeout=120)
    finally:
        if active.poll() is None:
            active.kill()
            active.communicate(timeout=60)
    assert active.returncode != 0, (out, err)
    assert "completed" not in out.splitlines()  # its run did not end well
    assert "RunInUseError" in out + err or "CommitFailed" in out + err
    assert committed_events(database) == written  # nothing after the standby's events
    after = list(load(store, portfolio_id).events)
    assert [(e.seq, e.type, e.intent_id) for e in after] == [
        (e.seq, e.type, e.intent_id) for e in events]
    integrity_ok(database)


@Agent("quick")
class Quick:
    @on_assignment
    async def work(self, intent):  # type: ignore[no-untyped-def]
        return {"done": True}


@pytest.mark.asyncio
async def test_standby_on_a_run_that_ended_returns_its_result(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = PortfolioSpec(name="done", intents=[IntentSpec("a", assign="quick"),
                                               IntentSpec("b", assign="quick",
                                                          depends_on=["a"])])
    async with Runtime(agents=[Quick], store=store) as rt:
        first = await rt.run(spec)
        before = len((await rt.load(first.portfolio_id)).events)
        result = await rt.standby(first.portfolio_id)
        assert result.status == "completed"
        assert result.intents["b"].state == {"done": True}
        loaded = await rt.load(first.portfolio_id)
    assert len(loaded.events) == before  # nothing ran, nothing was written
    assert not loaded.events.of_type("coordinator_failed_over")


def test_lease_ttl_is_an_option_of_the_sqlite_url(tmp_path: Path) -> None:
    from openintent._stores.sqlite import SqliteBackend

    backend = SqliteBackend(f"sqlite:///{tmp_path / 'a.db'}?lease_ttl=2.5&synchronous=full")
    try:
        assert backend.lease_ttl == 2.5
    finally:
        backend.close()
    with pytest.raises(StoreError, match="lease_ttl"):
        SqliteBackend(f"sqlite:///{tmp_path / 'b.db'}?lease_ttl=soon")


def test_a_second_writer_of_the_same_seq_is_refused(tmp_path: Path) -> None:
    from openintent._stores.sqlite import SqliteBackend

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    one, two = SqliteBackend(url), SqliteBackend(url)
    try:
        one.create_run("r1", "run")
        event = ("run_started", 0.0, None, {"name": "run"})
        first, second = one.open_run("r1"), two.open_run("r1")
        one._write(first, 0, [event], '[["run_started",0.0,null,{"name":"run"}]]')
        with pytest.raises(CommitFailed, match="could not commit events 0-0"):
            two._write(second, 0, [event], '[["run_started",0.0,null,{"name":"x"}]]')
        assert [raw[3] for raw in two.read("r1")] == [{"name": "run"}]
    finally:
        one.close()
        two.close()
