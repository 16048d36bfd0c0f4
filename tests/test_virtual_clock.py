"""The virtual clock outside a run: time moves only once every task of the loop waits on it.

A ``clock.sleep`` in a side task (a test deciding approvals, a watcher) must not move time
while another task still has work to do, however many steps that work takes before it starts
a run or reads the clock. Like trio's ``MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import openintent
from openintent import OpenIntentError, Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
)
from openintent.testing import SimulatedAgent


@contextmanager
def watchdog(
    seconds: float = 10, message: str = "the virtual clock never woke the sleeper"
) -> Iterator[anyio.CancelScope]:
    """Cancel the block after ``seconds`` of real time, from a thread the virtual clock does
    not see (a real-time guard in the loop would keep virtual time still), and fail the test
    with ``message``."""
    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:
        timer = threading.Timer(seconds, loop.call_soon_threadsafe, [scope.cancel])
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()
    assert not scope.cancelled_caught, message


@pytest.mark.asyncio
@pytest.mark.parametrize("steps", [10, 50])
async def test_time_stands_still_outside_a_run_until_every_task_waits(steps: int) -> None:
    clock = VirtualClock()
    seen: dict[str, float] = {}

    async def sleeper() -> None:
        await clock.sleep(5)
        seen["sleeper woke"] = clock.now()

    async def busy() -> None:
        for _ in range(steps):
            await anyio.lowlevel.checkpoint()
        seen["after the steps"] = clock.now()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        tg.start_soon(busy)
    assert seen == {"after the steps": 0.0, "sleeper woke": 5.0}


@pytest.mark.asyncio
@pytest.mark.parametrize("steps", [10, 50])
async def test_a_run_started_late_beside_a_sleeping_task_starts_at_time_zero(steps: int) -> None:
    clock = VirtualClock()
    writer = SimulatedAgent("writer", result={"ok": True}, delay=2, register=False)
    woke: list[float] = []

    async def side_task() -> None:  # say, a test waiting to approve something
        await clock.sleep(5)
        woke.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(side_task)
        for _ in range(steps):
            await anyio.lowlevel.checkpoint()
        async with Runtime(agents=[writer], clock=clock) as rt:
            result = await rt.run(PortfolioSpec("late", [IntentSpec("Write", assign="writer")]))

    assert [call.time for call in writer.calls] == [0.0]
    assert result.events.of_type("completed")[0].time == 2.0
    assert woke == [5.0]


@pytest.mark.asyncio
async def test_a_side_sleep_begun_during_a_run_still_wakes_after_the_run_ends() -> None:
    clock = VirtualClock()
    dispatched = anyio.Event()
    woke: list[float] = []

    @Agent("working")
    class Working:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            dispatched.set()
            await clock.sleep(10)
            return {}

    async def side_task() -> None:  # not a task of the run, though the run drives the clock
        await dispatched.wait()
        await clock.sleep(50)
        woke.append(clock.now())

    with watchdog():
        async with anyio.create_task_group() as tg:
            tg.start_soon(side_task)
            async with Runtime(agents=[Working], clock=clock) as rt:
                result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="working")]))
    assert result.events[-1].time == 10.0
    assert woke == [50.0]


@pytest.mark.asyncio
async def test_sleeps_outside_a_run_each_wake_at_their_own_time() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleep(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleep, "long", 30)
        tg.start_soon(sleep, "short", 10)
        tg.start_soon(sleep, "middle", 20)
    assert woke == [("short", 10.0), ("middle", 20.0), ("long", 30.0)]


@pytest.mark.asyncio
async def test_a_real_sleep_beside_keeps_virtual_time_still() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def real_work() -> None:
        await anyio.sleep(0.02)  # real time passes; virtual time must not
        seen.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 60)
        tg.start_soon(real_work)
    assert seen == [0.0]
    assert clock.now() == 60.0


@pytest.mark.asyncio
async def test_a_held_thread_beside_keeps_virtual_time_still() -> None:
    clock = VirtualClock()
    release = threading.Event()
    seen: list[float] = []

    async def threaded() -> None:
        with clock.hold():
            await anyio.to_thread.run_sync(release.wait, 5)
        seen.append(clock.now())

    async def releaser() -> None:
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 60)
        tg.start_soon(threaded)
        tg.start_soon(releaser)
    assert seen == [0.0]


@pytest.mark.asyncio
async def test_a_virtual_timeout_outside_a_run_cancels_a_longer_sleep() -> None:
    clock = VirtualClock()
    with clock.timeout(3) as scope:
        await clock.sleep(10_000)
    assert scope.cancelled_caught
    assert clock.now() == 3.0


@pytest.mark.asyncio
async def test_sleep_outside_a_run_alone_still_jumps_at_once() -> None:
    clock = VirtualClock(start=100)
    await clock.sleep(3600)
    assert clock.now() == 3700.0


# ------------------------------------------------------------------ UTC time of events


@pytest.mark.asyncio
async def test_a_datetime_start_fixes_the_at_of_every_event_and_decision() -> None:
    start = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
    clock = VirtualClock(start=start)
    assert clock.now() == 0.0
    slow = SimulatedAgent("slow", result={"ok": True}, delay=90, register=False)
    async with Runtime(agents=[slow], clock=clock) as rt:
        result = await rt.run(PortfolioSpec("dated", [IntentSpec("A", assign="slow",
                                                                  timeout=60)]))
    assert result.events[0].at == start
    for event in result.events:
        assert event.at == start + timedelta(seconds=event.time)
    assert result.events.of_type("attempt_failed")[0].at == datetime(2025, 3, 1, 9, 31,
                                                                      tzinfo=UTC)


@pytest.mark.asyncio
async def test_a_start_in_another_time_zone_is_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    clock = VirtualClock(start=datetime(2025, 1, 1, 10, 0, tzinfo=paris))
    assert clock.wall(0.0) == datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
    assert clock.wall(0.0).tzinfo is UTC


def test_a_naive_datetime_start_is_refused() -> None:
    with pytest.raises(OpenIntentError, match="naive datetime.*tzinfo=UTC"):
        VirtualClock(start=datetime(2025, 1, 1))


@pytest.mark.asyncio
async def test_a_float_start_dates_events_from_the_unix_epoch() -> None:
    clock = VirtualClock()
    quick = SimulatedAgent("quick", result={}, delay=1.5, register=False)
    async with Runtime(agents=[quick], clock=clock, seed=0) as rt:
        result = await rt.run(PortfolioSpec("epoch", [IntentSpec("A", assign="quick")]))
    assert result.events[-1].at == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)


def _times(result: Any) -> list[tuple[float, datetime]]:
    return [(event.time, event.at) for event in result.events]


@pytest.mark.asyncio
async def test_same_seed_same_datetimes() -> None:
    async def once() -> Any:
        agent = SimulatedAgent("agent", result={}, delay=7, register=False)
        clock = VirtualClock(start=datetime(2030, 1, 1, tzinfo=UTC))
        async with Runtime(agents=[agent], clock=clock, seed=1) as rt:
            return await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="agent")]))

    assert _times(await once()) == _times(await once())


@pytest.mark.asyncio
async def test_virtual_time_does_not_jump_while_a_run_has_ready_work(
    runtime: Runtime, virtual_clock: VirtualClock
) -> None:
    # A test that decides approvals (or watches the run) from a side task waits on the clock
    # the same way; docs/testing.md: "Time stands still while anything can run".
    @Coordinator("timed", guardrails=[{"type": "timeout", "max_seconds": 300}])
    class Timed:
        pass

    SimulatedAgent("worker", result={"ok": True}, delay=10)
    async with anyio.create_task_group() as tg:

        async def side_task() -> None:
            await virtual_clock.sleep(1000)

        tg.start_soon(side_task)
        result = await runtime.run(
            PortfolioSpec("p", [IntentSpec("A", assign="worker")]), coordinator=Timed
        )
        tg.cancel_scope.cancel()

    dispatched = result.events.of_type("dispatched")
    assert dispatched[0].time == 0.0, f"first dispatch at t={dispatched[0].time}"
    assert result.status == "completed" and virtual_clock.now() == 10.0


@pytest.mark.asyncio
async def test_two_runtimes_on_their_own_virtual_clocks_run_concurrently() -> None:
    agent = SimulatedAgent("a", result={"ok": True}, delay=10)
    spec = PortfolioSpec("p", [IntentSpec("A", assign="a")])
    results: list[Any] = []

    async def one() -> None:
        async with Runtime(agents=[agent], clock=VirtualClock(), seed=0) as rt:
            results.append(await rt.run(spec))

    with watchdog(message="both runs were still at virtual time 0 after 10 s"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
    assert [r.status for r in results] == ["completed", "completed"]


@pytest.mark.asyncio
async def test_a_stuck_on_all_complete_is_reported_as_a_deadlock() -> None:
    never = anyio.Event()

    @Coordinator("lead")
    class Lead:
        @on_all_complete
        async def finish(self, portfolio: Any) -> None:
            await never.wait()

    SimulatedAgent("a", result={"v": 1})
    with watchdog(message="hung instead of halting with a virtual_clock breach"):
        async with Runtime(clock=VirtualClock(deadlock_after=0.05), seed=0) as rt:
            await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]), coordinator=Lead)


@pytest.mark.asyncio
async def test_virtual_sleep_outside_a_run_stops_at_an_earlier_timeout() -> None:
    clock = VirtualClock()
    with clock.timeout(10) as scope:
        await clock.sleep(1000)
    assert scope.cancelled_caught
    assert clock.now() == 10.0, clock.now()  # it is 1000.0


# ------------------------------------------------------------ virtual clock guards
# A real-time guard (``anyio.fail_after``, ``move_on_after``, ``asyncio.timeout``) around a
# virtual run is a deadline, not real work: virtual time still jumps, so the run finishes at
# once instead of stalling until the guard fires.


@Agent("guarded-sleeper")
class Sleeper:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await openintent.sleep(3600)
        return {"slept": True}


def sleeper_spec() -> PortfolioSpec:
    return PortfolioSpec("p", [IntentSpec(title="A", assign="guarded-sleeper")])


@pytest.mark.asyncio
@pytest.mark.parametrize("guard", ["fail_after", "move_on_after", "asyncio.timeout"])
async def test_a_real_time_guard_does_not_hold_virtual_time(guard: str) -> None:
    scopes = {
        "fail_after": lambda: anyio.fail_after(30),
        "move_on_after": lambda: anyio.move_on_after(30),
        "asyncio.timeout": lambda: asyncio.timeout(30),
    }
    result = None
    if guard == "asyncio.timeout":
        async with scopes[guard]():
            async with Runtime(agents=[Sleeper], clock=VirtualClock()) as rt:
                result = await rt.run(sleeper_spec())
    else:
        with scopes[guard]():
            async with Runtime(agents=[Sleeper], clock=VirtualClock()) as rt:
                result = await rt.run(sleeper_spec())
    assert result is not None and result.status == "completed"
    assert result.events[-1].time == 3600.0
