"""The runtime facade: dispatch along the graph, failure propagation, event streams, runs."""

from __future__ import annotations

import anyio
import pytest
import structlog

import openintent
from openintent import (
    IntentStatus,
    OpenIntentError,
    RunFailedError,
    RunStatus,
    Runtime,
    VirtualClock,
)
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    on_all_complete,
    on_assignment,
)

from _helpers import HANG_GUARD, Echo, FlakyAgent, Lead, portfolio, run

pytestmark = pytest.mark.asyncio






async def test_a_chain_passes_each_result_to_its_dependent():
    @Agent("sum")
    class Sum:
        @on_assignment
        async def add(self, intent):
            total = sum(state["n"] for state in intent.inputs.values())
            return {"n": total + intent.state.get("n", 0)}

    spec = portfolio(
        IntentSpec("A", assign="sum", initial_state={"n": 1}),
        IntentSpec("B", assign="sum", initial_state={"n": 2}),
        IntentSpec("C", assign="sum", depends_on=["A", "B"]),
    )
    result = await run(spec, Sum)
    assert result.status == RunStatus.COMPLETED == "completed"
    assert result.intents["C"].state == {"n": 3}
    assert result.intents["A"].state == {"n": 1}
    assert result.intents["C"].version == 1
    assert result.intents["C"].assigned_to == "sum"
    assert result.intents["C"].attempts == 1
    assert list(result.intents) == ["A", "B", "C"]


async def test_handler_sees_the_intent_fields():
    seen = []

    @Agent("inspect")
    class Inspect:
        @on_assignment
        async def work(self, intent):
            seen.append(intent)
            return None

    spec = portfolio(IntentSpec("A", assign="inspect", description="d", tags=["t"],
                                constraints={"tone": "formal"}, initial_state={"k": "v"}))
    result = await run(spec, Inspect)
    (intent,) = seen
    assert intent.id == result.intents["A"].id
    assert intent.portfolio_id == result.portfolio_id
    assert (intent.title, intent.description, intent.tags) == ("A", "d", ("t",))
    assert intent.constraints == {"tone": "formal"}
    assert intent.state == {"k": "v"}
    assert intent.status == IntentStatus.RUNNING
    assert intent.attempt == 1
    assert intent.assigned_to == "inspect"
    assert intent.idempotency_key == intent.id
    assert result.intents["A"].state == {"k": "v"}  # None changes nothing
    assert result.intents["A"].version == 0


async def test_several_assignment_handlers_run_in_order_and_merge():
    @Agent("multi")
    class Multi:
        @on_assignment
        async def first(self, intent):
            return {"a": 1, "b": 1}

        @on_assignment
        def second(self, intent):
            return {"b": 2}

    result = await run(portfolio(IntentSpec("A", assign="multi")), Multi)
    assert result.intents["A"].state == {"a": 1, "b": 2}


async def test_a_non_dict_return_fails_the_attempt_with_a_clear_error():
    @Agent("bad")
    class Bad:
        @on_assignment
        async def work(self, intent):
            return ["not", "a", "dict"]

    result = await run(portfolio(IntentSpec("A", assign="bad")), Bad)
    assert result.intents["A"].status == "failed"
    assert result.intents["A"].error_type == "DataError"  # a TypeError
    assert "returns a dict" in result.intents["A"].error


async def test_a_failure_skips_exactly_its_descendants_and_keeps_other_branches():
    spec = portfolio(
        IntentSpec("Bad", assign="flaky"),
        IntentSpec("Child", assign="echo", depends_on=["Bad"]),
        IntentSpec("Grandchild", assign="echo", depends_on=["Child"]),
        IntentSpec("Other", assign="echo"),
        IntentSpec("AfterOther", assign="echo", depends_on=["Other"]),
    )
    echo = Echo()
    result = await run(spec, FlakyAgent(failures=1), echo)
    statuses = {title: item.status for title, item in result.intents.items()}
    assert statuses == {
        "Bad": "failed", "Child": "skipped", "Grandchild": "skipped",
        "Other": "completed", "AfterOther": "completed",
    }
    assert echo.calls == ["Other", "AfterOther"]
    assert result.status == RunStatus.FAILED
    assert result.output is None
    skipped = result.events.of_type("skipped")
    assert {event.data["reason"] for event in skipped} == {"dependency 'Bad' failed"}
    with pytest.raises(RunFailedError, match="'Bad' failed") as caught:
        result.raise_for_status()
    (failure,) = caught.value.failures
    assert failure.title == "Bad"
    assert isinstance(failure.__cause__, RuntimeError)


