"""Resuming runs journaled to SQLite from a fresh runtime on the same file (as a new process
would): a halted run with a raised budget, a run cancelled while it waited for an approval,
and the idempotency key of an intent across attempts and restarts. tests/test_resume.py covers
resume in depth on memory://; tests/test_crash_kill.py kills real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

from _helpers import statuses

pytestmark = pytest.mark.asyncio


def worker(cost: float = 0.0) -> Any:
    @Agent("worker")
    class Worker:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int, str]] = []

        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            self.calls.append((intent.title, intent.attempt, intent.idempotency_key))
            await openintent.sleep(1.0)
            if cost:
                await self.record_cost(intent, cost)
            return {"done": intent.title}

    return Worker()


async def test_a_halted_run_resumes_in_a_fresh_runtime_with_a_raised_budget(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = PortfolioSpec("costly", [
        IntentSpec("A", assign="worker"),
        IntentSpec("B", assign="worker", depends_on=["A"]),
        IntentSpec("C", assign="worker", depends_on=["B"]),
    ])
    first = worker(cost=2.0)
    async with Runtime(agents=[first], store=store, clock=VirtualClock(),
                       guardrails=[{"type": "budget", "max_cost_usd": 3.0}]) as rt:
        halted = await rt.run(spec)
    assert statuses(halted) == {"A": "completed", "B": "cancelled", "C": "pending"}

    second = worker(cost=2.0)
    async with Runtime(agents=[second], store=store, clock=VirtualClock()) as rt:
        assert [(info.portfolio_id, info.status) for info in rt.runs()] == [
            (halted.portfolio_id, "halted")]
        resumed = await rt.resume(halted.portfolio_id,
                                  guardrails=[{"type": "budget", "max_cost_usd": 100.0}])
        assert [(info.portfolio_id, info.status) for info in rt.runs()] == [
            (halted.portfolio_id, "completed")]
    assert resumed.status == "completed"
    assert [(title, attempt) for title, attempt, _ in second.calls] == [("B", 2), ("C", 1)]
    assert resumed.cost_usd == pytest.approx(8.0)  # 4 spent before, 2 + 2 since
    # The key of B is the same across its attempts and the restart.
    [(_, _, key_before)] = [call for call in first.calls if call[0] == "B"]
    [(_, _, key_after)] = [call for call in second.calls if call[0] == "B"]
    assert key_before == key_after == resumed.intents["B"].id

    async with Runtime(agents=[], store=store) as rt:
        loaded = await rt.load(halted.portfolio_id)
    assert loaded.to_dict() == resumed.to_dict()
    assert [event.seq for event in loaded.events] == list(range(len(loaded.events)))


async def test_a_pending_approval_is_pending_again_in_a_fresh_runtime(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    approval = {"type": "approval", "require_for": ["Deploy"], "approvers": ["alice"]}
    spec = PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])
    first = worker()
    async with Runtime(agents=[first], store=store, clock=VirtualClock(),
                       guardrails=[approval]) as rt:
        handle = await rt.start(spec)
        async for event in handle.events():
            if event.type == "approval_requested":
                break
        await handle.cancel()  # the process stops while Deploy waits for alice
        stopped = await handle.result()

    second = worker()
    async with Runtime(agents=[second], store=store, clock=VirtualClock(),
                       guardrails=[approval]) as rt:
        resumed = await rt.start_resume(stopped.portfolio_id)
        async for event in resumed.events():
            if event.type == "approval_requested" and event.seq > len(stopped.events):
                break
        [request] = resumed.pending_approvals()
        assert request.title == "Deploy"
        with pytest.raises(openintent.ApprovalError):
            await resumed.approve("Deploy", by="mallory")  # still only the listed approvers
        await resumed.approve("Deploy", by="alice")
        result = await resumed.result()
    assert result.status == "completed"
    assert [title for title, _, _ in first.calls] == ["Build"]
    assert [title for title, _, _ in second.calls] == ["Deploy"]  # Build never ran again


async def test_a_run_another_runtime_went_on_with_is_resumed_from_the_file(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = PortfolioSpec("costly", [
        IntentSpec("A", assign="worker"),
        IntentSpec("B", assign="worker", depends_on=["A"]),
        IntentSpec("C", assign="worker", depends_on=["B"]),
    ])
    budget = {"type": "budget", "max_cost_usd": 3.0}
    async with Runtime(agents=[worker(cost=2.0)], store=store, clock=VirtualClock(),
                       guardrails=[budget]) as here:
        halted = await here.run(spec)  # this runtime still holds the run's log
        async with Runtime(agents=[worker(cost=2.0)], store=store,
                           clock=VirtualClock()) as elsewhere:
            # Another runtime (another process) goes on with it, and halts again.
            again = await elsewhere.resume(halted.portfolio_id,
                                           guardrails=[{"type": "budget",
                                                        "max_cost_usd": 5.0}])
        assert again.status == "halted" and len(again.events) > len(halted.events)
        # Back here: the resume reads what the file holds, not this runtime's old log.
        resumed = await here.resume(halted.portfolio_id,
                                    guardrails=[{"type": "budget", "max_cost_usd": 100.0}])
    assert resumed.status == "completed"
    assert [event.seq for event in resumed.events] == list(range(len(resumed.events)))
    assert [marker.data["from"] for marker in resumed.events.of_type("run_resumed")] == [
        "halted", "halted"]
