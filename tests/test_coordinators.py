"""Coordinators: the decorator and its options, the sequential and parallel strategies, and
the seed's coordinator patterns end to end.

Timing-sensitive tests run on a :class:`VirtualClock` with :class:`SimulatedAgent` delays, so
"30 s" of review takes no real time.
"""

from __future__ import annotations

import pytest

import openintent
from openintent import AgentError, EventType, Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_conflict,
    on_escalation,
    on_quorum,
)
from openintent.testing import SimulatedAgent, assert_event_types

from _helpers import Cleanup, Concurrency, load_example, one, portfolio, run

pytestmark = pytest.mark.asyncio


# -------------------------------------------------------------------------------- the decorator


async def test_an_unknown_strategy_is_a_clear_error_listing_the_valid_ones():
    with pytest.raises(AgentError) as caught:
        Coordinator("lead", strategy="round-robin")
    message = str(caught.value)
    assert "'round-robin'" in message
    assert "sequential" in message and "parallel" in message


async def test_coordinator_options_are_recorded():
    @Coordinator("lead", agents=["a", "b"], strategy="sequential", max_concurrency=2)
    class Lead:
        pass

    options = Lead.__openintent_definition__.options
    assert options["agents"] == ("a", "b")
    assert options["strategy"] == "sequential"
    assert options["max_concurrency"] == 2
    assert Coordinator("other")(type("Other", (), {})).__openintent_definition__.options[
        "strategy"] == "parallel"


# ----------------------------------------------------------------------------------- strategies


async def test_sequential_dispatches_one_intent_at_a_time_in_dependency_then_declaration_order():
    clock = VirtualClock()
    worker = SimulatedAgent("w", result={}, delay=10, register=False)

    @Coordinator("one-by-one", strategy="sequential")
    class OneByOne:
        pass

    spec = portfolio(IntentSpec("C", assign="w"), IntentSpec("A", assign="w"),
                     IntentSpec("D", assign="w", depends_on=["C"]), IntentSpec("B", assign="w"))
    result = await run(spec, worker, coordinator=OneByOne, clock=clock)
    assert result.status == "completed"
    assert worker.titles == ["C", "A", "D", "B"]
    assert [call.time for call in worker.calls] == [0.0, 10.0, 20.0, 30.0]
    assert clock.now() == 40.0


async def test_sequential_picks_the_earliest_declared_ready_intent():
    worker = SimulatedAgent("w", result={}, register=False)

    @Coordinator("one-by-one", strategy="sequential")
    class OneByOne:
        pass

    spec = portfolio(IntentSpec("A", assign="w"), IntentSpec("C", assign="w", depends_on=["A"]),
                     IntentSpec("B", assign="w"))
    result = await run(spec, worker, coordinator=OneByOne)
    assert result.status == "completed"
    # After A, both C (declared 2nd) and B (declared 3rd) are ready: C goes first.
    assert worker.titles == ["A", "C", "B"]


async def test_parallel_dispatches_every_ready_intent_at_once():
    clock = VirtualClock()
    worker = SimulatedAgent("w", result={}, delay=10, register=False)

    @Coordinator("wide", strategy="parallel")
    class Wide:
        pass

    spec = portfolio(*(IntentSpec(f"I{i}", assign="w") for i in range(4)),
                     IntentSpec("Last", assign="w", depends_on=["I0", "I3"]))
    result = await run(spec, worker, coordinator=Wide, clock=clock)
    assert result.status == "completed"
    assert [call.time for call in worker.calls] == [0.0, 0.0, 0.0, 0.0, 10.0]
    assert clock.now() == 20.0


async def test_parallel_respects_max_concurrency():
    clock = VirtualClock()
    worker = SimulatedAgent("w", result={}, delay=10, register=False)

    @Coordinator("capped", strategy="parallel", max_concurrency=2)
    class Capped:
        pass

    spec = portfolio(*(IntentSpec(f"I{i}", assign="w") for i in range(5)))
    result = await run(spec, worker, coordinator=Capped, clock=clock)
    assert result.status == "completed"
    assert sorted(call.time for call in worker.calls) == [0.0, 0.0, 10.0, 10.0, 20.0]
    assert clock.now() == 30.0


# ------------------------------------------------------------------------- end to end: the seed


