"""A resumed run's earlier tasks: a coordinator that failed over leaves tasks queued or
claimed; the run resumed by its next coordinator cancels them before it dispatches anything
(``queue.cancel_run``), so no worker runs the old attempt beside the new one. The queue's
``cancel_run`` on both queues (``memory://?workers=1``'s and PostgreSQL's), and a resume on
the in-process queue with a virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from _serving import HANG_GUARD, STORE, serving

from openintent import Runtime, VirtualClock
from openintent._task_memory import MemoryTaskQueue
from openintent._tasks import TaskOutcome, TaskQueue
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def a_queue(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[TaskQueue]:
    if kind == "memory":
        yield MemoryTaskQueue()
        return
    from openintent._stores import open_backend

    backend: Any = open_backend(request.getfixturevalue("postgres_url"))
    try:
        yield backend.tasks
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ["memory", "postgresql"])
async def test_cancel_run_ends_every_open_task_of_the_run_and_no_other(
        kind: str, request: pytest.FixtureRequest, anyio_backend: str) -> None:
    payload = {"intent": {}, "effects": {}}
    with anyio.fail_after(HANG_GUARD):
        async with a_queue(kind, request) as queue:
            done_id = await queue.submit("pf_a", "i1", 1, "w", payload)
            [finished] = await queue.claim("w1", ["w"], 1)
            assert await queue.finish(finished, "done", {"value": 1, "ops": []})
            claimed_id = await queue.submit("pf_a", "i2", 1, "w", payload)
            [running] = await queue.claim("w1", ["w"], 1)
            ready_id = await queue.submit("pf_a", "i3", 1, "w", payload)
            other_id = await queue.submit("pf_b", "i1", 1, "w", payload)

            assert await queue.cancel_run("pf_a") == 2  # the claimed one and the ready one
            assert await queue.cancel_run("pf_a") == 0

            assert await queue.renew([running]) == {claimed_id}  # its worker stops it
            assert not await queue.finish(running, "done", {"value": 2, "ops": []})
            assert (await queue.outcome(claimed_id)).status == "cancelled"
            assert (await queue.outcome(ready_id)).status == "cancelled"
            assert await queue.outcome(done_id) == TaskOutcome(
                "done", {"value": 1, "ops": []}, "w1", 1)
            assert [task.id for task in await queue.claim("w2", ["w"], 10)] == [other_id]


async def test_a_resumed_run_cancels_the_tasks_its_earlier_sitting_left(
        monkeypatch: pytest.MonkeyPatch, anyio_backend: str) -> None:
    """The first coordinator dies (simulated: its task's cancel never happens) with its
    attempt queued; the resume's attempt is the only one a worker runs."""
    seen: list[int] = []

    @Agent("stale-writer")
    class Writer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            seen.append(intent.attempt)
            return {"attempt": intent.attempt}

    spec = PortfolioSpec("stale", [IntentSpec("Write", assign="stale-writer")])
    clock = VirtualClock()
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[], store=STORE, clock=clock) as first:
            queue: Any = first._runs.backend.tasks
            real_cancel = queue.cancel

            async def died(task_id: int) -> None:  # a killed process cancels nothing
                pass

            monkeypatch.setattr(queue, "cancel", died)
            handle = await first.start(spec)
            while not queue._open:  # until its task is queued (no worker serves yet)
                await anyio.lowlevel.checkpoint()
            await handle.cancel()
            monkeypatch.setattr(queue, "cancel", real_cancel)
            run_id = handle.portfolio_id
            [stale] = queue._open.values()
            assert stale.status == "ready" and stale.attempt == 1

        async with serving([Writer], clock=clock) as coordinator:
            result = await coordinator.resume(run_id)

    assert result.status == "completed"
    assert result.intents["Write"].state == {"attempt": 2}
    assert seen == [2]  # the stale attempt 1 was never run
    assert stale.status == "cancelled"


async def test_the_tasks_of_a_resumed_runs_sub_portfolios_are_cancelled_too(
        anyio_backend: str) -> None:
    from openintent._stale_tasks import drop_stale_tasks

    payload = {"intent": {}, "effects": {}}
    async with Runtime(agents=[], store=STORE, clock=VirtualClock()) as rt:
        backend: Any = rt._runs.backend
        held = [backend.create_run("pf_top", "top"),
                backend.create_run("pf_sub", "sub", parent="pf_top"),
                backend.create_run("pf_subsub", "subsub", parent="pf_sub"),
                backend.create_run("pf_other", "other")]
        queue = backend.tasks
        ids = {run_id: await queue.submit(run_id, "i1", 1, "w", payload)
               for run_id in ("pf_top", "pf_sub", "pf_subsub", "pf_other")}
        assert await drop_stale_tasks(backend, "pf_top") == 3
        assert [task.id for task in await queue.claim("w1", ["w"], 10)] == [ids["pf_other"]]
        await queue.cancel_run("pf_other")  # the store is the process's: leave nothing open
        del held
