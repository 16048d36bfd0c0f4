"""Events people can read: every event carries its intent's title and its UTC time (``at``),
decisions carry ``at`` too, and ``EventLog`` queries chain."""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_event,
)
from openintent.models import Event, EventLog, RunResult
from openintent.testing import SimulatedAgent

from _helpers import Echo, portfolio, run

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def spec() -> PortfolioSpec:
    return PortfolioSpec("readable", [
        IntentSpec("Extract", assign="extractor"),
        IntentSpec("Load", assign="loader", depends_on=["Extract"],
                   retry={"max_attempts": 2, "initial_delay": 30, "jitter": False}),
    ])


def agents() -> list[SimulatedAgent]:
    return [
        SimulatedAgent("extractor", result={"rows": 3}, delay=60, register=False),
        SimulatedAgent("loader", result={"loaded": True}, delay=5, fail_times=1,
                       register=False),
    ]


async def virtual_run(clock: VirtualClock | None = None, **options: Any) -> RunResult:
    async with Runtime(agents=agents(), clock=clock or VirtualClock(start=START), seed=0,
                       **options) as rt:
        return await rt.run(spec())


# ------------------------------------------------------------------ title and at


@pytest.mark.asyncio
async def test_every_event_of_an_intent_carries_its_title_and_run_events_none() -> None:
    result = await virtual_run()
    ids = {item.id: title for title, item in result.intents.items()}
    for event in result.events:
        if event.intent_id is None:
            assert event.title is None, event
        else:
            assert event.title == ids[event.intent_id], event
    assert result.events[0].type == "run_started" and result.events[0].title is None
    assert {event.title for event in result.events.of_type("completed")} == {"Extract", "Load"}


@pytest.mark.asyncio
async def test_at_is_a_utc_datetime_from_the_runtime_clock() -> None:
    result = await virtual_run()
    for event in result.events:
        assert event.at.tzinfo is UTC
        assert event.at == START + timedelta(seconds=event.time)
    (completed,) = result.events.of_type("completed").for_intent(result.intents["Load"].id)
    # Extract 60 s, Load fails at 65, waits 30, answers 5 s later.
    assert completed.at == datetime(2025, 6, 1, 12, 1, 40, tzinfo=UTC)


@pytest.mark.asyncio
async def test_decisions_carry_at_too() -> None:
    @Coordinator("recorder")
    class Recorder:
        @on_event("completed")
        async def note(self, event: Event) -> None:
            await self.record_decision(intent_id=event.intent_id, decision="noted",
                                       rationale=f"{event.title} done")

    async with Runtime(agents=[*agents(), Recorder], clock=VirtualClock(start=START)) as rt:
        result = await rt.run(spec(), coordinator=Recorder)
    assert [decision.rationale for decision in result.decisions] == ["Extract done", "Load done"]
    for decision in result.decisions:
        assert decision.at == START + timedelta(seconds=decision.time)
        assert decision.to_dict()["at"] == decision.at.isoformat()


@pytest.mark.asyncio
async def test_to_dict_gives_at_as_an_iso_string_and_the_title() -> None:
    result = await virtual_run()
    event = result.events.of_type("completed")[0]
    as_dict = json.loads(json.dumps(event.to_dict()))
    assert as_dict["at"] == "2025-06-01T12:01:00+00:00"
    assert datetime.fromisoformat(as_dict["at"]) == event.at
    assert as_dict["title"] == "Extract"
    json.dumps(result.to_dict())  # the whole result stays JSON-serialisable


@pytest.mark.asyncio
async def test_on_the_real_clock_at_is_anchored_once_and_keeps_time_differences() -> None:
    before = datetime.now(UTC)
    async with Runtime(agents=[SimulatedAgent("quick", result={}, register=False)]) as rt:
        result = await rt.run(PortfolioSpec("real", [IntentSpec("A", assign="quick"),
                                                      IntentSpec("B", assign="quick")]))
    after = datetime.now(UTC)
    first = result.events[0]
    for event in result.events:
        assert event.at.tzinfo is UTC
        assert before <= event.at <= after
        assert (event.at - first.at).total_seconds() == pytest.approx(event.time - first.time,
                                                                      abs=1e-5)


