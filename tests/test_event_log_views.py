"""``EventLog`` views: queries and slices narrow the same log and chain."""

from __future__ import annotations

import pytest

from openintent import EventLog, Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment


@Agent("event-log-worker")
class Worker:
    @on_assignment
    async def work(self, intent: object) -> dict[str, int]:
        return {"x": 1}


@pytest.mark.asyncio
async def test_a_slice_of_the_log_is_a_log_that_queries_chain_on() -> None:
    spec = PortfolioSpec("p", [
        IntentSpec(title="A", assign="event-log-worker"),
        IntentSpec(title="B", assign="event-log-worker", depends_on=["A"]),
    ])
    async with Runtime(agents=[Worker], clock=VirtualClock(), seed=0) as rt:
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
