"""Multi-agent intents: quorum, agreement of identical answers, conflict arbitration of
differing answers and stale patches, and the assignees of an intent with several."""

from __future__ import annotations

from typing import Any

import pytest

import openintent
from openintent import AgentError, EventType, Runtime, SpecError, StateConflictError, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
    on_conflict,
    on_escalation,
    on_quorum,
)
from openintent.models import Response, RunResult
from openintent.testing import SimulatedAgent

from _helpers import Cleanup, portfolio, run, types_of

pytestmark = pytest.mark.asyncio


def decisions_of(result: RunResult, title: str | None = None) -> list[tuple[str, str]]:
    wanted = result.intents[title].id if title is not None else None
    return [(d.coordinator_id, d.decision) for d in result.decisions
            if title is None or d.intent_id == wanted]


# --------------------------------------------------------------------------------------- quorum


def quorum_coordinator(threshold: Any, seen: list[Any]) -> Any:
    @Coordinator("voter", agents=["a", "b", "c"])
    class Voter:
        @on_quorum(threshold=threshold)
        async def decide(self, intent, responses):
            seen.append([(r.agent_id, r.version, dict(r), type(r)) for r in responses])
            return {"votes": sorted(r.agent_id for r in responses)}

    return Voter


async def test_on_quorum_fires_as_soon_as_n_agents_answered_and_cancels_the_rest():
    clock = VirtualClock()
    seen: list[Any] = []
    a = SimulatedAgent("a", result={"vote": "yes"}, delay=1, register=False)
    b = SimulatedAgent("b", result={"vote": "no"}, delay=2, register=False)
    slow = Agent("c")(type("SlowC", (Cleanup,), {}))({"vote": "late"}, 100)

    result = await run(portfolio(IntentSpec("X", assign=["a", "b", "c"])), a, b, slow,
                       coordinator=quorum_coordinator(2, seen), clock=clock)
    assert result.status == "completed"
    assert result.intents["X"].state == {"votes": ["a", "b"]}
    assert seen == [[("a", 0, {"vote": "yes"}, Response), ("b", 0, {"vote": "no"}, Response)]]
    # Settled at t=2; the 100 s agent was cancelled and its finally ran.
    assert clock.now() == 2.0
    assert (slow.started, slow.answered, slow.cleaned) == (1, 0, 1)
    assert [e.data["agent"] for e in result.events.of_type(EventType.RESPONSE)] == ["a", "b"]
    (quorum,) = result.decisions
    assert (quorum.coordinator_id, quorum.decision) == ("runtime", "quorum_reached")
    assert dict(quorum.data) == {"agents": ["a", "b"]}
    assert types_of(result, "X") == [
        "created", "ready", "dispatched", "response_received", "response_received",
        "decision_recorded", "completed"]


@pytest.mark.parametrize(
    ("threshold", "answers"),
    [(1, 1), (2, 2), (3, 3), (0.5, 2), (0.34, 2), (0.33, 1), (1.0, 3)],
)
async def test_quorum_threshold_int_counts_agents_float_is_a_fraction_rounded_up(
    threshold, answers
):
    seen: list[Any] = []
    agents = [SimulatedAgent(agent_id, result={"v": agent_id}, delay=delay, register=False)
              for agent_id, delay in (("a", 1), ("b", 2), ("c", 3))]
    result = await run(portfolio(IntentSpec("X", assign=["a", "b", "c"])), *agents,
                       coordinator=quorum_coordinator(threshold, seen))
    assert result.status == "completed"
    assert result.intents["X"].state == {"votes": ["a", "b", "c"][:answers]}
    assert [len(votes) for votes in seen] == [answers]


async def test_bare_on_quorum_waits_for_every_assignee():
    seen: list[Any] = []

    @Coordinator("all-of-them")
    class AllOfThem:
        @on_quorum
        async def decide(self, intent, responses):
            seen.append(sorted(r.agent_id for r in responses))
            return {"n": len(responses)}

    agents = [SimulatedAgent(i, result={}, delay=d, register=False)
              for i, d in (("a", 1), ("b", 50))]
    result = await run(portfolio(IntentSpec("X", assign=["a", "b"])), *agents,
                       coordinator=AllOfThem)
    assert result.intents["X"].state == {"n": 2}
    assert seen == [["a", "b"]]


