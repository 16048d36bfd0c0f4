"""A run going on holds its lease in a durable store: another runtime (another process) cannot
resume it meanwhile, however long it waits, and can once it ended. The lease is renewed on
real time while the run waits without committing anything (here: for an approval)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from openintent import RunInUseError, Runtime, VirtualClock
from openintent._stores.sqlite import SqliteBackend
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

pytestmark = pytest.mark.asyncio

APPROVAL = {"type": "approval", "require_for": ["Deploy"], "approvers": ["alice"]}


def Worker() -> Any:  # noqa: N802 - made per test: decorating registers the id
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"done": intent.title}

    return Worker()


def release() -> PortfolioSpec:
    return PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])


def lease_of(database: Path, run_id: str) -> tuple[Any, ...]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return tuple(connection.execute(
            "SELECT lease_holder, lease_expires FROM runs WHERE id = ?", (run_id,)).fetchone())
    finally:
        connection.close()


async def waiting_for_approval(rt: Runtime) -> Any:
    handle = await rt.start(release())
    async for event in handle.events():
        if event.type == "approval_requested":
            return handle
    raise AssertionError("no approval was requested")


async def test_a_run_going_on_in_another_runtime_cannot_be_resumed(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    async with Runtime(agents=[Worker()], store=store, clock=VirtualClock(),
                       guardrails=[APPROVAL]) as running:
        handle = await waiting_for_approval(running)
        holder, _expires = lease_of(tmp_path / "runs.db", handle.portfolio_id)
        assert holder.startswith("rt.run() ")
        async with Runtime(agents=[Worker()], store=store, clock=VirtualClock()) as other:
            with pytest.raises(RunInUseError, match="in use by rt.run()"):
                await other.resume(handle.portfolio_id)
        await handle.approve("Deploy", by="alice")
        result = await handle.result()
    assert result.status == "completed"
    # Ended: the lease is given back, and a resume returns the result, running nothing.
    assert lease_of(tmp_path / "runs.db", handle.portfolio_id) == (None, None)
    async with Runtime(agents=[Worker()], store=store) as later:
        again = await later.resume(handle.portfolio_id)
    assert again.status == "completed"
    assert len(again.events) == len(result.events)


async def test_a_waiting_run_renews_its_lease_without_committing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SqliteBackend, "lease_ttl", 0.3)  # renewed every 0.1 s
    database = tmp_path / "runs.db"
    async with Runtime(agents=[Worker()], store=f"sqlite:///{database}",
                       guardrails=[APPROVAL]) as rt:
        handle = await waiting_for_approval(rt)
        events = len([event async for event in _committed(handle)])
        _holder, first = lease_of(database, handle.portfolio_id)
        with anyio.fail_after(30):  # a bound for a stuck machine, not a measurement
            while lease_of(database, handle.portfolio_id)[1] == first:  # noqa: ASYNC110
                await anyio.sleep(0.05)  # the file changes in another thread: poll it
        # Renewed while the run logged nothing new.
        assert len([event async for event in _committed(handle)]) == events
        await handle.approve("Deploy", by="alice")
        assert (await handle.result()).status == "completed"


async def _committed(handle: Any) -> Any:
    """The run's events so far (without waiting for more)."""
    async for event in handle.events():
        yield event
        if event.type == "approval_requested":
            return
