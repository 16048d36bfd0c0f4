"""``assert_replay_matches`` / ``replay``: an oracle independent of the runtime's projection.

It agrees with every kind of real run (retries, failover, multi-agent intents, escalations,
halts, approvals, cancellations, state patches), and it catches what a replay through the
runtime's own projection cannot: a projection bug, an impossible log, a result that drifted
from its log.
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import openintent._store
from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_escalation,
    on_quorum,
    on_retry,
)
from openintent.models import IntentResult, RunResult
from openintent.testing import SimulatedAgent, assert_replay_matches, isolated_registry, replay
from openintent.testing.strategies import fault_plans, portfolios

AGENTS = ["ag-a", "ag-b", "ag-c"]
GUARD_SECONDS = 1_000_000.0


async def run(spec: PortfolioSpec, agents: list[Any], coordinator: Any = None,
              guardrails: list[Any] | None = None) -> RunResult:
    clock = VirtualClock()
    result: RunResult | None = None
    with clock.timeout(GUARD_SECONDS):
        async with Runtime(agents=agents, clock=clock, seed=0, guardrails=guardrails) as rt:
            result = await rt.run(spec, coordinator=coordinator)
    assert result is not None, "the run hung"
    return result


@Agent("patcher")
class Patcher:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await self.patch_state(intent, {"step": 1})
        await self.patch_state(intent, {})  # an empty patch changes no version
        await self.patch_state(intent, {"step": 2, "seen": list(intent.inputs)})
        return {"done": True}


# --------------------------------------------------------------- real runs of every kind


RETRY = {"max_attempts": 2, "initial_delay": 1}
SPECS = st.one_of(
    # multi-agent intents: each assignee answers (or fails, hangs, escalates) on its own
    portfolios(agents=AGENTS, multi_assignee=True, retry=RETRY, timeout=60),
    # single-agent intents that fail over to a fallback agent
    portfolios(agents=AGENTS, retry={**RETRY, "fallback": ["ag-c"]}, timeout=60),
)


@settings(max_examples=60, deadline=None)
@given(spec=SPECS, plan=fault_plans(AGENTS))
def test_every_generated_run_matches_its_log(spec: PortfolioSpec, plan: Any) -> None:
    async def main() -> RunResult:
        with isolated_registry():
            agents = plan.agents(AGENTS, delay=5, cost_usd=0.5)
            # The budget halts some runs (an overspend fault), cancelling what runs then.
            return await run(spec, agents, guardrails=[{"type": "budget", "max_cost_usd": 50}])

    result = anyio.run(main)
    assert_replay_matches(result)
    assert replay(result) == dict(result.intents)


@pytest.mark.asyncio
async def test_patches_retries_and_failover_match_their_log() -> None:
    flaky = SimulatedAgent("flaky", result=RuntimeError("down"), cost_usd=0.25)
    backup = SimulatedAgent("backup", result={"by": "backup"})
    spec = PortfolioSpec("p", [
        IntentSpec("A", assign="flaky", initial_state={"seed": 1},
                   retry={"max_attempts": 2, "initial_delay": 1, "fallback": ["backup"]}),
        IntentSpec("B", assign="patcher", depends_on=["A"]),
        IntentSpec("C", assign="flaky", retry={"max_attempts": 2, "initial_delay": 0}),
        IntentSpec("D", assign="patcher", depends_on=["C"]),
    ])
    result = await run(spec, [flaky, backup, Patcher])
    assert result.titles_by_status() == {"completed": ["A", "B"], "failed": ["C"],
                                         "skipped": ["D"]}
    assert (result.intents["A"].attempts, result.intents["A"].assigned_to) == (3, "backup")
    assert result.intents["B"].version == 3
    assert_replay_matches(result)


@pytest.mark.asyncio
async def test_multi_agent_quorum_escalation_and_halt_match_their_log() -> None:
    @Coordinator("lead", agents=["r1", "r2", "r3"])
    class Lead:
        @on_quorum(threshold=2)
        async def enough(self, intent: Any, responses: Any) -> dict[str, Any]:
            return {"votes": len(responses)}

        @on_escalation
        async def escalated(self, intent: Any, reason: str) -> None:
            await self.delegate(intent, to="senior")

    agents = [SimulatedAgent("r1", result={"ok": 1}, delay=1),
              SimulatedAgent("r2", result={"ok": 2}, delay=2),
              SimulatedAgent("r3", result={"ok": 3}, delay=600),
              SimulatedAgent("junior", escalate="too hard"),
              SimulatedAgent("senior", result={"fixed": True}),
              SimulatedAgent("slow", result={}, delay=500, cost_usd=1.0)]
    spec = PortfolioSpec("p", [IntentSpec("Vote"), IntentSpec("Hard", assign="junior"),
                               IntentSpec("Slow", assign="slow"),
                               IntentSpec("After", assign="senior", depends_on=["Slow"])])
    result = await run(spec, agents, coordinator=Lead,
                       guardrails=[{"type": "timeout", "max_seconds": 300}])
    assert result.status == "halted"
    assert result.titles_by_status() == {"completed": ["Vote", "Hard"], "cancelled": ["Slow"],
                                         "pending": ["After"]}
    assert result.intents["Hard"].assigned_to == "senior"
    assert_replay_matches(result)


@pytest.mark.parametrize("on_timeout", ["approve", "deny"])
@pytest.mark.asyncio
async def test_approvals_match_their_log(on_timeout: str) -> None:
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("p", [IntentSpec("Deploy", assign="worker"),
                               IntentSpec("Announce", assign="worker", depends_on=["Deploy"])])
    approval = {"type": "approval", "require_for": ["deploy"], "timeout_seconds": 60,
                "on_timeout": on_timeout}
    result = await run(spec, [worker], guardrails=[approval])
    expected = "completed" if on_timeout == "approve" else "failed"
    assert result.intents["Deploy"].status == expected
    assert_replay_matches(result)


@pytest.mark.asyncio
async def test_late_spend_and_a_patch_while_waiting_to_retry_are_possible() -> None:
    @Agent("biller")
    class Biller:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.attempt == 1:
                raise RuntimeError("try again")
            return {"billed": False}

        @on_retry
        async def note(self, intent: Any, attempt: int, error: Exception) -> None:
            await self.patch_state(intent, {"retry": attempt})  # the intent is pending now

        @on_complete
        async def bill(self, intent: Any) -> None:  # the invoice arrives after the work
            await self.record_cost(intent, 0.5)

    spec = PortfolioSpec("p", [IntentSpec("A", assign="biller",
                                          retry={"max_attempts": 2, "initial_delay": 1})])
    result = await run(spec, [Biller])
    assert result.intents["A"].state == {"retry": 2, "billed": False}
    assert result.cost_usd == 0.5
    assert result.events.types()[-3:] == ["completed", "cost_recorded", "run_finished"]
    assert_replay_matches(result)


# ------------------------------------------------------------------- what it catches


async def a_run() -> RunResult:
    spec = PortfolioSpec("p", [IntentSpec("A", assign="patcher"),
                               IntentSpec("B", assign="patcher", depends_on=["A"])])
    return await run(spec, [Patcher])


def without(result: RunResult, event_type: str, title: str) -> RunResult:
    """``result`` with the last ``event_type`` event of ``title`` dropped from its log."""
    intent_id = result.intents[title].id
    events = list(result.events)
    drop = [event for event in events
            if event.type == event_type and event.intent_id == intent_id][-1]
    return attrs.evolve(result, events=[event for event in events if event is not drop])


def with_intent(result: RunResult, title: str, **changes: Any) -> RunResult:
    intents: dict[str, IntentResult] = dict(result.intents)
    intents[title] = attrs.evolve(intents[title], **changes)
    return attrs.evolve(result, intents=intents)


@pytest.mark.asyncio
async def test_a_projection_bug_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime's projection drops every patch: its live records and a replay through it
    agree with each other, the oracle does not (the old replay passed this run)."""
    monkeypatch.setitem(openintent._store._APPLY, "state_patched", lambda records, event: None)
    result = await a_run()
    with pytest.raises(AssertionError) as caught:
        assert_replay_matches(result)
    message = str(caught.value)
    assert "intent 'A' state: the events say {'step': 2, 'seen': [], 'done': True}, " \
           "the result says {'done': True}" in message
    assert "intent 'A' version: the events say 3, the result says 1" in message


