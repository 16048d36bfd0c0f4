"""Remote agents and ``rt.serve`` on anyio's trio backend (the real clock: the virtual one
watches asyncio's loop); nothing here sleeps."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _serving import HANG_GUARD, STORE

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_remote_agents_and_serve_on_trio() -> None:
    calls: list[str] = []

    @Agent("adder")
    class Adder:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls.append(intent.title)
            await self.record_cost(intent, 1.0)
            return {"n": 1 + sum(v["n"] for v in intent.inputs.values())}

    spec = PortfolioSpec("trio", [IntentSpec("A", assign="adder"),
                                  IntentSpec("B", assign="adder", depends_on=["A"]),
                                  IntentSpec("C", assign="adder", depends_on=["A", "B"])])
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[], store=STORE) as coordinator, \
                Runtime(agents=[Adder], store=STORE) as worker:
            async with anyio.create_task_group() as group:
                group.start_soon(worker.serve)
                result = await coordinator.run(spec)
                group.cancel_scope.cancel()
    assert result.status == "completed" and result.intents["C"].state == {"n": 4}
    assert result.cost_usd == 3.0 and sorted(calls) == ["A", "B", "C"]
