"""Handlers that block the event loop are reported: a ``loop_blocked`` event and a warning.

A blocking step is real time by nature, so the handlers here call ``time.sleep`` and the
assertions are one-sided (a step of ``time.sleep(x)`` takes at least ``x``), which holds on a
loaded machine. Nothing measures overlap or elapsed run time.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

import openintent
from openintent import OpenIntentError, Runtime
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
    on_event,
)
from openintent.models import Event, EventType, Intent, RunResult
from openintent.testing import VirtualClock

BLOCK = 0.15  # seconds a blocking handler holds the loop
THRESHOLD = 0.1


@pytest.fixture(autouse=True)
def structlog_reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def one(title: str = "work", assign: str = "blocky", **options: Any) -> PortfolioSpec:
    return PortfolioSpec(name="blocking", intents=[IntentSpec(title=title, assign=assign,
                                                              **options)])


def blocked_events(result: RunResult) -> list[Event]:
    return result.events.of_type("loop_blocked")


@Agent("blocky")
class Blocky:
    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test
        return {"done": True}


@Agent("polite")
class Polite:
    @on_assignment
    async def work(self, intent: Intent) -> dict[str, Any]:
        await openintent.sleep(3600)
        return {"done": True}


def test_loop_blocked_is_an_event_type() -> None:
    assert EventType.LOOP_BLOCKED == "loop_blocked"
    assert "loop_blocked" in EventType.ALL


@pytest.mark.asyncio
async def test_a_handler_that_sleeps_synchronously_records_loop_blocked() -> None:
    @Agent("sleepy")
    class Sleepy:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            time.sleep(0.3)  # noqa: ASYNC251 - the mistake under test
            return {"done": True}

    async with Runtime(agents=[Sleepy], blocking_threshold=0.1) as rt:
        result = await rt.run(one(assign="sleepy"))
    assert result.status == "completed"
    [event] = blocked_events(result)
    assert event.intent_id == result.intents["work"].id
    assert event.data is not None
    assert event.data["agent"] == "sleepy"
    assert event.data["handler"].endswith("Sleepy.work")
    assert event.data["seconds"] >= 0.3
    # Before the intent's completion: the step ended when the handler returned.
    types = result.events.types()
    assert types.index("loop_blocked") < types.index("completed")


@pytest.mark.asyncio
async def test_the_warning_suggests_a_plain_def_or_a_worker_thread() -> None:
    with capture_logs() as logs:
        async with Runtime(agents=[Blocky], blocking_threshold=THRESHOLD) as rt:
            await rt.run(one())
    [warning] = [log for log in logs if log["log_level"] == "warning"
                 and "blocked the event loop" in log["event"]]
    assert warning["agent"] == "blocky"
    assert warning["handler"].endswith("Blocky.work")
    assert warning["seconds"] >= BLOCK
    assert warning["intent"] == "work"
    assert "def" in warning["hint"] and "anyio.to_thread.run_sync" in warning["hint"]


@pytest.mark.asyncio
async def test_blocking_is_detected_by_default() -> None:
    async with Runtime(agents=[Blocky]) as rt:
        result = await rt.run(one())
    assert len(blocked_events(result)) == 1


@pytest.mark.asyncio
async def test_a_handler_awaiting_the_virtual_clock_records_nothing() -> None:
    # A generous threshold: 3600 virtual seconds are measured against it, not a loaded CPU.
    async with Runtime(agents=[Polite], clock=VirtualClock(), blocking_threshold=1.0) as rt:
        result = await rt.run(one(assign="polite"))
    assert result.status == "completed"
    assert blocked_events(result) == []


@pytest.mark.asyncio
async def test_blocking_threshold_none_turns_detection_off() -> None:
    with capture_logs() as logs:
        async with Runtime(agents=[Blocky], blocking_threshold=None) as rt:
            result = await rt.run(one())
    assert result.status == "completed"
    assert blocked_events(result) == []
    assert not [log for log in logs if "blocked the event loop" in log["event"]]


@pytest.mark.parametrize("bad", [0, -1, 0.0, math.nan, math.inf, True, "0.1", [0.1]])
def test_blocking_threshold_must_be_a_positive_number_or_none(bad: Any) -> None:
    with pytest.raises(OpenIntentError, match="blocking_threshold"):
        Runtime(blocking_threshold=bad)


@pytest.mark.parametrize("good", [None, 0.05, 1, 2.5])
def test_blocking_threshold_accepts_positive_numbers_and_none(good: Any) -> None:
    Runtime(blocking_threshold=good)


# ------------------------------------------------------------------ every kind of handler


@pytest.mark.asyncio
async def test_retries_and_timeouts_take_the_timed_path_too() -> None:
    @Agent("blocky-flaky")
    class BlockyFlaky:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test
            if intent.attempt == 1:
                raise RuntimeError("first attempt fails")
            return {}

    spec = one(assign="blocky-flaky", retry={"max_attempts": 2, "initial_delay": 0},
               timeout=60)
    async with Runtime(agents=[BlockyFlaky], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    assert len(blocked_events(result)) == 2  # one per attempt


@pytest.mark.asyncio
async def test_a_blocking_lifecycle_hook_is_reported_on_its_intent() -> None:
    @Agent("hooked")
    class Hooked:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            return {}

        @on_complete
        async def done(self, intent: Intent) -> None:
            time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test

        @on_all_complete
        async def everything_done(self, portfolio: Any) -> None:
            time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test

    async with Runtime(agents=[Hooked], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(one(assign="hooked"))
    by_handler = {event.data["handler"].rpartition(".")[2]: event  # type: ignore[index]
                  for event in blocked_events(result)}
    assert set(by_handler) == {"done", "everything_done"}
    assert by_handler["done"].intent_id == result.intents["work"].id
    assert by_handler["everything_done"].intent_id is None  # the run's, not an intent's


@pytest.mark.asyncio
async def test_a_delegate_that_blocks_is_blamed_not_its_coordinator() -> None:
    @Coordinator("boss", agents=["blocky"])
    class Boss:
        @on_assignment
        async def route(self, intent: Intent) -> None:
            await self.delegate(intent, to="blocky")  # type: ignore[attr-defined]

    spec = PortfolioSpec(name="delegation", intents=[IntentSpec(title="work")])
    async with Runtime(agents=[Blocky, Boss], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(spec, coordinator=Boss)
    assert result.status == "completed"
    [event] = blocked_events(result)
    assert event.data is not None and event.data["agent"] == "blocky"


@pytest.mark.asyncio
async def test_a_blocking_coordinator_handler_is_reported() -> None:
    @Coordinator("slow-boss")
    class SlowBoss:
        @on_assignment
        async def route(self, intent: Intent) -> dict[str, Any]:
            time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test
            return {"routed": True}

    spec = PortfolioSpec(name="routing", intents=[IntentSpec(title="work")])
    async with Runtime(agents=[SlowBoss], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(spec, coordinator=SlowBoss)
    [event] = blocked_events(result)
    assert event.data is not None and event.data["agent"] == "slow-boss"
    assert event.intent_id == result.intents["work"].id


@pytest.mark.asyncio
async def test_a_loop_blocked_hook_that_blocks_does_not_feed_back() -> None:
    heard: list[Event] = []

    @Agent("blocky-listener")
    class BlockyListener:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test
            return {}

        @on_event("loop_blocked")
        async def heard_it(self, event: Event) -> None:
            heard.append(event)
            time.sleep(BLOCK)  # noqa: ASYNC251 - the mistake under test

    async with Runtime(agents=[BlockyListener], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(one(assign="blocky-listener"))
    assert result.status == "completed"
    assert len(blocked_events(result)) == 1
    assert len(heard) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_blocking_is_detected_on_trio(anyio_backend: str) -> None:
    async with Runtime(agents=[Blocky], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(one())
    assert result.status == "completed"
    assert len(blocked_events(result)) == 1


@pytest.mark.asyncio
async def test_a_garbage_collection_pause_is_not_blamed_on_the_handler() -> None:
    def slow_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            time.sleep(BLOCK)  # a long pause inside the collector, not in the handler's code

    @Agent("collector")
    class Collector:
        @on_assignment
        async def work(self, intent: Intent) -> dict[str, Any]:
            gc.callbacks.append(slow_collection)  # after the runtime's own callback
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(slow_collection)
            return {}

    async with Runtime(agents=[Collector], blocking_threshold=THRESHOLD) as rt:
        result = await rt.run(one(assign="collector"))
    assert result.status == "completed"
    assert blocked_events(result) == []


# ------------------------------------------------------------ loop blocking hooks
# Loop-blocking detection in lifecycle hooks: the event and the warning name the intent.


HOOK_BLOCK = 0.3  # seconds a hook holds the loop


@Agent("hook-blocker")
class HookBlocker:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        return {"done": True}

    @on_event("completed")
    async def heard(self, event: Any) -> None:
        time.sleep(HOOK_BLOCK)  # noqa: ASYNC251 - the blocking call under test


@pytest.mark.asyncio
async def test_an_event_hook_that_blocks_is_reported_on_its_events_intent() -> None:
    with capture_logs() as logs:
        async with Runtime(agents=[HookBlocker], blocking_threshold=THRESHOLD) as rt:
            spec = PortfolioSpec("p", [IntentSpec(title="Job", assign="hook-blocker")])
            result = await rt.run(spec)
    [event] = result.events.of_type("loop_blocked")
    assert event.title == "Job"
    assert event.data["handler"].endswith("HookBlocker.heard")
    [warning] = [log for log in logs if "blocked the event loop" in log["event"]]
    assert warning["intent"] == "Job"
    assert warning["intent_id"] == result.intents["Job"].id
