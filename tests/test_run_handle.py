"""Run handles: ``handle = await rt.start(spec)`` inside ``async with Runtime(...)``, and what
``rt.events()`` streams once a run has finished.

Every run here is on a ``VirtualClock``. Waits that would hang on a regression are bounded by
:func:`watchdog`, a real-time limit kept in a thread: a timer on the event loop (``fail_after``)
would keep the virtual clock from jumping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import pytest_asyncio

import openintent
from openintent import (
    OpenIntentError,
    RunHandle,
    RunStatus,
    Runtime,
    UnknownAgentError,
    VirtualClock,
)
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.errors import ApprovalError
from openintent.models import Event
from openintent.testing import SimulatedAgent

pytestmark = pytest.mark.asyncio



@contextmanager
def watchdog(seconds: float = 10) -> Iterator[None]:
    """Fail the test instead of hanging it (no test comes near ``seconds`` of real time)."""
    loop = asyncio.get_running_loop()
    with anyio.CancelScope() as scope:
        timer = threading.Timer(seconds, loop.call_soon_threadsafe, (scope.cancel,))
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
    if scope.cancelled_caught:
        pytest.fail(f"still waiting after {seconds} s of real time: a hang")


def sleeper(finished: list[str]) -> type:
    """An agent whose handler sleeps an hour on the runtime's clock, recording its finally."""

    @Agent("sleeper")
    class Sleeper:
        @on_assignment
        async def work(self, intent):
            try:
                await openintent.sleep(3600)
                return {"slept": True}
            finally:
                finished.append(intent.title)

    return Sleeper


def approval_lead(**approval: Any) -> type:
    @Coordinator("lead", guardrails=[{"type": "approval", **approval}])
    class Lead:
        pass

    return Lead


def release() -> PortfolioSpec:
    return PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])


# ------------------------------------------------------------------------ start and result


async def test_start_returns_a_running_handle_and_result_returns_the_run_result():
    SimulatedAgent("worker", result={"ok": True}, delay=5)
    clock = VirtualClock()
    with watchdog():
        async with Runtime(clock=clock, seed=0) as rt:
            handle = await rt.start(release())
            assert isinstance(handle, RunHandle)
            assert handle.status == RunStatus.RUNNING == "running"
            assert not handle.done
            results: list[Any] = []

            async def wait() -> None:
                results.append(await handle.result())

            async with anyio.create_task_group() as tg:  # several waiters at once
                tg.start_soon(wait)
                tg.start_soon(wait)
            again = await handle.result()

    assert results[0] is results[1] is again
    assert again.status == "completed" and handle.status == "completed" and handle.done
    assert handle.portfolio_id == again.portfolio_id
    assert handle.name == "release"
    assert [item.status for item in again.intents.values()] == ["completed", "completed"]
    assert clock.now() == 10.0


async def test_start_validates_the_spec_and_raises_from_the_call_itself():
    SimulatedAgent("worker", result={"ok": True})
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            with pytest.raises(UnknownAgentError, match="nobody"):
                await rt.start(PortfolioSpec("bad", [IntentSpec("A", assign="nobody")]))
            with pytest.raises(openintent.SpecError, match="PortfolioSpec"):
                await rt.start("not a spec")  # type: ignore[arg-type]
            assert rt.pending_approvals() == []
        assert [event async for event in rt.events()] == []  # nothing ran


async def test_start_outside_async_with_raises_a_clear_error():
    SimulatedAgent("worker", result={"ok": True})
    rt = Runtime(clock=VirtualClock(), seed=0)
    with pytest.raises(OpenIntentError, match=r"async with Runtime\(\.\.\.\)"):
        await rt.start(release())
    result = await rt.run(release())  # rt.run needs no block
    assert result.status == "completed"
    async with rt:
        pass
    with pytest.raises(OpenIntentError, match="closed"):
        await rt.start(release())


# ------------------------------------------------------------------------ events


async def test_handle_events_started_after_the_run_finished_yield_the_whole_run():
    SimulatedAgent("worker", result={"ok": True}, delay=1)
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            handle = await rt.start(release())
            result = await handle.result()
            late = [event async for event in handle.events()]
        after_close = [event async for event in handle.events()]

    assert late == list(result.events) == after_close
    assert late[0].type == "run_started" and late[-1].type == "run_finished"


async def test_handle_events_stream_live_and_hold_only_that_run():
    SimulatedAgent("worker", result={"ok": True}, delay=1)
    streams: dict[str, list[Event]] = {}
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            first = await rt.start(release())
            second = await rt.start(PortfolioSpec("other", [IntentSpec("X", assign="worker")]))

            async def watch(name: str, handle: RunHandle) -> None:
                streams[name] = [event async for event in handle.events()]
                streams[name + " status"] = handle.status  # type: ignore[assignment]

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, "first", first)
                tg.start_soon(watch, "second", second)
            results = [await first.result(), await second.result()]

    assert streams["first"] == list(results[0].events)
    assert streams["second"] == list(results[1].events)
    assert {event.portfolio_id for event in streams["first"]} == {first.portfolio_id}
    assert first.portfolio_id != second.portfolio_id
    # The stream ends after run_finished, by which time the handle knows how the run ended.
    assert streams["first status"] == "completed"


