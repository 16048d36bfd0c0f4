"""Crash safety, proven by killing real processes: a workflow journaled to SQLite is killed
with SIGKILL at seeded random points, resumed in a fresh process (sometimes killed again), and
the journal and the agent's own record of its calls are checked against what durability
promises:

* the run completes, every intent completed;
* no intent whose completion was journaled before a kill runs again;
* an intent in flight at a kill gets exactly one more attempt (the agent never fails here);
* every call the agent made was journaled as a ``dispatched`` event first, once;
* no event is lost or duplicated: sequence numbers run 0, 1, 2, ... ;
* ``PRAGMA integrity_check`` says ``ok``.

The kill points are a seeded sample of journal positions: the test watches the file and kills
the child once that many events are committed (it dies a little later, wherever it is then).
The checks hold at any point, so a slow machine only moves the kills a little.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from openintent import Runtime
from openintent.models import Event, RunResult

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "crash_workflow.py"
INTENTS = 40
# run_started, then created, ready, dispatched, completed per intent, then run_finished.
FULL_RUN_EVENTS = 2 + 4 * INTENTS


def child(mode: str, store: str, calls: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, store, str(calls), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def committed_events(database: Path | str) -> int:
    """How many events the journal holds now (read-only: the child writes meanwhile): a
    SQLite file, or a ``postgresql://`` store (its URL)."""
    if isinstance(database, str):
        return pg_committed_events(database)
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return 0  # not created yet
    try:
        row = connection.execute(
            "SELECT coalesce(sum(json_array_length(events)), 0) FROM batches").fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet
    finally:
        connection.close()


def pg_committed_events(store: str) -> int:
    """How many events a ``postgresql://`` store holds now (0 before its schema exists)."""
    import psycopg

    from openintent._stores._pg_schema import PgUrl

    with psycopg.connect(PgUrl.parse(store).conninfo, autocommit=True) as connection:
        try:
            row = connection.execute("SELECT coalesce(sum(json_array_length(events::json)), 0) "
                                     "FROM openintent.batches").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0  # the schema is not there yet
    return int(row[0]) if row else 0