@pytest.mark.asyncio
async def test_live_streams_and_hooks_see_titles_and_at() -> None:
    heard: list[tuple[str, str | None]] = []

    @Agent("hooked")
    class Hooked:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            return {}

        @on_event("dispatched")
        async def seen(self, event: Event) -> None:
            heard.append((event.type, event.title))

    streamed: list[Event] = []
    async with Runtime(agents=[Hooked], clock=VirtualClock(start=START)) as rt:
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                streamed.extend([event async for event in rt.events()])

            tg.start_soon(stream)
            await anyio.lowlevel.checkpoint()
            await rt.run(PortfolioSpec("live", [IntentSpec("Only", assign="hooked")]))
    assert heard == [("dispatched", "Only")]
    assert [event.title for event in streamed if event.intent_id] == ["Only"] * 4
    assert all(event.at == START for event in streamed)


# ------------------------------------------------------------------ chained queries


@pytest.mark.asyncio
async def test_of_type_and_for_intent_chain_in_either_order() -> None:
    result = await virtual_run()
    load = result.intents["Load"].id
    chained = result.events.of_type("completed").for_intent(load)
    assert isinstance(chained, EventLog)
    assert len(chained) == 1 and chained[0].type == "completed" and chained[0].intent_id == load
    other_way = result.events.for_intent(load).of_type("completed")
    assert list(other_way) == list(chained)
    assert chained[0] == result.events[chained[0].seq]  # seq stays the position in the log


@pytest.mark.asyncio
async def test_a_query_result_reads_like_the_log() -> None:
    result = await virtual_run()
    load = result.events.for_intent(result.intents["Load"].id)
    assert load.types() == ["created", "ready", "dispatched", "attempt_failed",
                            "retry_scheduled", "dispatched", "completed"]
    assert [event.type for event in load] == load.types()
    assert load[-1].type == "completed" and load[0].type == "created"
    assert [event.type for event in load[1:3]] == ["ready", "dispatched"]
    with pytest.raises(IndexError):
        load[7]
    failures = load.of_type("attempt_failed", "failed")
    assert len(failures) == 1 and failures.types() == ["attempt_failed"]
    assert result.events.of_type("skipped") == []  # equal to a list of the same events
    assert load.of_type("dispatched") == [load[2], load[5]]
    assert load.of_type("ready") + load.of_type("completed") == [load[1], load[6]]


@pytest.mark.asyncio
async def test_for_intent_takes_a_title_too() -> None:
    result = await virtual_run()
    by_title = result.events.for_intent("Load").of_type("dispatched")
    by_id = result.events.of_type("dispatched").for_intent(result.intents["Load"].id)
    assert list(by_title) == list(by_id) and len(by_title) == 2


@pytest.mark.asyncio
async def test_for_intent_refuses_a_name_that_is_no_intent_of_the_log() -> None:
    result = await virtual_run()
    with pytest.raises(ValueError, match=r"'Lod'.*did you mean 'Load'.*'Extract', 'Load'"):
        result.events.for_intent("Lod")
    with pytest.raises(ValueError, match="no intent of this log"):
        result.events.of_type("completed").for_intent("in_nothing_0")
    # An intent of the log with no events in the narrowed view: an empty view, no error.
    assert result.events.of_type("escalated").for_intent("Load") == []
    assert result.events[:1].for_intent(result.intents["Load"].id) == []


@pytest.mark.asyncio
async def test_of_type_takes_lists_of_types_too() -> None:
    result = await virtual_run()
    both = result.events.of_type("dispatched", "completed")
    assert result.events.of_type(["dispatched", "completed"]) == both
    assert result.events.of_type(("dispatched",), "completed") == both
    with pytest.raises(ValueError, match="did you mean 'completed'"):
        result.events.of_type(["dispatched", "complete"])
    with pytest.raises(TypeError, match="event type names"):
        result.events.of_type([1])  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_of_type_still_refuses_an_unknown_type() -> None:
    result = await virtual_run()
    with pytest.raises(ValueError, match="unknown event type"):
        result.events.for_intent("Load").of_type("complete")


class _StepClock:
    """A user clock with only what ``Clock`` requires: ``now``, ``sleep`` and ``timeout``."""

    def __init__(self) -> None:
        self.time = 1000.0

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += seconds  # time moves by what is slept, at once
        await anyio.lowlevel.checkpoint()

    def timeout(self, seconds: float) -> Any:
        return anyio.move_on_after(seconds)


class _DatedStepClock(_StepClock):
    def wall(self, time: float) -> datetime:
        return START + timedelta(seconds=time)


@pytest.mark.asyncio
async def test_a_user_clock_without_wall_is_anchored_to_utc_once_per_run() -> None:
    before = datetime.now(UTC)
    async with Runtime(agents=agents(), clock=_StepClock()) as rt:
        result = await rt.run(spec())
    first = result.events[0]
    assert before <= first.at <= datetime.now(UTC)
    assert result.events[-1].time - first.time >= 65  # the simulated delays and backoff
    for event in result.events:
        assert event.at - first.at == timedelta(seconds=event.time - first.time)