@pytest.mark.parametrize("bad", [0, -1, 0.0, 1.5, True, "2"])
async def test_on_quorum_rejects_a_bad_threshold(bad):
    with pytest.raises(AgentError, match="threshold"):
        on_quorum(threshold=bad)


async def test_too_many_failures_fail_the_intent_with_a_quorum_error():
    clock = VirtualClock()
    seen: list[Any] = []
    a = SimulatedAgent("a", result=RuntimeError("a broke"), delay=1, register=False)
    b = SimulatedAgent("b", result=RuntimeError("b broke"), delay=2, register=False)
    slow = Agent("c")(type("SlowC", (Cleanup,), {}))()
    result = await run(portfolio(IntentSpec("X", assign=["a", "b", "c"]), IntentSpec(
        "After", assign="a", depends_on=["X"])), a, b, slow,
        coordinator=quorum_coordinator(2, seen), clock=clock)
    assert result.status == "failed"
    x = result.intents["X"]
    assert x.status == "failed"
    assert x.error_type == "QuorumError"
    assert "a broke" in x.error and "b broke" in x.error
    assert result.intents["After"].status == "skipped"
    assert seen == []
    # Settled as soon as the quorum became unreachable (t=2); c was cancelled.
    assert clock.now() == 2.0
    assert (slow.started, slow.answered, slow.cleaned) == (1, 0, 1)
    assert result.decisions == ()


async def test_a_quorum_larger_than_the_assignees_is_refused_before_running():
    seen: list[Any] = []
    agents = [SimulatedAgent(i, result={}, register=False) for i in ("a", "b")]
    with pytest.raises(SpecError, match="intent 'X' has 2 assignees .* needs 3"):
        await run(portfolio(IntentSpec("X", assign=["a", "b"])), *agents,
                  coordinator=quorum_coordinator(3, seen))
    assert seen == [] and all(not agent.calls for agent in agents)


@Coordinator(
    "escalating-review-coordinator",  # test_coordinators registers "review-coordinator"
    agents=["reviewer-a", "reviewer-b", "reviewer-c"],
    strategy="parallel",
)
class ReviewCoordinator:
    """The seed's ReviewCoordinator (escalation and quorum parts)."""

    @on_escalation
    async def handle_escalation(self, intent: Any, reason: str) -> None:
        await self.delegate(intent, to="senior-reviewer")  # type: ignore[attr-defined]

    @on_quorum(threshold=2)
    async def quorum_reached(self, intent: Any, responses: Any) -> dict[str, Any]:
        approved = all(r.get("approved") for r in responses)
        return {"approved": approved, "votes": len(responses)}


async def test_an_escalated_vote_still_counts_towards_the_quorum(runtime: Runtime) -> None:
    SimulatedAgent("reviewer-a", result={"approved": True}, delay=1)
    SimulatedAgent("reviewer-b", escalate="needs a senior", delay=2)
    SimulatedAgent("reviewer-c", result={"approved": True}, delay=3)
    SimulatedAgent("senior-reviewer", result={"approved": False})

    result = await runtime.run(
        PortfolioSpec("Release review", [IntentSpec("Review code")]),
        coordinator=ReviewCoordinator,
    )
    assert result.status == "completed"
    # Contract: "@on_quorum(threshold=N) fires once N responses are in ... its return value
    # is the intent's result".
    assert [d.decision for d in result.decisions] == ["quorum_reached"]
    assert result.intents["Review code"].state["votes"] == 2


# ---------------------------------------------------------------------- agreement and conflicts


async def test_identical_answers_win_and_the_runtime_records_that_they_agreed():
    conflicts: list[Any] = []

    @Coordinator("lead")
    class Lead:
        @on_conflict
        async def arbitrate(self, intent, versions):
            conflicts.append(intent.title)
            return versions[0]

    agents = [SimulatedAgent(i, result={"answer": 42}, delay=d, register=False)
              for i, d in (("a", 3), ("b", 1))]
    result = await run(portfolio(IntentSpec("X", assign=["a", "b"])), *agents,
                       coordinator=Lead)
    assert result.intents["X"].state == {"answer": 42}
    assert conflicts == []
    (agreed,) = result.decisions
    assert (agreed.coordinator_id, agreed.decision) == ("runtime", "responses_agreed")
    assert dict(agreed.data) == {"agents": ["b", "a"]}  # in the order they answered