async def test_events_stream_live_and_end_with_the_run():
    spec = portfolio(IntentSpec("A", assign="echo"), IntentSpec("B", assign="echo",
                                                                  depends_on=["A"]))
    streamed = []
    async with Runtime(agents=[Echo]) as rt:
        stream = rt.events()

        async def consume() -> None:
            async for event in stream:
                streamed.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            result = await rt.run(spec)
    assert streamed == list(result.events)


async def test_a_late_subscriber_still_sees_the_whole_run():
    streamed = []

    entered = anyio.Event()
    subscribed = anyio.Event()

    @Agent("slow")
    class Slow:
        @on_assignment
        async def work(self, intent):
            entered.set()
            await subscribed.wait()  # the run goes on only once the late subscriber is in
            return {}

    async with Runtime(agents=[Slow]) as rt:
        async with anyio.create_task_group() as tg:

            async def late() -> None:
                await entered.wait()  # the run has started and dispatched A
                stream = rt.events()
                subscribed.set()
                async for event in stream:
                    streamed.append(event.type)

            tg.start_soon(late)
            with anyio.fail_after(HANG_GUARD):
                result = await rt.run(portfolio(IntentSpec("A", assign="slow")))
    assert "dispatched" in result.events.types()
    assert streamed == result.events.types()


async def test_agents_are_found_in_the_default_registry_by_id(openintent_registry):
    @Agent("registered")
    class Registered:
        @on_assignment
        async def work(self, intent):
            return {"found": True}

    @Coordinator("registered-lead")
    class RegisteredLead:
        @on_all_complete
        async def done(self, portfolio):
            return "done"

    async with Runtime() as rt:
        result = await rt.run(portfolio(IntentSpec("A", assign="registered")),
                              coordinator="registered-lead")
    assert result.intents["A"].state == {"found": True}
    assert result.output == "done"


async def test_a_runtime_runs_several_portfolios_and_refuses_after_closing():
    echo = Echo()
    async with Runtime(agents=[echo]) as rt:
        first = await rt.run(portfolio(IntentSpec("A", assign="echo"), name="one"))
        second = await rt.run(portfolio(IntentSpec("B", assign="echo"), name="two"))
    assert (first.name, second.name) == ("one", "two")
    assert first.portfolio_id != second.portfolio_id
    assert echo.calls == ["A", "B"]
    with pytest.raises(OpenIntentError, match="closed"):
        await rt.run(portfolio(IntentSpec("C", assign="echo")))


async def test_run_level_logs_carry_the_portfolio_and_nothing_is_configured(
    monkeypatch, reset_structlog
):
    with structlog.testing.capture_logs() as logs:

        def configure(*args, **kwargs):
            raise AssertionError("a library never configures logging")

        monkeypatch.setattr(structlog, "configure", configure)
        result = await run(portfolio(IntentSpec("A", assign="flaky")), FlakyAgent(failures=1))
    assert all(entry["portfolio_id"] == result.portfolio_id for entry in logs)
    run_level = [entry for entry in logs if entry["log_level"] != "debug"]
    assert [entry["event"] for entry in run_level] == [
        "run started", "intent failed", "run finished"
    ]
    assert run_level[1]["intent"] == "A" and run_level[1]["log_level"] == "warning"
    # capture_logs configures structlog to want everything: then each event is a debug line.
    debug = [entry["event"] for entry in logs if entry["log_level"] == "debug"]
    assert debug == result.events.types()


async def test_an_empty_portfolio_completes():
    result = await run(portfolio(), coordinator=Lead)
    assert result.status == "completed"
    assert result.output == {"done": []}


async def test_events_of_concurrent_runs_stream_until_every_run_finished():
    @Agent("nap")
    class Nap:
        @on_assignment
        async def work(self, intent):
            await openintent.sleep(10 if intent.title == "slow" else 0)
            return {}

    streamed = []
    async with Runtime(agents=[Nap], clock=VirtualClock()) as rt:
        stream = rt.events()
        results = []

        async def consume() -> None:
            async for event in stream:
                streamed.append(event)

        async def one(title: str) -> None:
            results.append(await rt.run(portfolio(IntentSpec(title, assign="nap"), name=title)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(one, "slow")
            tg.start_soon(one, "fast")
    assert sorted(map(tuple, streamed)) == sorted(
        tuple(event) for result in results for event in result.events
    )
