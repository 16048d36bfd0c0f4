"""Routing and delegation: a coordinator routes unassigned intents, delegates inside its team,
fires ``on_handoff`` on the delegate, and fans out when it has no ``@on_assignment``."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import DelegationError, EventType, Runtime, VirtualClock
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec, on_assignment, on_complete
from openintent.testing import SimulatedAgent, assert_replay_matches

from _helpers import Dev, one, portfolio, run, types_of

pytestmark = pytest.mark.asyncio


async def test_an_unassigned_intent_is_routed_and_completes_with_the_delegates_result():
    dev = Dev()
    seen: list[Any] = []

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            seen.append(("routing", intent.title, intent.assigned_to))
            got = await self.delegate(intent, to="dev")
            seen.append(("delegate returned", got))
            return {"own": 1, "shared": "lead"}

    result = await run(portfolio(IntentSpec("X")), dev, coordinator=Lead)
    assert result.status == "completed"
    x = result.intents["X"]
    # The delegate's result completes the intent; the coordinator's own value is underneath.
    assert x.state == {"own": 1, "shared": "dev", "by": "dev"}
    assert x.assigned_to == "dev"
    assert seen == [("routing", "X", "lead"),
                    ("delegate returned", {"by": "dev", "shared": "dev"})]
    assert types_of(result, "X") == ["created", "ready", "dispatched", "handoff", "completed"]
    assert one(result, "handoff", "X").data == {"from": "lead", "to": "dev"}
    assert_replay_matches(result)


async def test_on_handoff_fires_on_the_delegate_before_its_work():
    dev = Dev()

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="dev")

    result = await run(portfolio(IntentSpec("A"), IntentSpec("B")), dev, coordinator=Lead)
    assert result.status == "completed"
    assert sorted(dev.log) == sorted([
        ("handoff", "A", "lead", "dev"), ("work", "A", "dev"),
        ("handoff", "B", "lead", "dev"), ("work", "B", "dev"),
    ])
    for title in ("A", "B"):
        mine = [entry[0] for entry in dev.log if entry[1] == title]
        assert mine == ["handoff", "work"]
    # Routing without own return value: the state is exactly the delegate's result.
    assert result.intents["A"].state == {"by": "dev", "shared": "dev"}


async def test_delegating_outside_the_team_from_on_assignment_is_refused():
    outsider = SimulatedAgent("outsider", result={"by": "outsider"}, register=False)

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="outsider")

    result = await run(portfolio(IntentSpec("X")), Dev(), outsider, coordinator=Lead)
    assert result.status == "failed"
    x = result.intents["X"]
    assert x.status == "failed"
    assert x.error_type == "DelegationError"
    assert "'outsider'" in x.error and "['dev']" in x.error
    assert outsider.calls == []
    assert "handoff" not in types_of(result, "X")


async def test_delegating_to_an_unknown_agent_is_refused():
    @Coordinator("lead")  # no team: any known agent would do, but this one does not exist
    class Lead:
        @on_assignment
        async def route(self, intent):
            try:
                await self.delegate(intent, to="nobody")
            except DelegationError as exc:
                return {"refused": str(exc)}
            return {"refused": None}

    result = await run(portfolio(IntentSpec("X")), Dev(), coordinator=Lead)
    refused = result.intents["X"].state["refused"]
    assert refused is not None and "'nobody'" in refused
    assert result.intents["X"].assigned_to == "lead"


async def test_delegate_outside_an_assignment_or_escalation_handler_is_refused():
    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_complete
        async def late(self, intent):
            await self.delegate(intent, to="dev")

    result = await run(portfolio(IntentSpec("X", assign="dev")), Dev(), coordinator=Lead)
    assert result.status == "completed"
    (failure,) = result.events.of_type("hook_failed")
    assert failure.data["error_type"] == "DelegationError"
    assert "handoff" not in result.events.types()


async def test_without_on_assignment_an_unassigned_intent_fans_out_to_every_agent():
    agents = [SimulatedAgent(f"w{i}", result={"ok": True}, delay=10, register=False)
              for i in range(3)]

    @Coordinator("lead", agents=["w0", "w1", "w2"])
    class Lead:
        pass

    clock = VirtualClock()
    result = await run(portfolio(IntentSpec("X")), *agents, coordinator=Lead, clock=clock)
    assert result.status == "completed"
    assert result.intents["X"].state == {"ok": True}
    # Concurrently: every agent started at 0, so 10 s passed, not 30.
    assert [agent.calls[0].time for agent in agents] == [0.0, 0.0, 0.0]
    assert clock.now() == 10.0
    responses = result.events.of_type(EventType.RESPONSE)
    assert sorted(event.data["agent"] for event in responses) == ["w0", "w1", "w2"]
    assert [event.data["response"] for event in responses] == [{"ok": True}] * 3
    (agreed,) = result.decisions
    assert (agreed.coordinator_id, agreed.decision) == ("runtime", "responses_agreed")
    assert sorted(agreed.data["agents"]) == ["w0", "w1", "w2"]


async def test_retrying_a_delegated_intent_records_no_failover() -> None:
    SimulatedAgent("dev", fail_times=1, result={"ok": True})

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> None:
            await self.delegate(intent, to="dev")

    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(
            PortfolioSpec("p", [IntentSpec("A", retry={"max_attempts": 2})]), coordinator=Lead)
    assert result.status == "completed"
    assert [d.decision for d in result.decisions] == []  # got ["failover"] (dev -> lead)
