"""Cancellation, timeouts and concurrency of the scheduler.

Nothing here depends on how fast the machine is. A run is cancelled when the test has seen
what it waits for (an ``anyio.Event`` a handler sets, or an event of the log), never after a
guessed real delay; waits and timeouts that tests measure run on a ``VirtualClock``. What
needs the real clock (worker threads, the real clock's own timeouts) asserts only bounds
that hold on a loaded machine. Every wait that would hang on a regression is bounded by
``HANG_GUARD`` real seconds (or a virtual deadline), so a broken scheduler fails these tests
instead of hanging them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
)
from openintent.models import Event

NO_RETRY_DELAY = {"initial_delay": 0, "jitter": False}
HANG_GUARD = 10  # real seconds; only a regression that hangs ever waits this long


def statuses(result: Any) -> dict[str, str]:
    return {title: str(item.status) for title, item in result.intents.items()}


async def collect(stream: Any) -> list[Event]:
    """Every event of ``rt.events()`` up to and including ``run_finished``."""
    with anyio.fail_after(HANG_GUARD):
        return [event async for event in stream]


async def run_and_cancel(
    rt: Runtime, spec: PortfolioSpec, when: anyio.Event | str, coordinator: Any = None
) -> tuple[anyio.CancelScope, bool]:
    """``rt.run(spec)`` in a cancel scope that is cancelled as soon as ``when`` happens: an
    ``anyio.Event`` is set, or an event of that type is logged. Returns the scope and whether
    ``rt.run`` returned (it must not: it is cancelled)."""
    returned = False
    with anyio.fail_after(HANG_GUARD), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_it_happens() -> None:
                if isinstance(when, str):
                    async for event in rt.events():
                        if event.type == when:
                            break
                else:
                    await when.wait()
                scope.cancel()

            tg.start_soon(cancel_when_it_happens)
            await rt.run(spec, coordinator=coordinator)
            returned = True
            tg.cancel_scope.cancel()
    return scope, returned


# ------------------------------------------------------------------------ cancelling the run


@pytest.mark.asyncio
async def test_cancelling_run_cancels_every_running_handler_and_leaves_no_task() -> None:
    entered: list[str] = []
    finalized: list[str] = []
    inside: set[str] = set()
    returned: list[str] = []
    tasks_during: set[asyncio.Task[Any]] = set()
    all_entered = anyio.Event()

    @Agent("sleeper")
    class Sleeper:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            entered.append(intent.title)
            inside.add(intent.title)
            if len(entered) == 5:
                tasks_during.update(asyncio.all_tasks())
                all_entered.set()
            try:
                await anyio.sleep(10)
            finally:
                finalized.append(intent.title)
                inside.discard(intent.title)
            returned.append(intent.title)
            return {}

    roots = [f"root{i}" for i in range(5)]
    spec = PortfolioSpec(
        name="cancelled",
        intents=[
            *(IntentSpec(title, assign="sleeper") for title in roots),
            IntentSpec("join", assign="sleeper", depends_on=roots),
            IntentSpec("after-join", assign="sleeper", depends_on=["join"]),
        ],
    )
    before = asyncio.all_tasks()
    async with Runtime(agents=[Sleeper], seed=1) as rt:
        stream = rt.events()
        scope, run_returned = await run_and_cancel(rt, spec, all_entered)
        events = await collect(stream)
    after = asyncio.all_tasks()

    assert scope.cancelled_caught
    assert not run_returned
    assert all_entered.is_set()
    assert sorted(entered) == roots  # the dependents never started
    assert sorted(finalized) == roots  # every handler's finally ran, once
    assert inside == set()  # ... and no handler is still running
    assert returned == []  # none of them ran on past its sleep
    # The runtime did start tasks of its own, and none of them survives the cancellation.
    assert tasks_during - before
    assert after == before

    # The log records the cancellation: every unfinished intent, then the run.
    cancelled = {event.intent_id for event in events if event.type == "cancelled"}
    created = {event.data["title"]: event.intent_id for event in events if event.type == "created"}
    assert cancelled == set(created.values())
    assert events[-1].type == "run_finished"
    assert events[-1].data == {"status": "cancelled"}
    assert "completed" not in [event.type for event in events]


@pytest.mark.asyncio
async def test_runtime_runs_again_after_a_cancelled_run() -> None:
    stuck_entered = anyio.Event()

    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.title == "stuck":
                stuck_entered.set()
                await anyio.sleep(10)
            return {"title": intent.title}

    async with Runtime(agents=[Worker], seed=1) as rt:
        first = PortfolioSpec(name="first", intents=[IntentSpec("stuck", assign="worker")])
        scope, returned = await run_and_cancel(rt, first, stuck_entered)
        assert scope.cancelled_caught and not returned
        with anyio.fail_after(HANG_GUARD):
            result = await rt.run(
                PortfolioSpec(
                    name="second",
                    intents=[
                        IntentSpec("a", assign="worker"),
                        IntentSpec("b", assign="worker", depends_on=["a"]),
                    ],
                )
            )
    assert result.status == "completed"
    assert statuses(result) == {"a": "completed", "b": "completed"}
    assert result.events.types().count("run_finished") == 1
    assert "cancelled" not in result.events.types()


@pytest.mark.asyncio
async def test_cancelling_during_on_all_complete_still_finishes_the_log() -> None:
    finalized: list[str] = []
    finishing = anyio.Event()

    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"done": True}

    @Coordinator("lead")
    class Lead:
        @on_all_complete
        async def finish(self, portfolio: Any) -> str:
            finishing.set()
            try:
                await anyio.sleep(10)
            finally:
                finalized.append(portfolio.name)
            return "never"

    spec = PortfolioSpec(name="wrap-up", intents=[IntentSpec("job", assign="worker")])
    async with Runtime(agents=[Worker], seed=1) as rt:
        stream = rt.events()
        scope, _ = await run_and_cancel(rt, spec, finishing, coordinator=Lead)
        events: list[Event] = []
        with anyio.move_on_after(HANG_GUARD) as hang:  # the bug: the stream never ends
            events = [event async for event in stream]

    assert scope.cancelled_caught
    assert finalized == ["wrap-up"]
    assert not hang.cancelled_caught, "rt.events() never ended after the cancelled run"
    assert events[-1].type == "run_finished"
    assert events[-1].data == {"status": "cancelled"}


@pytest.mark.asyncio
async def test_cancelling_run_also_cancels_handlers_waiting_in_retry_backoff() -> None:
    attempts: list[int] = []

    @Agent("flaky")
    class Flaky:
        @on_assignment
        async def work(self, intent: Any) -> None:
            attempts.append(intent.attempt)
            raise RuntimeError("try again later")

    spec = PortfolioSpec(
        name="backoff",
        intents=[
            IntentSpec(
                "flaky",
                assign="flaky",
                retry={"max_attempts": 3, "initial_delay": 10, "jitter": False},
            )
        ],
    )
    before = asyncio.all_tasks()
    start = time.monotonic()
    async with Runtime(agents=[Flaky], seed=1) as rt:
        stream = rt.events()
        scope, _ = await run_and_cancel(rt, spec, "retry_scheduled")
        events = await collect(stream)
    assert time.monotonic() - start < 5  # the 10 s backoff was not waited out
    assert scope.cancelled_caught
    assert attempts == [1]  # the 10 s backoff was cancelled, not waited out
    assert [event.type for event in events][-3:] == ["retry_scheduled", "cancelled", "run_finished"]
    assert asyncio.all_tasks() == before


# ------------------------------------------------------------------------ concurrency


@pytest.mark.asyncio
async def test_fan_out_handlers_all_run_at_once() -> None:
    width = 20
    arrived: list[str] = []
    inside = 0
    most_inside = 0
    everyone_here = anyio.Event()

    @Agent("fan")
    class Fan:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            nonlocal inside, most_inside
            if not intent.title.startswith("leaf"):
                return {}
            inside += 1
            most_inside = max(most_inside, inside)
            arrived.append(intent.title)
            if len(arrived) == width:
                everyone_here.set()
            # Only proceeds once all `width` handlers are inside at the same time; the guard
            # (virtual: it fires as soon as every handler waits and nobody else can come)
            # turns a scheduler with barriers or a worker limit into a failure, not a hang.
            with clock.timeout(60):
                await everyone_here.wait()
            inside -= 1
            return {"saw_everyone": everyone_here.is_set()}

    leaves = [f"leaf{i:02d}" for i in range(width)]
    spec = PortfolioSpec(
        name="fan-out",
        intents=[
            IntentSpec("root", assign="fan"),
            *(IntentSpec(leaf, assign="fan", depends_on=["root"]) for leaf in leaves),
            IntentSpec("join", assign="fan", depends_on=leaves),
        ],
    )
    clock = VirtualClock()
    async with Runtime(agents=[Fan], seed=1, clock=clock) as rt:
        result = await rt.run(spec)

    assert result.status == "completed"
    assert most_inside == width
    assert sorted(arrived) == leaves
    assert all(result.intents[leaf].state == {"saw_everyone": True} for leaf in leaves)
    # No leaf finished before the last one was dispatched: they really overlapped.
    types = [(event.type, event.intent_id) for event in result.events]
    leaf_ids = {result.intents[leaf].id for leaf in leaves}
    last_dispatch = max(
        i for i, (kind, id_) in enumerate(types) if kind == "dispatched" and id_ in leaf_ids
    )
    first_completion = min(
        i for i, (kind, id_) in enumerate(types) if kind == "completed" and id_ in leaf_ids
    )
    assert last_dispatch < first_completion


@pytest.mark.asyncio
async def test_a_slow_branch_does_not_hold_up_an_unrelated_fast_chain() -> None:
    release = anyio.Event()
    slow_inside = False
    seen_by_last_fast: dict[str, bool] = {}

    @Agent("slow")
    class Slow:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            nonlocal slow_inside
            slow_inside = True
            with clock.timeout(60) as guard:  # virtual: fires only if nothing else can run
                await release.wait()
            slow_inside = False
            return {"released_by_fast_chain": not guard.cancelled_caught}

    @Agent("fast")
    class Fast:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await anyio.lowlevel.checkpoint()
            if intent.title == "fast3":
                seen_by_last_fast["slow_still_blocked"] = slow_inside and not release.is_set()
                release.set()
            return {"step": intent.title}

    # "slow" and "fast1" are siblings under "root"; a scheduler that ran the DAG level by
    # level would not start fast2 before slow finished, and slow waits for fast3.
    spec = PortfolioSpec(
        name="branches",
        intents=[
            IntentSpec("root", assign="fast"),
            IntentSpec("slow", assign="slow", depends_on=["root"]),
            IntentSpec("fast1", assign="fast", depends_on=["root"]),
            IntentSpec("fast2", assign="fast", depends_on=["fast1"]),
            IntentSpec("fast3", assign="fast", depends_on=["fast2"]),
        ],
    )
    clock = VirtualClock()
    async with Runtime(agents=[Slow, Fast], seed=1, clock=clock) as rt:
        result = await rt.run(spec)

    assert result.status == "completed"
    assert seen_by_last_fast == {"slow_still_blocked": True}
    assert result.intents["slow"].state == {"released_by_fast_chain": True}
    completed = [event.intent_id for event in result.events.of_type("completed")]
    order = [result.intents[title].id for title in ("root", "fast1", "fast2", "fast3", "slow")]
    assert completed == order
    assert clock.now() == 0.0  # nobody waited for the slow handler's guard


# ------------------------------------------------------------------------ per-intent timeouts


@pytest.mark.asyncio
@pytest.mark.parametrize("clock_kind", ["virtual", "real"])
@pytest.mark.parametrize("max_attempts", [1, 2])
async def test_timeout_cancels_the_attempt_and_fails_it(max_attempts: int, clock_kind: str) -> None:
    entered: list[int] = []
    finalized: list[int] = []

    @Agent("sleepy")
    class Sleepy:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            entered.append(intent.attempt)
            try:
                await openintent.sleep(10)
            finally:
                finalized.append(intent.attempt)
            return {"woke": True}

    @Agent("other")
    class Other:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {"ok": True}

    spec = PortfolioSpec(
        name="timeouts",
        intents=[
            IntentSpec(
                "sleepy",
                assign="sleepy",
                timeout=0.05,
                retry={"max_attempts": max_attempts, **NO_RETRY_DELAY},
            ),
            IntentSpec("after", assign="other", depends_on=["sleepy"]),
            IntentSpec("apart", assign="other"),
        ],
    )
    clock = VirtualClock() if clock_kind == "virtual" else None
    start = time.monotonic()
    async with Runtime(agents=[Sleepy, Other], seed=1, clock=clock) as rt:
        result = await rt.run(spec)
    elapsed = time.monotonic() - start

    attempts = list(range(1, max_attempts + 1))
    assert entered == attempts
    assert finalized == attempts
    if clock is not None:
        assert clock.now() == pytest.approx(0.05 * max_attempts)
    else:  # the real clock: never early, and far from the handler's 10 s on a busy machine
        assert 0.05 * max_attempts <= elapsed < 5
    assert result.status == "failed"
    assert statuses(result) == {"sleepy": "failed", "after": "skipped", "apart": "completed"}
    item = result.intents["sleepy"]
    assert item.attempts == max_attempts
    assert item.error_type == "IntentTimeoutError"
    assert item.state == {}

    events = result.events.for_intent(item.id)
    dispatched = [event.data["attempt"] for event in events if event.type == "dispatched"]
    assert dispatched == attempts
    failures = [event.data for event in events if event.type == "attempt_failed"]
    assert [failure["attempt"] for failure in failures] == attempts
    assert {failure["error_type"] for failure in failures} == {"IntentTimeoutError"}
    assert [event.type for event in events][-1] == "failed"


@pytest.mark.asyncio
async def test_timeout_does_not_touch_an_attempt_that_finishes_in_time() -> None:
    @Agent("quick")
    class Quick:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await openintent.sleep(0.29)
            return {"done": intent.attempt}

    spec = PortfolioSpec(name="in-time", intents=[IntentSpec("quick", assign="quick", timeout=0.3)])
    async with Runtime(agents=[Quick], seed=1, clock=VirtualClock()) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    assert result.intents["quick"].state == {"done": 1}
    assert "attempt_failed" not in result.events.types()


@pytest.mark.asyncio
async def test_timeout_retry_succeeds_on_a_later_attempt() -> None:
    finalized: list[int] = []

    @Agent("slow-then-fast")
    class SlowThenFast:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            try:
                if intent.attempt == 1:
                    await openintent.sleep(10)
                return {"attempt": intent.attempt}
            finally:
                finalized.append(intent.attempt)

    spec = PortfolioSpec(
        name="retry-after-timeout",
        intents=[
            IntentSpec(
                "job",
                assign="slow-then-fast",
                timeout=0.05,
                retry={"max_attempts": 2, **NO_RETRY_DELAY},
            )
        ],
    )
    async with Runtime(agents=[SlowThenFast], seed=1, clock=VirtualClock()) as rt:
        result = await rt.run(spec)
    assert result.status == "completed"
    assert finalized == [1, 2]
    item = result.intents["job"]
    assert (item.attempts, item.state) == (2, {"attempt": 2})
    failures = result.events.of_type("attempt_failed")
    assert [event.data["error_type"] for event in failures] == ["IntentTimeoutError"]


@pytest.mark.asyncio
async def test_timeout_applies_to_a_sync_handler() -> None:
    gate = threading.Event()

    @Agent("blocking")
    class Blocking:
        @on_assignment
        def work(self, intent: Any) -> dict[str, Any]:
            gate.wait(timeout=HANG_GUARD)  # far past the intent's 0.05 s timeout
            return {"late": True}

    spec = PortfolioSpec(
        name="sync-timeout", intents=[IntentSpec("job", assign="blocking", timeout=0.05)]
    )
    try:
        async with Runtime(agents=[Blocking], seed=1) as rt:
            result = await rt.run(spec)
    finally:
        gate.set()
    item = result.intents["job"]
    assert (item.status, item.error_type) == ("failed", "IntentTimeoutError")
    assert item.state == {}


# ------------------------------------------------------------------------ sync handlers


@pytest.mark.asyncio
async def test_sync_handler_runs_in_a_thread_without_blocking_the_loop() -> None:
    gate = threading.Event()
    entered = threading.Event()
    left = threading.Event()
    fast_done = anyio.Event()
    handler_thread: list[int] = []
    observed: dict[str, bool] = {}

    @Agent("blocking")
    class Blocking:
        @on_assignment
        def work(self, intent: Any) -> dict[str, Any]:
            handler_thread.append(threading.get_ident())
            entered.set()
            released = gate.wait(timeout=HANG_GUARD)  # a blocked loop would time this out
            left.set()
            return {"released": released}

    @Agent("async")
    class Async:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.title == "fast1":
                # Finishes only once the sync handler is blocked in its thread.
                saw_entered = await anyio.to_thread.run_sync(entered.wait, HANG_GUARD)
                return {"title": intent.title, "saw_blocking_inside": saw_entered}
            if intent.title == "fast2":
                fast_done.set()
            return {"title": intent.title}

    spec = PortfolioSpec(
        name="threads",
        intents=[
            IntentSpec("blocking", assign="blocking"),
            IntentSpec("fast1", assign="async"),
            IntentSpec("fast2", assign="async", depends_on=["fast1"]),
        ],
    )

    async def release_once_the_async_branch_is_done() -> None:
        with anyio.fail_after(HANG_GUARD):
            await fast_done.wait()
        observed["blocking_still_inside"] = entered.is_set() and not left.is_set()
        gate.set()

    try:
        async with Runtime(agents=[Blocking, Async], seed=1) as rt:
            async with anyio.create_task_group() as tg:
                tg.start_soon(release_once_the_async_branch_is_done)
                result = await rt.run(spec)
    finally:
        gate.set()  # never leave the worker thread blocked, whatever happened

    assert result.status == "completed"
    assert observed == {"blocking_still_inside": True}
    assert result.intents["blocking"].state == {"released": True}
    assert result.intents["fast1"].state == {"title": "fast1", "saw_blocking_inside": True}
    assert handler_thread and handler_thread[0] != threading.get_ident()
    completed = [event.intent_id for event in result.events.of_type("completed")]
    ids = {title: item.id for title, item in result.intents.items()}
    assert completed == [ids["fast1"], ids["fast2"], ids["blocking"]]