async def test_rt_events_after_a_finished_run_replays_it_and_does_not_wait_for_another():
    SimulatedAgent("worker", result={"ok": True})
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            result = await rt.run(release())
            inside = [event async for event in rt.events()]
        closed = [event async for event in rt.events()]
    assert inside == list(result.events) == closed


async def test_rt_events_before_the_first_run_streams_the_next_run_to_start():
    SimulatedAgent("worker", result={"ok": True}, delay=1)
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            stream = rt.events()
            handle = await rt.start(release())
            streamed = [event async for event in stream]
            result = await handle.result()
    assert streamed == list(result.events)


async def test_rt_events_of_a_closed_runtime_that_never_ran_ends_at_once():
    with watchdog():
        async with Runtime(clock=VirtualClock()) as rt:
            pass
        assert [event async for event in rt.events()] == []


# ------------------------------------------------------------------------ approvals


async def test_approve_from_outside_the_run_through_the_handle_with_no_task_group():
    SimulatedAgent("worker", result={"ok": True})
    lead = approval_lead(require_for=["deploy"], approvers=["alice"])
    seen: list[Any] = []
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            handle = await rt.start(release(), coordinator=lead)
            async for event in handle.events():
                if event.type == "approval_requested":
                    seen.append(handle.pending_approvals())
                    with pytest.raises(ApprovalError, match="'mallory' may not decide"):
                        await handle.approve("Deploy", by="mallory")
                    seen.append(await handle.approve("Deploy", by="alice", note="ship it"))
            result = await handle.result()

    [[request]] = seen[:1]
    assert request.title == "Deploy" and request.intent_id == result.intents["Deploy"].id
    assert seen[1] is request and request.decided_by == "alice" and request.note == "ship it"
    assert result.status == "completed"
    assert result.intents["Deploy"].attempts == 1
    assert handle.pending_approvals() == []
    with pytest.raises(ApprovalError, match="has ended"):
        await handle.approve("Deploy", by="alice")


async def test_deny_through_the_handle_by_intent_id_fails_the_intent_without_an_attempt():
    worker = SimulatedAgent("worker", result={"ok": True})
    lead = approval_lead(require_for=["deploy"])
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            handle = await rt.start(release(), coordinator=lead)
            async for event in handle.events():
                if event.type == "approval_requested":
                    await handle.deny(event.intent_id, by="bob", note="change freeze")
            result = await handle.result()

    assert result.status == "failed"
    deploy = result.intents["Deploy"]
    assert (deploy.status, deploy.attempts) == ("failed", 0)
    assert deploy.error == "intent 'Deploy' was denied by bob: change freeze"
    assert worker.titles == ["Build"]


async def test_a_handle_decides_only_its_own_runs_requests():
    SimulatedAgent("worker", result={"ok": True})
    lead = approval_lead(require_for=["deploy"])
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            first = await rt.start(release(), coordinator=lead)
            second = await rt.start(release(), coordinator=lead)
            for handle in (first, second):
                async for event in handle.events():
                    if event.type == "approval_requested":
                        break
            assert [r.title for r in rt.pending_approvals()] == ["Deploy", "Deploy"]
            with pytest.raises(ApprovalError, match="pass the intent id"):
                await rt.approve("Deploy", by="alice")  # ambiguous across the two runs
            await first.approve("Deploy", by="alice")
            assert [r.portfolio_id for r in rt.pending_approvals()] == [second.portfolio_id]
            await second.deny("Deploy", by="bob")
            results = [await first.result(), await second.result()]
    assert [result.status for result in results] == ["completed", "failed"]


# ------------------------------------------------------------------------ cancellation


async def test_cancel_ends_the_run_cancelled_after_the_handlers_finally_blocks_ran():
    finished: list[str] = []
    sleeper(finished)
    spec = PortfolioSpec("nap", [
        IntentSpec("Nap", assign="sleeper"),
        IntentSpec("After", assign="sleeper", depends_on=["Nap"]),
    ])
    clock = VirtualClock()
    with watchdog():
        async with Runtime(clock=clock, seed=0) as rt:
            handle = await rt.start(spec)
            async for event in handle.events():
                if event.type == "dispatched":
                    break
            await handle.cancel()
            assert finished == ["Nap"]  # the handler's finally ran before cancel() returned
            assert handle.status == RunStatus.CANCELLED == "cancelled"
            result = await handle.result()
            await handle.cancel()  # again: nothing changes

    assert result.status == "cancelled"
    assert {title: item.status for title, item in result.intents.items()} == {
        "Nap": "cancelled", "After": "cancelled"}
    assert result.events[-1].type == "run_finished"
    assert result.events[-1].data == {"status": "cancelled"}
    assert clock.now() < 3600
    with pytest.raises(openintent.RunCancelledError):
        result.raise_for_status()