def kill_at(process: subprocess.Popen[str], database: Path | str, target: int) -> bool:
    """Wait for the child's ``started`` line, then SIGKILL it as soon as the journal holds
    ``target`` events (the child runs on meanwhile, so it dies a little after that commit).
    Returns whether it was killed (False: it finished first)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "started":
        out, err = process.communicate(timeout=60)
        raise AssertionError(f"child did not start: {line!r} {out} {err}")
    deadline = time.monotonic() + 60
    while process.poll() is None and committed_events(database) < target:
        assert time.monotonic() < deadline, "the child made no progress for 60 s"
        time.sleep(0.0005)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)  # reaps it and closes its pipes
    return True


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, (out, err)
    return out


def runs_of(store: str) -> list[str]:
    async def listing() -> list[str]:
        async with Runtime(agents=[], store=store) as rt:
            return [info.portfolio_id for info in rt.runs()]

    return asyncio.run(listing())


def load(store: str, portfolio_id: str) -> RunResult:
    async def loading() -> RunResult:
        async with Runtime(agents=[], store=store) as rt:
            return await rt.load(portfolio_id)

    return asyncio.run(loading())


def dispatches(events: list[Event]) -> Counter[str]:
    return Counter(event.intent_id for event in events if event.type == "dispatched")


def completed(events: list[Event]) -> set[str]:
    return {event.intent_id for event in events if event.type == "completed"}  # type: ignore[misc]


def in_flight(events: list[Event]) -> dict[str, int]:
    """Intents dispatched and not finished when the log stops: the seq of that dispatch."""
    running: dict[str, int] = {}
    for event in events:
        if event.type == "dispatched":
            running[event.intent_id] = event.seq  # type: ignore[index]
        elif event.type in ("completed", "failed", "cancelled", "attempt_failed"):
            running.pop(event.intent_id, None)  # type: ignore[arg-type]
    return running


def crash_and_resume(tmp_path: Path, rng: random.Random, kills: int,
                     postgres: str | None = None) -> int:
    """One run: started, killed, then resumed (and killed again ``kills - 1`` times) until it
    completes; every invariant checked after each kill and at the end. In a SQLite file in
    ``tmp_path``, or in the ``postgres`` store (a fresh database's URL)."""
    tmp_path.mkdir()
    database: Path | str = tmp_path / "runs.db" if postgres is None else postgres
    store = f"sqlite:///{database}" if postgres is None else postgres
    calls = tmp_path / "calls.txt"
    calls.touch()
    process = child("start", store, calls)
    killed = kill_at(process, database, rng.randint(1, FULL_RUN_EVENTS - 2))
    if not killed:
        finish(process)
    snapshots: list[list[Event]] = []
    portfolio_id: str | None = None
    for round_ in range(kills):
        if not killed:
            break
        ids = runs_of(store)
        if not ids:  # killed before run_started was committed: nothing to resume
            assert round_ == 0
            return 0
        [portfolio_id] = ids
        snapshots.append(list(load(store, portfolio_id).events))
        process = child("resume", store, calls, portfolio_id)
        so_far = len(snapshots[-1])
        killed = round_ < kills - 1 and kill_at(
            process, database, rng.randint(so_far + 1, so_far + FULL_RUN_EVENTS // 2))
        if not killed:
            finish(process)
    if portfolio_id is None:
        [portfolio_id] = runs_of(store)
    result = load(store, portfolio_id)
    events = list(result.events)

    # The run completed, every intent once.
    assert result.status == "completed", result.status
    assert len(result.intents) == INTENTS
    assert all(intent.status == "completed" for intent in result.intents.values())
    # Nothing lost or duplicated: seq is 0, 1, 2, ...
    assert [event.seq for event in events] == list(range(len(events)))
    counts = dispatches(events)
    for snapshot in snapshots:
        # The journal only grows: what was there at a kill is still there, unchanged.
        assert [(e.seq, e.type, e.intent_id) for e in events[:len(snapshot)]] == [
            (e.seq, e.type, e.intent_id) for e in snapshot]
        later = dispatches(events[len(snapshot):])
        # An acknowledged completion never runs again.
        assert not (completed(snapshot) & set(later)), "a completed intent ran again"
        # An intent in flight at the kill gets one more attempt (before the next kill).
        for intent_id in in_flight(snapshot):
            assert later[intent_id] >= 1, intent_id
    # Each intent's attempts: one, plus one per dispatch a kill interrupted (two kills may
    # catch the same dispatch, when the resume between them died before dispatching again).
    interrupted = {(intent_id, seq) for snapshot in snapshots
                   for intent_id, seq in in_flight(snapshot).items()}
    for intent_id, count in counts.items():
        caught = sum(intent == intent_id for intent, _seq in interrupted)
        assert count == 1 + caught, (intent_id, count, caught)
    # Every call the agent made was journaled (dispatched, that attempt) before it ran, once.
    journaled = {(e.intent_id, e.data["attempt"]) for e in events if e.type == "dispatched"}
    made = [tuple(line.split()) for line in calls.read_text().splitlines()]
    made_pairs = [(intent_id, int(attempt)) for intent_id, attempt in made]
    assert len(made_pairs) == len(set(made_pairs)), "an attempt was called twice"
    assert set(made_pairs) <= journaled
    if postgres is None:
        with sqlite3.connect(database) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        connection.close()
    # How many kills caught the run unfinished (the callers check the sample was useful).
    return sum(not any(e.type == "run_finished" for e in snapshot) for snapshot in snapshots)


def test_killed_runs_resume_without_losing_or_repeating_work(tmp_path: Path) -> None:
    caught = sum(crash_and_resume(tmp_path / str(case), random.Random(case), kills=1 + case % 3)
                 for case in range(8))
    assert caught >= 4, f"only {caught} kills caught the run unfinished"


def test_killed_runs_resume_on_postgresql_too(tmp_path: Path, postgres_server: Any) -> None:
    caught = sum(crash_and_resume(tmp_path / str(case), random.Random(case), 1 + case % 2,
                                  postgres_server.database())
                 for case in (1, 2, 4))
    assert caught >= 1, f"only {caught} kills caught the run unfinished"


@pytest.mark.slow
def test_many_kills_at_seeded_random_points(tmp_path: Path) -> None:
    caught = sum(crash_and_resume(tmp_path / str(case), random.Random(case), kills=1 + case % 4)
                 for case in range(8, 30))
    assert caught >= 11, f"only {caught} kills caught the run unfinished"
