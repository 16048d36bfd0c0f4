"""The runtime on anyio's trio backend ("Framework :: AnyIO"), on the real clock.

Real-clock timings are small and every bound generous (``fail_after(20)``); nothing here
measures how long a sleep took. The virtual clock watches asyncio's event loop, so on trio it
refuses with a clear error instead.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import anyio
import pytest

from openintent import OpenIntentError, Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import SimulatedAgent, capture_events

pytestmark = pytest.mark.anyio

BOUND = 20  # seconds of real time before a hung test fails instead of hanging


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_retry_timeout_and_cancellation_on_trio() -> None:
    calls: dict[str, int] = {}
    finalized: list[str] = []
    forever_started = anyio.Event()

    @Agent("trio-worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls[intent.title] = calls.get(intent.title, 0) + 1
            if intent.title == "Flaky" and intent.attempt == 1:
                raise RuntimeError("first attempt fails")
            if intent.title == "Slow" and intent.attempt == 1:
                await anyio.sleep(60)  # cancelled by the intent's timeout
            if intent.title == "Forever":
                forever_started.set()
                try:
                    await anyio.sleep(60)  # cancelled with the run
                finally:
                    finalized.append(intent.title)
            return {"attempt": intent.attempt}

    retry = {"max_attempts": 2, "initial_delay": 0.01, "jitter": False}
    spec = PortfolioSpec("on-trio", [
        IntentSpec("Flaky", assign="trio-worker", retry=retry),
        IntentSpec("Slow", assign="trio-worker", timeout=0.2, retry=retry),
        IntentSpec("Forever", assign="trio-worker", depends_on=["Flaky", "Slow"]),
    ])
    with anyio.fail_after(BOUND), capture_events() as events:
        async with Runtime(agents=[Worker]) as rt, anyio.create_task_group() as tg:
            tg.start_soon(rt.run, spec)
            await forever_started.wait()
            tg.cancel_scope.cancel()

    assert calls == {"Flaky": 2, "Slow": 2, "Forever": 1}
    assert finalized == ["Forever"]
    by_title = {title: [e.type for e in events if e.title == title]
                for title in ("Flaky", "Slow", "Forever")}
    assert by_title["Flaky"][-4:] == ["attempt_failed", "retry_scheduled", "dispatched",
                                      "completed"]
    assert by_title["Slow"][-4:] == ["attempt_failed", "retry_scheduled", "dispatched",
                                     "completed"]
    timed_out = [e for e in events if e.type == "attempt_failed" and e.title == "Slow"]
    assert timed_out[0].data is not None
    assert timed_out[0].data["error_type"] == "IntentTimeoutError"
    assert by_title["Forever"][-1] == "cancelled"
    assert events[-1].type == "run_finished" and events[-1].data == {"status": "cancelled"}
    assert all(event.at.tzinfo is UTC for event in events)


async def test_a_budget_halt_and_a_sync_handler_on_trio() -> None:
    @Agent("trio-sync")
    class Sync:
        @on_assignment
        def work(self, intent: Any) -> dict[str, Any]:  # runs in a worker thread
            return {"sync": True}

    spender = SimulatedAgent("trio-spender", result={}, cost_usd=4.0, register=False)
    spec = PortfolioSpec("halted-on-trio", [
        IntentSpec("Sync", assign="trio-sync"),
        IntentSpec("First", assign="trio-spender", depends_on=["Sync"]),
        IntentSpec("Second", assign="trio-spender", depends_on=["First"]),
    ])
    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Sync, spender],
                           guardrails=[{"type": "budget", "max_cost_usd": 3}]) as rt:
            result = await rt.run(spec)
    assert result.status == "halted"
    assert result.intents["Sync"].state == {"sync": True}
    assert result.intents["Second"].status == "pending"  # never started
    assert result.events.of_type("guardrail_breach").types() == ["guardrail_breach"]


async def test_the_virtual_clock_refuses_trio_with_a_clear_error() -> None:
    agent = SimulatedAgent("trio-virtual", result={}, register=False)
    with capture_events() as events:
        async with Runtime(agents=[agent], clock=VirtualClock()) as rt:
            with pytest.raises(OpenIntentError, match="asyncio.*trio.*real clock"):
                await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="trio-virtual")]))
    assert events == []  # refused before anything was logged
    clock = VirtualClock()
    with pytest.raises(OpenIntentError, match="VirtualClock works on asyncio"):
        await clock.sleep(1)
    with pytest.raises(OpenIntentError, match="VirtualClock works on asyncio"):
        with clock.timeout(1):
            pass


async def test_a_run_handle_cancels_on_trio() -> None:
    started = anyio.Event()
    finalized: list[str] = []

    @Agent("trio-hanging")
    class Hanging:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            started.set()
            try:
                await anyio.sleep(60)
            finally:
                finalized.append(intent.title)
            return {}

    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Hanging]) as rt:
            handle = await rt.start(PortfolioSpec("p", [IntentSpec("H", assign="trio-hanging")]))
            await started.wait()
            await handle.cancel()
            result = await handle.result()
    assert result.status == "cancelled"
    assert finalized == ["H"]
    assert result.events.for_intent("H").types()[-1] == "cancelled"


async def test_a_cancelled_run_resumes_on_trio() -> None:
    started = anyio.Event()

    @Agent("trio-resumer")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.title == "Slow" and intent.attempt == 1:
                started.set()
                await anyio.sleep(60)  # cancelled with the run
            return {"attempt": intent.attempt}

    spec = PortfolioSpec("trio-resume", [
        IntentSpec("Fast", assign="trio-resumer"),
        IntentSpec("Slow", assign="trio-resumer", depends_on=["Fast"]),
    ])
    with anyio.fail_after(BOUND):
        async with Runtime(agents=[Worker()]) as rt:
            handle = await rt.start(spec)
            await started.wait()
            await handle.cancel()
            stopped = await handle.result()
            resumed = await rt.resume(stopped.portfolio_id)
    assert stopped.status == "cancelled"
    assert resumed.status == "completed"
    assert dict(resumed.intents["Slow"].state) == {"attempt": 2}
    assert resumed.events.types().count("run_resumed") == 1