@pytest.mark.asyncio
async def test_a_clock_with_wall_dates_events_itself() -> None:
    async with Runtime(agents=agents(), clock=_DatedStepClock()) as rt:
        result = await rt.run(spec())
    assert [event.at for event in result.events] == [
        START + timedelta(seconds=event.time) for event in result.events
    ]


@pytest.mark.asyncio
async def test_of_type_rejects_an_unknown_event_type(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": []})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    with pytest.raises((ValueError, KeyError, AssertionError)):
        result.events.of_type("faild")


@pytest.mark.asyncio
async def test_every_transition_is_one_event_in_order():
    result = await run(portfolio(IntentSpec("A", assign="echo")), Echo(), seed=3)
    types = result.events.types()
    assert types == ["run_started", "created", "ready", "dispatched", "completed", "run_finished"]
    assert [event.seq for event in result.events] == list(range(6))
    assert all(event.portfolio_id == result.portfolio_id for event in result.events)
    assert result.events[-1].data == {"status": "completed"}
    created = result.events[1]
    assert created.data == {"title": "A", "depends_on": [], "assign": "echo", "initial_state": {}}
    assert result.events[3].data == {"attempt": 1, "agent": "echo"}


# ------------------------------------------------------------ event log views
# ``EventLog`` views: queries and slices narrow the same log and chain.


@Agent("event-log-worker")
class EventLogWorker:
    @on_assignment
    async def work(self, intent: object) -> dict[str, int]:
        return {"x": 1}


@pytest.mark.asyncio
async def test_a_slice_of_the_log_is_a_log_that_queries_chain_on() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="event-log-worker"),
        IntentSpec(title="B", assign="event-log-worker", depends_on=["A"]),
    ])
    async with Runtime(agents=[EventLogWorker], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec)
    events = result.events
    tail = events[-4:]
    assert isinstance(tail, EventLog)
    assert tail == list(events)[-4:]
    assert [event.seq for event in tail] == [len(events) - 4 + k for k in range(4)]
    assert tail.of_type("completed").for_intent("B").types() == ["completed"]
    assert [event.seq for event in events.of_type("dispatched", "completed")[1:]] == [
        event.seq for event in list(events.of_type("dispatched", "completed"))[1:]
    ]
    assert events[::-1][0].type == "run_finished"
    assert events[5:2] == []


# ------------------------------------------------------------ event streams stopped early
# A consumer may stop reading ``handle.events()`` early (``break``) without closing it: on
# trio, which warns about every async generator dropped unfinished, that must not warn.


BOTH_BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])


@Agent("stream-worker")
class StreamWorker:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {"title": intent.title}


async def _leave_at_first_dispatch(stream: Callable[[], AsyncIterator[Event]]) -> list[str]:
    """Iterate ``stream()`` up to its first ``dispatched`` event and break out; the messages
    of the ResourceWarnings raised meanwhile (the abandoned stream is collected before return)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async for event in stream():
            if event.type == "dispatched":
                break
        gc.collect()
        await anyio.lowlevel.checkpoint()
    return [str(w.message) for w in caught if w.category is ResourceWarning]


@pytest.mark.anyio
@BOTH_BACKENDS
async def test_breaking_out_of_a_run_stream_leaves_nothing_behind() -> None:
    spec = PortfolioSpec("p", [IntentSpec(title=f"I{k}", assign="stream-worker") for k in range(3)])
    with anyio.fail_after(20):
        async with Runtime(agents=[StreamWorker]) as rt:
            handle = await rt.start(spec)
            leaked = await _leave_at_first_dispatch(handle.events)
            result = await handle.result()
    assert result.status == "completed"
    assert leaked == []


@pytest.mark.anyio
@BOTH_BACKENDS
async def test_breaking_out_of_the_runtime_stream_leaves_nothing_behind() -> None:
    spec = PortfolioSpec("p", [IntentSpec(title=f"I{k}", assign="stream-worker") for k in range(3)])
    with anyio.fail_after(20):
        async with Runtime(agents=[StreamWorker]) as rt:
            handle = await rt.start(spec)
            leaked = await _leave_at_first_dispatch(rt.events)
            result = await handle.result()
            # A stream stopped early no longer buffers the runtime's events: a new stream
            # still sees a whole run.
            second = await rt.start(spec)
            seen = [event.type async for event in rt.events()]
            await second.result()
    assert result.status == "completed"
    assert leaked == []
    assert seen[0] == "run_started" and seen[-1] == "run_finished"