async def test_seed_delegation_and_decision_records(capsys):
    example = load_example("delegation")
    async with Runtime(agents=[example.DevA, example.DevB, example.QA], seed=0) as rt:
        result = await rt.run(example.workflow, coordinator=example.ProjectCoordinator)
    assert result.status == "completed"
    payment = result.intents["Payment retries"]
    typo = result.intents["Fix typo in footer"]
    suite = result.intents["Regression suite"]
    assert payment.assigned_to == "dev-a"
    assert payment.state == {"complexity": "high", "delegated": True, "implemented_by": "dev-a"}
    assert typo.assigned_to == "dev-b"
    assert typo.state == {"delegated": True, "implemented_by": "dev-b"}
    assert suite.assigned_to == "qa" and suite.state == {"passed": True}
    (decision,) = result.decisions
    assert decision.coordinator_id == "project-lead"
    assert decision.intent_id == payment.id
    assert decision.decision == "delegate_to_senior"
    assert decision.rationale == "High complexity requires senior developer"
    handoffs = [(e.intent_id, e.data["to"]) for e in result.events.of_type("handoff")]
    assert sorted(handoffs) == sorted([(payment.id, "dev-a"), (typo.id, "dev-b")])
    assert_event_types(result, ["created", "ready", "dispatched", "decision_recorded", "handoff",
                                "completed"], intent="Payment retries")
    out = capsys.readouterr().out
    assert "dev-a took 'Payment retries' from project-lead" in out
    assert "dev-b took 'Fix typo in footer' from project-lead" in out


# The seed's ReviewCoordinator, exactly as written there but without guardrails=[...].
@Coordinator(
    "review-coordinator",
    agents=["reviewer-a", "reviewer-b", "reviewer-c"],
    strategy="parallel",
)
class ReviewCoordinator:

    @on_conflict
    async def handle_conflict(self, intent, versions):
        # Arbitrate between conflicting agent updates
        winner = max(versions, key=lambda v: v.get("confidence", 0))
        await self.record_decision(
            intent_id=intent.id,
            decision="conflict_resolved",
            rationale="Chose version with highest confidence",
            chosen=winner
        )
        return winner

    @on_escalation
    async def handle_escalation(self, intent, reason):
        print(f"Escalated: {intent.title} — {reason}")
        await self.delegate(intent, to="senior-reviewer")

    @on_quorum(threshold=2)
    async def quorum_reached(self, intent, responses):
        approved = all(r.get("approved") for r in responses)
        return {"approved": approved, "votes": len(responses)}


REVIEW = portfolio(IntentSpec(title="Review release notes"), IntentSpec(title="Review code"),
                   name="Release review")


def senior() -> SimulatedAgent:
    return SimulatedAgent("senior-reviewer", result={"approved": True, "by": "senior"},
                          delay=60, cost_usd=1.0, register=False)


async def test_seed_review_quorum_of_two_cancels_the_slowest_reviewer():
    clock = VirtualClock()
    slowest = Agent("reviewer-c")(type("SlowReviewer", (Cleanup,), {}))({"approved": False})
    a = SimulatedAgent("reviewer-a", result={"approved": True}, delay=30, cost_usd=0.4,
                       register=False)
    b = SimulatedAgent("reviewer-b", result={"approved": True}, delay=45, cost_usd=0.4,
                       register=False)
    result = await run(REVIEW, a, b, slowest, senior(), coordinator=ReviewCoordinator,
                       clock=clock)
    assert result.status == "completed"
    for title in ("Review release notes", "Review code"):
        assert result.intents[title].state == {"approved": True, "votes": 2}
        responders = [e.data["agent"] for e in result.events.for_intent(result.intents[title].id)
                      if e.type == EventType.RESPONSE]
        assert responders == ["reviewer-a", "reviewer-b"]
    # reviewer-c started on both intents, never answered, and unwound (finally) both times.
    assert (slowest.started, slowest.answered, slowest.cleaned) == (2, 0, 2)
    assert clock.now() == 45.0
    assert result.cost_usd == pytest.approx(4 * 0.4)
    assert [(d.coordinator_id, d.decision, list(d.data["agents"])) for d in result.decisions] == [
        ("runtime", "quorum_reached", ["reviewer-a", "reviewer-b"])] * 2
    assert result.events.of_type("escalated") == []


async def test_seed_review_an_escalating_reviewer_hands_its_vote_to_the_senior(capsys):
    clock = VirtualClock()
    slowest = Agent("reviewer-c")(type("SlowReviewer", (Cleanup,), {}))({"approved": False})
    a = SimulatedAgent("reviewer-a", result={"approved": False}, delay=30, register=False)
    b = SimulatedAgent("reviewer-b", escalate="needs a security expert", delay=45,
                       register=False)
    boss = senior()
    spec = portfolio(IntentSpec("Review code"), name="Release review")
    result = await run(spec, a, b, slowest, boss, coordinator=ReviewCoordinator, clock=clock)
    assert result.status == "completed"
    code = result.intents["Review code"]
    # reviewer-b's part went to the senior, whose answer counts as b's vote: with a's vote
    # that makes the quorum of two.
    assert code.state == {"approved": False, "votes": 2}
    assert_event_types(result, ["created", "ready", "dispatched", "response_received",
                                "escalated", "handoff", "cost_recorded", "response_received",
                                "decision_recorded", "completed"],
                       intent="Review code")
    assert one(result, "escalated", "Review code").data["reason"] == "needs a security expert"
    assert one(result, "handoff", "Review code").data == {
        "from": "review-coordinator", "to": "senior-reviewer", "for": "reviewer-b"}
    assert code.assigned_to == "reviewer-a,reviewer-b,reviewer-c"  # still its assignees'
    votes = [event.data for event in result.events.of_type("response_received")]
    assert votes == [{"agent": "reviewer-a", "response": {"approved": False}},
                     {"agent": "reviewer-b", "response": {"approved": True, "by": "senior"}}]
    # The quorum ended the vote: the slow reviewer was cancelled.
    assert (slowest.started, slowest.answered, slowest.cleaned) == (1, 0, 1)
    assert [decision.decision for decision in result.decisions] == ["quorum_reached"]
    assert len(boss.calls) == 1 and boss.calls[0].time == 45.0
    assert clock.now() == 105.0
    assert "Escalated: Review code — needs a security expert" in capsys.readouterr().out