@pytest.mark.asyncio
async def test_a_result_whose_state_differs_from_its_events_is_caught() -> None:
    result = await a_run()
    assert_replay_matches(result)
    doctored = with_intent(result, "B", state={"done": False})
    with pytest.raises(AssertionError, match=r"intent 'B' state: the events say .*'done': True"
                                             r".*, the result says \{'done': False\}"):
        assert_replay_matches(doctored)
    for field, value in [("status", "failed"), ("attempts", 2), ("assigned_to", "x"),
                         ("error", "boom"), ("cost_usd", 1.0), ("version", 7)]:
        with pytest.raises(AssertionError, match=f"intent 'A' {field}: the events say"):
            assert_replay_matches(with_intent(result, "A", **{field: value}))


@pytest.mark.asyncio
async def test_a_dropped_event_is_caught() -> None:
    result = await a_run()
    with pytest.raises(AssertionError, match=r"\(completed, intent in_\w+\) while 'A' was "
                                             r"pending \(expected running\)"):
        assert_replay_matches(without(result, "dispatched", "A"))
    with pytest.raises(AssertionError, match="intent 'B' state: the events say"):
        assert_replay_matches(without(result, "state_patched", "B"))
    with pytest.raises(AssertionError, match="intent 'B' is in the result but no event "
                                             "created it"):
        assert_replay_matches(without(result, "created", "B"))


@pytest.mark.asyncio
async def test_an_impossible_log_is_caught_even_when_the_result_agrees() -> None:
    result = await a_run()
    events = list(result.events)
    a_id = result.intents["A"].id
    completed = next(e for e in events if e.type == "completed" and e.intent_id == a_id)
    again = completed._replace(seq=len(events), data={})  # changes no field of A
    with pytest.raises(AssertionError, match="changes 'A', already completed"):
        assert_replay_matches(attrs.evolve(result, events=[*events, again]))


@pytest.mark.asyncio
async def test_run_status_cost_and_decisions_must_match_the_log() -> None:
    result = await a_run()
    with pytest.raises(AssertionError, match="run status: the events say 'completed'"):
        assert_replay_matches(attrs.evolve(result, status="failed"))
    with pytest.raises(AssertionError, match="run cost_usd: the events say 0.0"):
        assert_replay_matches(attrs.evolve(result, cost_usd=2.0))


@pytest.mark.asyncio
async def test_a_failed_event_must_count_the_attempts_the_log_shows() -> None:
    flaky = SimulatedAgent("flaky", result=RuntimeError("down"))
    spec = PortfolioSpec("p", [IntentSpec("A", assign="flaky",
                                          retry={"max_attempts": 2, "initial_delay": 0})])
    result = await run(spec, [flaky])
    assert_replay_matches(result)
    events = [event._replace(data={**event.data, "attempts": 5}) if event.type == "failed"
              else event for event in result.events]
    with pytest.raises(AssertionError, match=r"says 5 attempt\(s\); the log shows 2"):
        assert_replay_matches(attrs.evolve(result, events=events))
