"""A real-time guard (``anyio.fail_after``, ``move_on_after``, ``asyncio.timeout``) around a
virtual run is a deadline, not real work: virtual time still jumps, so the run finishes at
once instead of stalling until the guard fires."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment


@Agent("guarded-sleeper")
class Sleeper:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await openintent.sleep(3600)
        return {"slept": True}


def spec() -> PortfolioSpec:
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
                result = await rt.run(spec())
    else:
        with scopes[guard]():
            async with Runtime(agents=[Sleeper], clock=VirtualClock()) as rt:
                result = await rt.run(spec())
    assert result is not None and result.status == "completed"
    assert result.events[-1].time == 3600.0
