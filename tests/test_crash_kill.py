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

The kill points are random in real time (a seeded sample of delays); the checks hold at any
point, so the test cannot fail on a slow machine, only find more or fewer interesting points.
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

import pytest

from openintent import Runtime
from openintent.models import Event, RunResult

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "crash_workflow.py"
INTENTS = 40


def child(mode: str, store: str, calls: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    return subprocess.Popen(
        [sys.executable, str(CHILD), mode, store, str(calls), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def kill_after(process: subprocess.Popen[str], delay: float) -> bool:
    """Wait for the child's ``started`` line, then SIGKILL it ``delay`` seconds later (if it
    is still running). Returns whether it was killed."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "started":
        process.wait(timeout=60)
        raise AssertionError(f"child did not start: {line!r} {process.stderr.read()}")  # type: ignore[union-attr]
    time.sleep(delay)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
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


def in_flight(events: list[Event]) -> set[str]:
    """Intents dispatched and not finished when the log stops."""
    running: set[str] = set()
    for event in events:
        if event.type == "dispatched":
            running.add(event.intent_id)  # type: ignore[arg-type]
        elif event.type in ("completed", "failed", "cancelled", "attempt_failed"):
            running.discard(event.intent_id)  # type: ignore[arg-type]
    return running


def crash_and_resume(tmp_path: Path, rng: random.Random, kills: int) -> None:
    """One run: started, killed, then resumed (and killed again ``kills - 1`` times) until it
    completes; every invariant checked after each kill and at the end."""
    database = tmp_path / "runs.db"
    store = f"sqlite:///{database}"
    calls = tmp_path / "calls.txt"
    calls.touch()
    process = child("start", store, calls)
    killed = kill_after(process, rng.uniform(0.0, 0.25))
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
            return
        [portfolio_id] = ids
        snapshots.append(list(load(store, portfolio_id).events))
        process = child("resume", store, calls, portfolio_id)
        killed = round_ < kills - 1 and kill_after(process, rng.uniform(0.0, 0.2))
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
    # Each intent's attempts: one, plus one per kill that caught it in flight.
    for intent_id, count in counts.items():
        caught = sum(intent_id in in_flight(snapshot) for snapshot in snapshots)
        assert count == 1 + caught, (intent_id, count, caught)
    # Every call the agent made was journaled (dispatched, that attempt) before it ran, once.
    journaled = {(e.intent_id, e.data["attempt"]) for e in events if e.type == "dispatched"}
    made = [tuple(line.split()) for line in calls.read_text().splitlines()]
    made_pairs = [(intent_id, int(attempt)) for intent_id, attempt in made]
    assert len(made_pairs) == len(set(made_pairs)), "an attempt was called twice"
    assert set(made_pairs) <= journaled
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()


@pytest.mark.parametrize("case", range(6))
def test_a_killed_run_resumes_without_losing_or_repeating_work(tmp_path: Path, case: int) -> None:
    crash_and_resume(tmp_path, random.Random(case), kills=1 + case % 3)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(6, 30))
def test_many_kills_at_seeded_random_points(tmp_path: Path, case: int) -> None:
    crash_and_resume(tmp_path, random.Random(case), kills=1 + case % 4)
