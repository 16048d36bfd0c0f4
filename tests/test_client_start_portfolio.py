"""``client.start_portfolio``: a client's portfolio started and left to the workers of its
store (as ``openintent run --detach``), on ``memory://?workers=1`` with an in-process worker
and on PostgreSQL; refused on a store without a task queue."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from openintent import (
    AsyncOpenIntentClient,
    OpenIntentClient,
    OpenIntentError,
    Runtime,
    VirtualClock,
)
from openintent.agents import Agent, on_assignment

HANG_GUARD = 30  # real seconds; only a regression that hangs waits this long


@Agent("fetcher")
class Fetcher:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        return {"rows": [1, 2, 3]}


@Agent("summer")
class Summer:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await self.record_cost(intent, 0.5)
        return {"total": sum(intent.inputs["Fetch"]["rows"])}


async def draft(client: AsyncOpenIntentClient) -> str:
    portfolio = await client.create_portfolio(name="Started by a client")
    fetch = await client.create_intent(title="Fetch", portfolio_id=portfolio.id)
    total = await client.create_intent(title="Total", portfolio_id=portfolio.id,
                                       depends_on=[fetch.id])
    await client.assign_agent(fetch.id, "fetcher")
    await client.assign_agent(total.id, "summer")
    return portfolio.id


async def started_and_served(url: str, clock: Any, wait: Any) -> tuple[AsyncOpenIntentClient,
                                                                       str]:
    """A draft started by the client while a worker (with the agents) serves ``url``,
    until the client sees the run ended."""
    client = AsyncOpenIntentClient(agent_id="planner", base_url=url, clock=clock)
    portfolio_id = await draft(client)
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[Fetcher, Summer], store=url, clock=clock) as worker:
            async with anyio.create_task_group() as group:
                group.start_soon(worker.serve)
                assert await client.start_portfolio(portfolio_id) == portfolio_id
                while (await client.get_portfolio(portfolio_id)).status == "running":
                    await wait()
                group.cancel_scope.cancel()
    return client, portfolio_id


async def check_completed(client: AsyncOpenIntentClient, portfolio_id: str) -> None:
    portfolio = await client.get_portfolio(portfolio_id)
    assert (portfolio.status, portfolio.created_by) == ("completed", "planner")
    intents = await client.list_intents(portfolio_id, status="completed")
    assert [intent.state for intent in intents] == [{"rows": [1, 2, 3]}, {"total": 6}]
    types = [event.type for event in await client.list_events(portfolio_id)]
    assert types.count("run_resumed") == 2  # started by the client, adopted by the worker
    assert types.count("completed") == 2 and types[-1] == "run_finished"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_started_portfolio_is_run_by_a_worker(anyio_backend: str) -> None:
    clock = VirtualClock()
    client, portfolio_id = await started_and_served("memory://?workers=1", clock,
                                                    lambda: clock.sleep(0.5))
    await check_completed(client, portfolio_id)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_client_started_portfolio_is_run_by_a_worker_on_postgresql(
        postgres_url: str, anyio_backend: str) -> None:
    client, portfolio_id = await started_and_served(postgres_url, None,
                                                    lambda: anyio.sleep(0.05))
    try:
        await check_completed(client, portfolio_id)
    finally:
        client.close()


def test_a_store_without_a_task_queue_refuses_to_start_a_portfolio() -> None:
    client = OpenIntentClient(agent_id="planner", base_url="memory://")
    portfolio = client.create_portfolio(name="Nobody serves it")
    client.create_intent(title="Fetch", portfolio_id=portfolio.id)
    with pytest.raises(OpenIntentError, match=r"start_portfolio\(\) needs a store with a "
                                              r"task queue.*postgresql://"):
        client.start_portfolio(portfolio.id)
    assert client.get_portfolio(portfolio.id).status == "draft"  # nothing written


def test_a_portfolio_that_ran_is_not_started_again() -> None:
    client = OpenIntentClient(agent_id="planner", base_url="memory://?workers=1")
    portfolio = client.create_portfolio(name="Twice")
    fetch = client.create_intent(title="Fetch", portfolio_id=portfolio.id)
    client.assign_agent(fetch.id, "fetcher")
    assert client.start_portfolio(portfolio.id) == portfolio.id
    assert client.get_portfolio(portfolio.id).status == "running"
    with pytest.raises(OpenIntentError, match=r"start_portfolio: portfolio .* has run "
                                              "already"):
        client.start_portfolio(portfolio.id)