async def test_differing_answers_go_to_on_conflict_whose_return_wins():
    seen: list[Any] = []

    @Coordinator("lead")
    class Lead:
        @on_conflict
        async def arbitrate(self, intent, versions):
            seen.append((intent.title, [(v.agent_id, v.version, dict(v)) for v in versions],
                         all(isinstance(v, Response) for v in versions)))
            winner = max(versions, key=lambda v: v["confidence"])
            await self.record_decision(intent_id=intent.id, decision="conflict_resolved",
                                       chosen=winner.agent_id)
            return winner

    a = SimulatedAgent("a", result={"confidence": 0.2, "answer": "x"}, delay=1, register=False)
    b = SimulatedAgent("b", result={"confidence": 0.9, "answer": "y"}, delay=2, register=False)
    result = await run(portfolio(IntentSpec("X", assign=["a", "b"],
                                            initial_state={"topic": "t"})),
                       a, b, coordinator=Lead)
    assert result.status == "completed"
    assert result.intents["X"].state == {"topic": "t", "confidence": 0.9, "answer": "y"}
    assert seen == [("X", [("a", 0, {"confidence": 0.2, "answer": "x"}),
                           ("b", 0, {"confidence": 0.9, "answer": "y"})], True)]
    assert decisions_of(result) == [("lead", "conflict_resolved")]
    assert result.decisions[0].data == {"chosen": "b"}


async def test_differing_answers_without_a_handler_fail_with_a_conflict_error_naming_agents():
    @Coordinator("lead")
    class Lead:
        pass

    a = SimulatedAgent("agent-one", result={"v": 1}, register=False)
    b = SimulatedAgent("agent-two", result={"v": 2}, register=False)
    result = await run(portfolio(IntentSpec("X", assign=["agent-one", "agent-two"])), a, b,
                       coordinator=Lead)
    x = result.intents["X"]
    assert x.status == "failed"
    assert x.error_type == "ResponseConflictError"
    assert "agent-one" in x.error and "agent-two" in x.error
    assert result.decisions == ()
    assert len(result.events.of_type(EventType.RESPONSE)) == 2


async def test_a_stale_patch_reaches_on_conflict_and_its_return_is_written():
    seen: list[Any] = []
    after: dict[str, Any] = {}

    @Coordinator("lead")
    class Lead:
        @on_conflict
        async def arbitrate(self, intent, versions):
            seen.append([(dict(v), v.version) for v in versions])
            return {"draft": "merged"}

    @Agent("writer")
    class Writer:
        @on_assignment
        async def work(self, intent):
            await self.patch_state(intent, {"draft": "one"})
            version = await self.patch_state(intent, {"draft": "two"}, expected_version=0)
            after["version"] = version
            after["state"] = dict(intent.state)
            return {"done": True}

    result = await run(portfolio(IntentSpec("X", assign="writer")), Writer, coordinator=Lead)
    assert result.status == "completed"
    # versions = [current, proposed]
    assert seen == [[({"draft": "one"}, 1), ({"draft": "two"}, 0)]]
    assert after == {"version": 2, "state": {"draft": "merged"}}
    assert result.intents["X"].state == {"draft": "merged", "done": True}
    patches = [e.data["patch"] for e in result.events.of_type(EventType.STATE_PATCHED)]
    assert patches == [{"draft": "one"}, {"draft": "merged"}]


async def test_a_stale_patch_without_a_conflict_handler_raises_state_conflict_error():
    caught: list[tuple[int, int]] = []

    @Coordinator("lead")
    class Lead:
        pass

    @Agent("writer")
    class Writer:
        @on_assignment
        async def work(self, intent):
            await self.patch_state(intent, {"draft": "one"})
            try:
                await self.patch_state(intent, {"draft": "two"}, expected_version=0)
            except StateConflictError as exc:
                caught.append((exc.expected, exc.actual))
            return {}

    result = await run(portfolio(IntentSpec("X", assign="writer")), Writer, coordinator=Lead)
    assert caught == [(0, 1)]
    assert result.intents["X"].state == {"draft": "one"}


async def test_a_patch_conflict_names_who_wrote_the_current_version() -> None:
    versions_seen: list[list[tuple[str, int]]] = []

    @Agent("a")
    class A:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, bool]:
            await openintent.sleep(1)
            await self.patch_state(intent, {"by": "a"}, expected_version=intent.version)
            return {"ok": True}

    @Agent("b")
    class B:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, bool]:
            await openintent.sleep(2)
            await self.patch_state(intent, {"by": "b"}, expected_version=intent.version)
            return {"ok": True}

    @Coordinator("lead")
    class Lead:
        @on_conflict
        async def conflict(self, intent: Any, versions: Any) -> Any:
            versions_seen.append([(v.agent_id, v.version) for v in versions])
            return versions[-1]

    async with Runtime(agents=[A, B, Lead], clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("X", assign=["a", "b"])]),
                              coordinator=Lead)
    assert result.status == "completed"
    assert versions_seen == [[("a", 1), ("b", 0)]]  # got [("a,b", 1), ("b", 0)]


