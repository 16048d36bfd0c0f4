"""Loop-blocking detection in lifecycle hooks: the event and the warning name the intent."""

from __future__ import annotations

import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment, on_event

BLOCK = 0.3  # seconds a hook holds the loop
THRESHOLD = 0.1


@Agent("hook-blocker")
class HookBlocker:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        return {"done": True}

    @on_event("completed")
    async def heard(self, event: Any) -> None:
        time.sleep(BLOCK)  # noqa: ASYNC251 - the blocking call under test


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
