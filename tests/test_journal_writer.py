"""The journal's writer thread: every commit of a SQLite store runs on one long-lived thread
(never the event loop's), on asyncio and on trio; closing the store joins it; and a waiter
cancelled while its commit is in flight neither loses nor repeats that commit."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from openintent import Runtime, VirtualClock, sleep
from openintent._stores.sqlite import SqliteBackend
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

pytestmark = pytest.mark.anyio

BOUND = 20  # seconds of real time before a hung test fails instead of hanging


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


async def test_commits_run_on_one_writer_thread_that_closing_the_store_joins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []
    real = SqliteBackend._commit

    def commit(backend: SqliteBackend, *args: Any) -> None:
        threads.append(threading.current_thread())
        real(backend, *args)

    monkeypatch.setattr(SqliteBackend, "_commit", commit)

    @Agent("writer-test-worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"title": intent.title}

    spec = PortfolioSpec("chain", [
        IntentSpec(str(index), assign="writer-test-worker",
                   depends_on=[str(index - 1)] if index else [])
        for index in range(20)
    ])
    loop_thread = threading.current_thread()
    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Worker], store=store_url(tmp_path)) as rt:
            result = await rt.run(spec)
            assert result.status == "completed"
    assert len(threads) >= 20  # a chain commits before each dispatch
    assert len(set(threads)) == 1 and threads[0] is not loop_thread
    assert not threads[0].is_alive()  # closing the store joined it
    async with Runtime(store=store_url(tmp_path)) as rt:
        loaded = await rt.load(result.portfolio_id)
    assert loaded.status == "completed" and len(loaded.events) == len(result.events)


async def test_a_cancelled_waiter_neither_loses_nor_repeats_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, go_on = threading.Event(), threading.Event()
    commits: list[int] = []
    real = SqliteBackend._commit

    def slow_commit(backend: SqliteBackend, log: Any, start: int, events: Any,
                    text: str) -> None:
        commits.append(start)
        entered.set()
        go_on.wait(BOUND)
        real(backend, log, start, events, text)

    monkeypatch.setattr(SqliteBackend, "_commit", slow_commit)
    backend = SqliteBackend(store_url(tmp_path))
    try:
        log = backend.create_run("pf_1", "cancelled waiter")
        log.extend([("run_started", 0.0, None, {"name": "x", "intents": 0,
                                                "coordinator": None}),
                    ("ready", 1.0, "in_1_0", None)])
        with anyio.fail_after(BOUND):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(log.wait_committed, 2)
                    await anyio.to_thread.run_sync(entered.wait, BOUND)
                    scope.cancel()  # the waiter stops waiting while the commit runs
            assert scope.cancelled_caught
            go_on.set()
            log.append(("ready", 2.0, "in_1_1", None))
            await log.wait_committed(3)
        assert log.committed == 3 and log.error is None
        assert backend.read("pf_1") == list(log)  # each event once, none lost
        assert commits == [0, 2]
    finally:
        go_on.set()
        backend.close()


def fan_spec(width: int, assign: str) -> PortfolioSpec:
    return PortfolioSpec("fan", [
        IntentSpec("root", assign=assign),
        *(IntentSpec(f"leaf {index}", assign=assign, depends_on=["root"])
          for index in range(width)),
    ])


async def test_intents_ready_at_once_are_dispatched_with_one_commit(tmp_path: Path) -> None:
    @Agent("fan-worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {}

    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Worker], store=store_url(tmp_path)) as rt:
            result = await rt.run(fan_spec(30, "fan-worker"))
    assert result.status == "completed"
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        counts = [count for (count,) in conn.execute(
            "SELECT (SELECT count(*) FROM json_each(b.events) AS e "
            "WHERE e.value ->> 0 = 'dispatched') FROM batches AS b ORDER BY b.first_seq")]
    conn.close()
    # The root's dispatch, then the 30 leaves' in one commit (not one wait each).
    assert [count for count in counts if count] == [1, 30]


async def test_a_journaled_fan_out_still_runs_suspending_handlers_at_once(
        tmp_path: Path, anyio_backend: str) -> None:
    if anyio_backend == "trio":
        pytest.skip("the virtual clock watches asyncio's event loop")
    running: list[int] = []
    most: list[int] = [0]

    @Agent("sleepy-worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            running.append(1)
            most[0] = max(most[0], len(running))
            await sleep(10)
            running.pop()
            return {}

    clock = VirtualClock()
    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Worker], store=store_url(tmp_path), clock=clock) as rt:
            result = await rt.run(fan_spec(20, "sleepy-worker"))
    assert result.status == "completed"
    assert most[0] == 20  # every leaf's handler was running at once
    assert clock.now() == pytest.approx(20.0)  # the root's 10 s, then the leaves' 10 s