# ------------------------------------------------------------------------------------ assignees


async def test_each_assignee_of_a_multi_agent_intent_gets_its_on_complete():
    completed: list[tuple[str, str]] = []

    class Voter:
        @on_assignment
        async def work(self, intent):
            return {"ok": True}

        @on_complete
        async def done(self, intent):
            completed.append((self.__openintent_id__, intent.title))

    a = Agent("a")(type("A", (Voter,), {}))
    b = Agent("b")(type("B", (Voter,), {}))
    result = await run(portfolio(IntentSpec("X", assign=["a", "b"])), a, b)
    assert result.status == "completed"
    assert sorted(completed) == [("a", "X"), ("b", "X")]


async def test_fallback_on_a_multi_assignee_intent_is_refused_before_running() -> None:
    a = SimulatedAgent("a", result=RuntimeError("a is down"))
    SimulatedAgent("b", result={"v": 1})
    fallback = SimulatedAgent("c", result={"v": 1})
    spec = PortfolioSpec("p", [IntentSpec("M", assign=["a", "b"],
                                          retry={"max_attempts": 1, "fallback": ["c"]})])
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        with pytest.raises(openintent.SpecError, match="intent 'M' has 2 assignees and retry "
                           "fallback agents"):
            await rt.run(spec)
    assert not a.calls and not fallback.calls


async def test_a_multi_agent_intent_that_never_started_names_its_assignees() -> None:
    SimulatedAgent("a", result={"ok": True}, cost_usd=10.0)
    SimulatedAgent("b", result={"ok": True})
    SimulatedAgent("c", result={"ok": True})
    spec = PortfolioSpec("p", [
        IntentSpec("Spend", assign="a"),
        IntentSpec("Vote", assign=["b", "c"], depends_on=["Spend"]),
    ])
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "budget", "max_cost_usd": 5}]) as rt:
        result = await rt.run(spec)
    assert result.status == "halted"
    assert result.intents["Vote"].status == "pending"
    assert result.intents["Vote"].assigned_to == "b,c"


async def test_agreeing_assignees_complete_a_multi_agent_intent():
    @Agent("a")
    class A:
        @on_assignment
        async def work(self, intent):
            return {"verdict": "ok", "by": intent.assigned_to == "a"}

    @Agent("b")
    class B:
        @on_assignment
        async def work(self, intent):
            return {"verdict": "ok", "by": intent.assigned_to == "b"}

    result = await run(portfolio(IntentSpec("Review", assign=["a", "b"])), A, B)
    assert result.intents["Review"].status == "completed"
    assert result.intents["Review"].state == {"verdict": "ok", "by": True}


async def test_disagreeing_assignees_without_a_handler_fail_naming_them():
    @Agent("yes")
    class Yes:
        @on_assignment
        async def work(self, intent):
            return {"approved": True}

    @Agent("no")
    class No:
        @on_assignment
        async def work(self, intent):
            return {"approved": False}

    result = await run(portfolio(IntentSpec("Vote", assign=["yes", "no"])), Yes, No)
    vote = result.intents["Vote"]
    assert vote.status == "failed"
    assert vote.error_type == "ResponseConflictError"
    assert "no: {'approved': False}" in vote.error and "yes: {'approved': True}" in vote.error


async def test_one_failing_assignee_fails_the_attempt_with_its_own_error():
    @Agent("ok")
    class Ok:
        @on_assignment
        async def work(self, intent):
            await openintent.sleep(5)
            return {"late": True}

    @Agent("broken")
    class Broken:
        @on_assignment
        async def work(self, intent):
            raise LookupError("no data")

    clock = VirtualClock()
    result = await run(portfolio(IntentSpec("Pair", assign=["ok", "broken"])), Ok, Broken,
                       clock=clock)
    assert clock.now() == 0.0  # nobody waited for "ok"
    assert result.intents["Pair"].status == "failed"
    assert result.intents["Pair"].error_type == "LookupError"
