"""Decision records: ``record_decision`` appends immutable records in order, and the runtime
records its own decisions (failover, agreement)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import openintent
from openintent import EventType, OpenIntentError, Runtime, VirtualClock
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import Decision
from openintent.testing import SimulatedAgent

from _helpers import Dev, portfolio, run, types_of

pytestmark = pytest.mark.asyncio


async def test_record_decision_appends_immutable_records_in_order():
    clock = VirtualClock()
    returned: list[Decision] = []

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await openintent.sleep(5)
            returned.append(await self.record_decision(
                intent_id=intent.id, decision="route_to_dev", rationale="dev is free",
                load=3, tags=["x"]))
            await self.delegate(intent, to="dev")
            returned.append(await self.record_decision(decision="portfolio_note"))

    result = await run(portfolio(IntentSpec("X")), Dev(), coordinator=Lead, clock=clock)
    assert result.status == "completed"
    first, second = result.decisions
    assert list(result.decisions) == returned
    assert first.id.startswith("dc_") and first.id != second.id
    assert first.coordinator_id == "lead"
    assert first.portfolio_id == result.portfolio_id
    assert first.intent_id == result.intents["X"].id
    assert first.time == 5.0
    assert first.decision == "route_to_dev"
    assert first.rationale == "dev is free"
    assert dict(first.data) == {"load": 3, "tags": ["x"]}
    assert (second.intent_id, second.decision, second.rationale, dict(second.data)) == (
        None, "portfolio_note", "", {})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        first.decision = "something else"  # type: ignore[misc]
    # Each is a decision_recorded event, in the same order, and in the right place.
    events = result.events.of_type(EventType.DECISION)
    assert [Decision.from_event(event) for event in events] == list(result.decisions)
    assert types_of(result, "X") == [
        "created", "ready", "dispatched", "decision_recorded", "handoff", "completed"]


async def test_record_decision_refuses_an_empty_decision_or_a_foreign_intent():
    errors: list[str] = []

    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def route(self, intent):
            for kwargs in ({"decision": ""}, {"intent_id": "in_nope", "decision": "x"}):
                try:
                    await self.record_decision(**kwargs)
                except (ValueError, OpenIntentError) as exc:
                    errors.append(type(exc).__name__)
            return {}

    result = await run(portfolio(IntentSpec("X")), coordinator=Lead)
    assert errors == ["ValueError", "OpenIntentError"]
    assert result.decisions == ()


async def test_a_decisions_data_cannot_be_changed_after_it_is_recorded():
    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def route(self, intent):
            decision = await self.record_decision(intent_id=intent.id, decision="d", n=1)
            try:
                decision.data["n"] = 2  # type: ignore[index]
            except TypeError:
                pass  # a read-only mapping is fine too
            return {}

    result = await run(portfolio(IntentSpec("X")), coordinator=Lead)
    assert dict(result.decisions[0].data) == {"n": 1}
    assert result.events.of_type(EventType.DECISION)[0].data["data"] == {"n": 1}


async def test_record_decision_accepts_an_input_of_the_intent() -> None:
    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def route(self, intent: Any) -> dict[str, Any]:
            await self.record_decision(intent_id=intent.id, decision="use_extract",
                                       rationale="fresh", source=intent.inputs["A"])
            return {"ok": True}

    SimulatedAgent("a", result={"rows": 3})
    spec = PortfolioSpec("p", [IntentSpec("A", assign="a"), IntentSpec("B", depends_on=["A"])])
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec, coordinator=Lead)
    # Fails with "TypeError: cannot pickle 'mappingproxy' object".
    assert result.status == "completed", result.intents["B"].error


async def test_the_runtime_records_failover_when_a_retry_moves_to_a_fallback():
    primary = SimulatedAgent("primary", result=RuntimeError("down"), register=False)
    backup = SimulatedAgent("backup", result={"by": "backup"}, register=False)
    spec = portfolio(IntentSpec("X", assign="primary", retry={
        "max_attempts": 2, "initial_delay": 1, "jitter": False, "fallback": ["backup"]}))
    result = await run(spec, primary, backup)
    assert result.status == "completed"
    assert result.intents["X"].state == {"by": "backup"}
    assert result.intents["X"].assigned_to == "backup"
    assert len(primary.calls) == 2 and len(backup.calls) == 1
    (failover,) = result.decisions
    assert (failover.coordinator_id, failover.decision) == ("runtime", "failover")
    assert dict(failover.data) == {"from": "primary", "to": "backup"}
    assert failover.intent_id == result.intents["X"].id
    # Recorded after the second failed attempt, before the retry that moves.
    kinds = types_of(result, "X")
    second_failure = [i for i, t in enumerate(kinds) if t == "attempt_failed"][1]
    assert kinds[second_failure + 1] == "decision_recorded"
