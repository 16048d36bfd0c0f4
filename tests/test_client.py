"""The imperative client: the seed's snippet end to end, sync and async, over memory://."""

from __future__ import annotations

import pytest

from openintent import (
    AsyncOpenIntentClient,
    LeaseHeldError,
    LeaseLostError,
    OpenIntentClient,
    OpenIntentError,
    RunNotFoundError,
    Runtime,
    StateConflictError,
    VirtualClock,
)
from openintent.agents import Agent, on_assignment
from openintent.testing import assert_replay_matches


def agents() -> None:
    @Agent("data-fetcher")
    class Fetcher:
        @on_assignment
        async def work(self, intent):
            return {"rows": [1, 2, 3]}

    @Agent("data-processor")
    class Processor:
        @on_assignment
        async def work(self, intent):
            return {"total": sum(intent.inputs["Fetch Data"]["rows"])}


def seed_snippet(client: OpenIntentClient) -> tuple[str, str, str]:
    """The seed's "Imperative Coordinator", as written (base_url made memory://)."""
    portfolio = client.create_portfolio(
        name="Manual Pipeline",
        description="Imperative coordination"
    )
    step1 = client.create_intent(title="Fetch Data", portfolio_id=portfolio.id)
    step2 = client.create_intent(
        title="Process Data", portfolio_id=portfolio.id, depends_on=[step1.id])
    lease = client.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=600)
    client.record_decision(
        portfolio_id=portfolio.id,
        decision="approved_pipeline",
        rationale="All agents healthy, budget within limits"
    )
    client.assign_agent(step1.id, "data-fetcher")
    client.assign_agent(step2.id, "data-processor")
    assert lease.holder == "coordinator" and lease.token == 1
    return portfolio.id, step1.id, step2.id


def test_the_seed_snippet_runs_and_its_portfolio_runs_with_the_registered_agents():
    agents()
    client = OpenIntentClient(base_url="memory://", agent_id="coordinator")
    portfolio_id, step1, step2 = seed_snippet(client)
    portfolio = client.get_portfolio(portfolio_id)
    assert (portfolio.name, portfolio.status, portfolio.intent_ids) == (
        "Manual Pipeline", "draft", (step1, step2))
    second = client.get_intent(step2)
    assert second.depends_on == (step1,) and second.assigned_to == "data-processor"
    [decision] = client.list_decisions(portfolio_id)
    assert (decision.coordinator_id, decision.decision) == ("coordinator", "approved_pipeline")

    result = client.run_portfolio(portfolio_id)

    assert result.status == "completed" and result.portfolio_id == portfolio_id
    assert result.intents["Process Data"].state == {"total": 6}
    assert [d.decision for d in result.decisions] == ["approved_pipeline"]
    assert client.get_portfolio(portfolio_id).status == "completed"
    assert [i.status for i in client.list_intents(portfolio_id, status="completed")] == [
        "completed", "completed"]
    types = [event.type for event in client.list_events(portfolio_id)]
    assert types[:6] == ["run_started", "created", "created", "decision_recorded",
                         "agent_assigned", "agent_assigned"]
    assert "run_resumed" in types and types[-1] == "run_finished"
    assert_replay_matches(result)


@pytest.mark.asyncio
async def test_the_async_client_runs_the_same_and_the_store_is_the_runtimes():
    agents()
    client = AsyncOpenIntentClient(agent_id="coordinator", base_url="memory://")
    portfolio = await client.create_portfolio(name="Manual Pipeline")
    step1 = await client.create_intent(title="Fetch Data", portfolio_id=portfolio.id)
    step2 = await client.create_intent(title="Process Data", portfolio_id=portfolio.id)
    await client.add_dependency(step2.id, step1.id)
    lease = await client.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=600)
    await client.record_decision(portfolio_id=portfolio.id, decision="go", rationale="ok",
                                 budget=10)
    await client.assign_agent(step1.id, "data-fetcher")
    await client.assign_agent(step2.id, "data-processor")
    # The runtime on memory:// sees the client's portfolio as a run (one source of truth).
    rt = Runtime(store="memory://")
    assert [(info.portfolio_id, info.status) for info in rt.runs()] == [(portfolio.id, "draft")]
    with lease:
        result = await client.run_portfolio(portfolio.id)
    assert result.status == "completed"
    loaded = await rt.load(portfolio.id)
    assert loaded.intents["Process Data"].state == {"total": 6}
    assert loaded.decisions[0].data == {"budget": 10}
    assert_replay_matches(loaded)
    assert rt.runs()[0].status == "completed"


def test_each_test_gets_a_fresh_memory_store():
    client = OpenIntentClient(agent_id="a")
    assert client.list_portfolios() == []
    client.create_portfolio(name="here")
    assert [p.name for p in OpenIntentClient(agent_id="b").list_portfolios()] == ["here"]


def test_http_urls_are_refused_with_the_reason():
    with pytest.raises(OpenIntentError, match="no network layer"):
        OpenIntentClient(agent_id="c", base_url="http://localhost:8000")


@pytest.mark.asyncio
async def test_the_sync_client_inside_an_event_loop_points_to_the_async_one():
    client = OpenIntentClient(agent_id="c")
    with pytest.raises(OpenIntentError, match="AsyncOpenIntentClient"):
        client.create_portfolio(name="x")


