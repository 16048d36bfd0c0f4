"""The database restarting under running workers (issue 14): an ``openintent worker``
process serves every agent of a run this test process coordinates on a ``postgresql://``
store; mid-run the server stops (a clean ``fast`` shutdown, or ``immediate``: a crash of the
server) and starts again. The worker and the coordinator reconnect and go on: the run
completes, each intent completed once in the journal, each side effect happened once, and the
worker is still alive and served after the restart. And the renewal of a run's lease waits for
the database on a thread, not on the run's event loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest
import structlog
from crash_workflow import spec

from openintent import Runtime
from openintent._stores import open_backend
from openintent._stores._pg_schema import PgUrl
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import EventType, RunResult

from _postgres import PostgresServer, with_option

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
HANG_GUARD = 25  # real seconds; only a regression that hangs waits this long
RESTART_AFTER = 12  # effects on disk before the server stops


def portfolio() -> PortfolioSpec:
    """48 intents in 8 layers; every other one runs a side effect."""
    layered = spec("restart-me", width=6, layers=8, seed=3)
    return PortfolioSpec(layered.name, [
        IntentSpec(intent.title, depends_on=list(intent.depends_on),
                   assign="effector" if index % 2 == 0 else "plain")
        for index, intent in enumerate(layered.intents)])


def durable(url: str) -> None:
    """Commits of database ``url`` on disk (well, in the kernel) before they are acknowledged.

    The test server runs with ``synchronous_commit = off`` (tests/_postgres.py: speed): a
    crash of it (``stop("immediate")``) then loses transactions it had already reported
    committed, which no client can survive (a finished task is claimed again, an ended
    effect reads as started). A real server keeps the default, ``on``."""
    with psycopg.connect(PgUrl.parse(url).conninfo, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET synchronous_commit = on')


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def coordinate(url: str) -> tuple[RunResult, RunResult]:
    """Run the portfolio with no agent of its own (a worker runs every intent); the run's
    result and its log read back."""
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[], store=url) as coordinator:
            result = await coordinator.run(portfolio())
            return result, await coordinator.load(result.portfolio_id)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_workers_and_coordinator_go_on_through_a_database_restart(
        postgres_server: PostgresServer, postgres_url: str, tmp_path: Path,
        mode: str) -> None:
    url = with_option(postgres_url, "task_ttl=3")  # claims renewed (and maybe lost) meanwhile
    effects = tmp_path / "effects.txt"
    durable(url)
    open_backend(url).close()  # the schema, before two processes race to create it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
           "OPENINTENT_TEST_EFFECTS": str(effects)}
    with (tmp_path / "worker.err").open("w") as errors:
        worker = subprocess.Popen(
            [sys.executable, "-m", "openintent", "worker", url, "--agents",
             "restart_agents:AGENTS", "--id", "w1", "--concurrency", "4"],
            cwd=tmp_path, env=env, stderr=errors)
    before_restart: list[int] = []
    stopped = threading.Event()
    restarted = threading.Event()
    finished = threading.Event()

    def restart() -> None:
        """Stop the server once ``RESTART_AFTER`` effects are on disk, start it again."""
        while len(lines(effects)) < RESTART_AFTER:
            if finished.wait(0.01):
                return
        try:
            postgres_server.stop(mode)
            before_restart.append(len(lines(effects)))
            stopped.set()
            threading.Event().wait(1.5)  # calls fail (and retry) meanwhile
        finally:
            postgres_server.start()
            restarted.set()

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    try:
        result, loaded = anyio.run(coordinate, url, backend="asyncio")
        alive = worker.poll() is None
    finally:
        finished.set()
        restarter.join(HANG_GUARD)
        if stopped.is_set() and not restarted.is_set():
            postgres_server.start()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        err = (tmp_path / "worker.err").read_text()

    assert stopped.is_set()
    assert alive, err
    assert "reconnecting" in err  # the worker did lose the server
    assert worker.returncode == 130, err
    assert result.status == "completed", result.error
    events = list(loaded.events)
    assert events == list(result.events)  # nothing lost
    assert [event.seq for event in events] == list(range(len(events)))
    completions = Counter(e.intent_id for e in events if e.type == EventType.COMPLETED)
    assert sorted(completions) == sorted(record.id for record in result.intents.values())
    assert set(completions.values()) == {1}  # each intent completed exactly once
    effected = [record.id for title, record in result.intents.items()
                if record.state.get("written") is not None]
    assert len(effected) == 24
    assert Counter(lines(effects)) == Counter(effected)  # each effect happened exactly once
    assert before_restart[0] < len(effected)  # the worker served after the restart
    ended = Counter(e.intent_id for e in events if e.type == EventType.EFFECT_COMPLETED)
    assert ended == Counter(effected)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.usefixtures("reset_structlog")
async def test_a_run_lease_renewal_waits_for_the_database_off_the_event_loop(
        postgres_server: PostgresServer, postgres_url: str, anyio_backend: str) -> None:
    """While the server is down, the renewal of a run's lease retries on a thread: the
    run's event loop goes on (here: the handler that starts the server again once it saw
    the renewal fail), instead of being blocked until the database answers."""
    renewal_failed = threading.Event()
    down: list[bool] = []

    @Agent("restarter")
    class Restarter:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await anyio.to_thread.run_sync(postgres_server.stop)
            down.append(True)
            # The renewal is retrying meanwhile (and the loop still runs this handler).
            assert await anyio.to_thread.run_sync(renewal_failed.wait, HANG_GUARD)
            await anyio.to_thread.run_sync(postgres_server.start)
            down.clear()
            return {"ok": True}

    def watch(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        if "take the lease" in str(event.get("what", "")):
            renewal_failed.set()
        raise structlog.DropEvent

    structlog.configure(processors=[watch])
    try:
        with anyio.fail_after(HANG_GUARD):
            async with Runtime(agents=[Restarter],
                               store=with_option(postgres_url, "lease_ttl=0.6")) as rt:
                rt._runs.backend.calls.deadline = 5.0  # a blocked loop fails, not hangs
                result = await rt.run(PortfolioSpec("renew", [
                    IntentSpec("Restart", assign="restarter")]))
    finally:
        if down:
            postgres_server.start()
    assert result.status == "completed", result.error