async def test_seed_review_on_conflict_arbitrates_concurrent_stale_updates():
    """Reviewers write their confidence into the shared state; the second write is stale
    and goes to handle_conflict, which keeps the most confident version and records it."""

    class Reviewer:
        confidence = 0.0
        seconds = 0.0

        @on_assignment
        async def review(self, intent):
            read_at = intent.version
            await openintent.sleep(self.seconds)
            await self.patch_state(
                intent, {"confidence": self.confidence, "by": self.__openintent_id__},
                expected_version=read_at)
            return {"approved": True}

    a = Agent("reviewer-a")(type("A", (Reviewer,), {"confidence": 0.6, "seconds": 30}))
    b = Agent("reviewer-b")(type("B", (Reviewer,), {"confidence": 0.9, "seconds": 45}))
    c = Agent("reviewer-c")(type("C", (Reviewer,), {"confidence": 0.1, "seconds": 600}))
    spec = portfolio(IntentSpec("Review code"), name="Release review")
    result = await run(spec, a, b, c, senior(), coordinator=ReviewCoordinator)
    assert result.status == "completed"
    assert result.intents["Review code"].state == {
        "confidence": 0.9, "by": "reviewer-b", "approved": True, "votes": 2}
    conflict, quorum = result.decisions
    assert (conflict.coordinator_id, conflict.decision) == (
        "review-coordinator", "conflict_resolved")
    assert conflict.rationale == "Chose version with highest confidence"
    assert dict(conflict.data["chosen"]) == {"confidence": 0.9, "by": "reviewer-b"}
    assert (quorum.coordinator_id, quorum.decision) == ("runtime", "quorum_reached")
    patches = [e.data["patch"] for e in result.events.of_type(EventType.STATE_PATCHED)]
    assert patches == [{"confidence": 0.6, "by": "reviewer-a"},
                       {"confidence": 0.9, "by": "reviewer-b"}]


async def test_a_sub_portfolios_spend_rolls_up_into_the_parent_ledger() -> None:
    @Coordinator("planner-with-budget")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            sub = await self.execute(PortfolioSpec("sub", [IntentSpec("Step", assign="paid")]))
            return {"sub_cost": sub.cost_usd}

    paid = SimulatedAgent("paid", result={"ok": True}, cost_usd=2.5)
    async with Runtime(agents=[paid], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("parent", [IntentSpec("Plan")]), coordinator=Planner)
    assert result.intents["Plan"].state == {"sub_cost": 2.5}
    assert result.cost_usd == 2.5
    (rolled_up,) = result.events.of_type("cost_recorded")
    assert rolled_up.intent_id is None and rolled_up.data["subportfolio"].startswith("pf_")
    assert rolled_up.data["agent"] == "paid"


async def test_sequential_coordinator_runs_one_intent_at_a_time_in_declaration_order():
    counted = Concurrency()
    Seq = counted.agent("seq")

    @Coordinator("one-by-one", strategy="sequential")
    class OneByOne:
        pass

    spec = portfolio(
        IntentSpec("C", assign="seq"),
        IntentSpec("A", assign="seq"),
        IntentSpec("D", assign="seq", depends_on=["C"]),
        IntentSpec("B", assign="seq"),
    )
    clock = VirtualClock()
    result = await run(spec, Seq, coordinator=OneByOne, clock=clock)
    assert result.status == "completed"
    assert counted.peak == 1
    assert counted.order == ["C", "A", "D", "B"]
    assert clock.now() == 4.0  # one virtual second each, one after another


async def test_parallel_is_the_default_and_runs_ready_intents_together():
    counted = Concurrency()
    Wide = counted.agent("wide")

    spec = portfolio(*(IntentSpec(f"I{i}", assign="wide") for i in range(12)))
    clock = VirtualClock()
    result = await run(spec, Wide, clock=clock)
    assert result.status == "completed"
    assert counted.peak == 12
    assert clock.now() == 1.0  # all twelve slept the same virtual second together


async def test_a_coordinator_with_on_assignment_handles_unassigned_intents():
    @Coordinator("router")
    class Router:
        @on_assignment
        async def route(self, intent):
            return {"routed_by": "router"}

    result = await run(portfolio(IntentSpec("A")), coordinator=Router)
    assert result.intents["A"].state == {"routed_by": "router"}
    assert result.intents["A"].assigned_to == "router"