def test_unknown_ids_and_invalid_transitions_are_clear_errors():
    agents()
    client = OpenIntentClient(agent_id="c")
    with pytest.raises(RunNotFoundError, match="pf_nope"):
        client.get_portfolio("pf_nope")
    portfolio = client.create_portfolio(name="p")
    with pytest.raises(OpenIntentError, match="no intents"):
        client.run_portfolio(portfolio.id)
    one = client.create_intent("One", portfolio_id=portfolio.id, assign="data-fetcher")
    with pytest.raises(OpenIntentError, match="not an intent of portfolio"):
        client.create_intent("Two", portfolio_id=portfolio.id, depends_on=["in_zz_0"])
    with pytest.raises(OpenIntentError, match="already has an intent titled"):
        client.create_intent("One", portfolio_id=portfolio.id)
    two = client.create_intent("Two", portfolio_id=portfolio.id, depends_on=[one.id],
                               assign="data-fetcher")
    with pytest.raises(OpenIntentError, match="cycle"):
        client.add_dependency(one.id, two.id)
    assert client.run_portfolio(portfolio.id).status == "completed"
    with pytest.raises(OpenIntentError, match="has run"):
        client.create_intent("Three", portfolio_id=portfolio.id)
    with pytest.raises(OpenIntentError, match="has run"):
        client.run_portfolio(portfolio.id)


def test_patch_state_checks_the_expected_version():
    client = OpenIntentClient(agent_id="c")
    intent = client.create_intent("Solo", initial_state={"a": 1})
    patched = client.patch_state(intent.id, {"b": 2}, expected_version=0)
    assert (patched.state, patched.version) == ({"a": 1, "b": 2}, 1)
    with pytest.raises(StateConflictError, match="expected version 0"):
        client.patch_state(intent.id, {"c": 3}, expected_version=0)
    assert client.get_intent(intent.id).state == {"a": 1, "b": 2}


def test_a_live_lease_refuses_other_writers_and_run_portfolio():
    agents()
    clock = VirtualClock()
    mine = OpenIntentClient(agent_id="lead", clock=clock)
    other = OpenIntentClient(agent_id="rival", clock=clock)
    portfolio = mine.create_portfolio(name="p")
    intent = mine.create_intent("One", portfolio_id=portfolio.id, assign="data-fetcher")
    lease = mine.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=30)
    with pytest.raises(LeaseHeldError, match="'lead' until clock time 30"):
        other.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=30)
    with pytest.raises(LeaseHeldError, match="'lead'"):
        other.record_decision(portfolio_id=portfolio.id, decision="mine", rationale="")
    with pytest.raises(LeaseHeldError):
        other.run_portfolio(portfolio.id)
    clock.advance(31.0)  # the lease expired (nobody renewed it)
    taken = other.acquire_coordinator_lease(portfolio_id=portfolio.id, ttl_seconds=30)
    assert taken.token > lease.token
    with pytest.raises(LeaseLostError, match="stale"):
        mine.patch_state(intent.id, {"x": 1})
    with pytest.raises(LeaseLostError):
        lease.renew()
    assert mine.get_intent(intent.id).state == {}
    assert other.list_decisions(portfolio.id) == []
    assert other.run_portfolio(portfolio.id).status == "completed"


def test_the_readme_imperative_client_block_runs():
    import re
    from pathlib import Path

    agents()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Imperative client", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    scope: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102
    assert scope["result"].status == "completed"  # type: ignore[attr-defined]


def test_an_unknown_intent_id_is_a_clear_error():
    client = OpenIntentClient(agent_id="c")
    intent = client.create_intent("Solo")
    with pytest.raises(RunNotFoundError, match="no intent 'in_ffff_0'"):
        client.get_intent("in_ffff_0")
    with pytest.raises(RunNotFoundError, match="no intent"):
        client.get_intent(intent.id[:-1] + "9")
    with pytest.raises(OpenIntentError, match="not an intent id"):
        client.assign_agent("nope", "w")


@pytest.mark.asyncio
async def test_the_sync_client_works_from_a_worker_thread_beside_a_running_loop():
    import anyio.to_thread

    client = OpenIntentClient(agent_id="c")
    portfolio = await anyio.to_thread.run_sync(lambda: client.create_portfolio(name="t"))
    assert client._core.portfolio(portfolio.id).name == "t"


@pytest.mark.asyncio
async def test_a_client_approves_a_run_of_its_portfolio_going_on_in_this_process():
    import anyio
    import anyio.lowlevel

    agents()
    clock = VirtualClock()
    client = AsyncOpenIntentClient(agent_id="lead", clock=clock)
    portfolio = await client.create_portfolio(
        name="gated", guardrails=[{"type": "approval", "require_for": ["Process Data"],
                                   "approvers": ["lead"]}])
    fetch = await client.create_intent("Fetch Data", portfolio_id=portfolio.id,
                                       assign="data-fetcher")
    process = await client.create_intent("Process Data", portfolio_id=portfolio.id,
                                         depends_on=[fetch.id], assign="data-processor")
    results = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _run_into(client, portfolio.id, results))
        for _ in range(20_000):  # bounded polling, as tests/test_approvals.py does
            if await client.pending_approvals():
                break
            await anyio.lowlevel.checkpoint()
        [request] = await client.pending_approvals()
        assert request.intent_id == process.id
        await client.approve(process.id)  # by the client's agent_id
    assert results[0].status == "completed"
    assert results[0].intents["Process Data"].state == {"total": 6}


async def _run_into(client, portfolio_id, results):
    results.append(await client.run_portfolio(portfolio_id))


def test_an_unknown_assigned_agent_fails_when_the_portfolio_runs_and_it_stays_a_draft():
    from openintent import UnknownAgentError

    client = OpenIntentClient(agent_id="c")
    intent = client.create_intent("Solo")
    client.assign_agent(intent.id, "nobody-registered")
    with pytest.raises(UnknownAgentError, match="nobody-registered"):
        client.run_portfolio(intent.portfolio_id)
    assert client.get_portfolio(intent.portfolio_id).status == "draft"