async def test_cancel_right_after_start_dispatches_nothing():
    worker = SimulatedAgent("worker", result={"ok": True})
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            handle = await rt.start(release())
            await handle.cancel()
    result = await handle.result()
    assert result.status == "cancelled"
    assert worker.titles == []
    assert result.events.of_type("dispatched") == []


async def test_cancel_after_the_run_ended_keeps_its_result():
    SimulatedAgent("worker", result={"ok": True})
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            handle = await rt.start(release())
            result = await handle.result()
            await handle.cancel()
    assert handle.status == "completed" and await handle.result() is result


# ------------------------------------------------------------------------ structured concurrency


async def test_leaving_the_block_waits_for_the_runs_it_started():
    SimulatedAgent("worker", result={"ok": True}, delay=30)
    clock = VirtualClock()
    with watchdog():
        async with Runtime(clock=clock, seed=0) as rt:
            handles = [await rt.start(release()), await rt.start(release())]
    assert [handle.status for handle in handles] == ["completed", "completed"]
    assert clock.now() == 60.0


async def test_an_exception_in_the_block_cancels_its_runs_and_reaches_the_caller_as_itself():
    finished: list[str] = []
    sleeper(finished)
    spec = PortfolioSpec("nap", [IntentSpec("Nap", assign="sleeper")])
    with watchdog(), pytest.raises(KeyError) as caught:
        async with Runtime(clock=VirtualClock(), seed=0) as rt:
            handle = await rt.start(spec)
            async for event in handle.events():
                if event.type == "dispatched":
                    break
            raise KeyError("boom")
    assert type(caught.value) is KeyError  # not an ExceptionGroup
    assert finished == ["Nap"]
    result = await handle.result()
    assert result.status == "cancelled"
    assert result.intents["Nap"].status == "cancelled"


async def test_cancelling_the_block_from_outside_cancels_its_runs():
    finished: list[str] = []
    sleeper(finished)
    spec = PortfolioSpec("nap", [IntentSpec("Nap", assign="sleeper")])
    with watchdog():
        with anyio.CancelScope() as scope:
            async with Runtime(clock=VirtualClock(), seed=0) as rt:
                handle = await rt.start(spec)
                async for event in handle.events():
                    if event.type == "dispatched":
                        scope.cancel()
                await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert finished == ["Nap"]
    assert handle.status == "cancelled"


async def test_cancelling_rt_run_still_cancels_the_run_and_reraises():
    finished: list[str] = []
    sleeper(finished)
    spec = PortfolioSpec("nap", [IntentSpec("Nap", assign="sleeper")])
    streamed: list[Event] = []
    with watchdog():
        async with Runtime(clock=VirtualClock(), seed=0) as rt, anyio.create_task_group() as tg:

            async def watch() -> None:
                async for event in rt.events():
                    streamed.append(event)
                    if event.type == "dispatched":
                        scope.cancel()

            tg.start_soon(watch)
            await anyio.lowlevel.checkpoint()
            with anyio.CancelScope() as scope:
                await rt.run(spec)
                pytest.fail("rt.run returned after its cancellation")
    assert scope.cancelled_caught
    assert finished == ["Nap"]
    assert streamed[-1].type == "run_finished"
    assert streamed[-1].data == {"status": "cancelled"}


_LEFT_RUNNING: list[RunHandle] = []


@pytest_asyncio.fixture
async def open_runtime() -> Any:
    """A runtime entered in a fixture: pytest-asyncio sets it up and tears it down in two
    different tasks."""
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        yield rt
    # The tear-down waited for the run the test left running.
    assert _LEFT_RUNNING and all(handle.done for handle in _LEFT_RUNNING)


async def test_a_runtime_entered_in_an_async_fixture_starts_runs_and_waits_for_them(
    open_runtime: Runtime,
):
    SimulatedAgent("worker", result={"ok": True}, delay=5)
    handle = await open_runtime.start(release())
    assert (await handle.result()).status == "completed"
    _LEFT_RUNNING.append(await open_runtime.start(release()))  # the tear-down waits for it


@pytest.mark.asyncio
async def test_leaving_the_runtime_while_a_run_goes_on_still_ends_its_event_stream() -> None:
    SimulatedAgent("a", result={"ok": True}, delay=5)
    out: dict[str, Any] = {}
    rt = Runtime(clock=VirtualClock(), seed=0)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            out["result"] = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]))

        async def watch() -> None:
            out["types"] = [event.type async for event in rt.events()]

        async with rt:
            tg.start_soon(watch)
            tg.start_soon(run)
            await anyio.lowlevel.checkpoint()
            await anyio.lowlevel.checkpoint()
    assert out["result"].status == "completed"
    assert out["types"][-1] == "run_finished"  # got the stream cut after "dispatched"
