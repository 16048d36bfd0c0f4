"""Coordinators: routing and delegation, decision records, multi-agent intents (quorum,
agreement, conflict arbitration), escalation, dynamic planning, lifecycle hooks, strategies.

Timing-sensitive tests run on a :class:`VirtualClock` with :class:`SimulatedAgent` delays, so
"30 s" of review takes no real time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

import openintent
from openintent import (
    AgentError,
    DelegationError,
    EventType,
    OpenIntentError,
    Runtime,
    StateConflictError,
    VirtualClock,
)
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
    on_conflict,
    on_escalation,
    on_handoff,
    on_quorum,
)
from openintent.errors import (
    DependencyCycleError,
    DuplicateIntentError,
    SpecError,
    UnknownDependencyError,
)
from openintent.models import Decision, Response, RunResult
from openintent.testing import SimulatedAgent, assert_event_types, assert_replay_matches

pytestmark = pytest.mark.asyncio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def portfolio(*intents: IntentSpec, name: str = "p") -> PortfolioSpec:
    return PortfolioSpec(name, list(intents))


async def run(
    spec: PortfolioSpec, *agents: Any, coordinator: Any = None, clock: VirtualClock | None = None
) -> RunResult:
    async with Runtime(agents=list(agents), clock=clock or VirtualClock(), seed=0) as rt:
        return await rt.run(spec, coordinator=coordinator)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def types_of(result: RunResult, title: str) -> list[str]:
    return [event.type for event in result.events.for_intent(result.intents[title].id)]


def one(result: RunResult, event_type: str, title: str) -> Any:
    (event,) = [e for e in result.events.for_intent(result.intents[title].id)
                if e.type == event_type]
    return event


def decisions_of(result: RunResult, title: str | None = None) -> list[tuple[str, str]]:
    wanted = result.intents[title].id if title is not None else None
    return [(d.coordinator_id, d.decision) for d in result.decisions
            if title is None or d.intent_id == wanted]


class Cleanup:
    """A slow agent whose ``finally`` counts: shows cancelled work really unwinds."""

    def __init__(self, answer: dict[str, Any] | None = None, seconds: float = 600) -> None:
        self.answer = answer if answer is not None else {"slow": True}
        self.seconds = seconds
        self.started = 0
        self.answered = 0
        self.cleaned = 0

    @on_assignment
    async def work(self, intent):
        self.started += 1
        try:
            await openintent.sleep(self.seconds)
            self.answered += 1
            return self.answer
        finally:
            self.cleaned += 1


# ------------------------------------------------------------------------ the decorator


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


# ------------------------------------------------------------------ routing and delegation


@Agent("dev")
class Dev:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    @on_handoff
    async def received(self, intent, from_agent):
        self.log.append(("handoff", intent.title, from_agent, intent.assigned_to))

    @on_assignment
    async def work(self, intent):
        self.log.append(("work", intent.title, intent.assigned_to))
        return {"by": "dev", "shared": "dev"}


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


# -------------------------------------------------------------------------- decision records


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


# ---------------------------------------------------------------------- multi-agent intents


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


# ------------------------------------------------------------------------------- escalation


async def test_an_escalation_goes_to_on_escalation_which_may_delegate_beyond_the_team():
    calls: list[Any] = []
    junior = SimulatedAgent("junior", escalate="too hard", register=False)
    senior = SimulatedAgent("senior", result={"by": "senior"}, delay=7, register=False)

    @Coordinator("lead", agents=["junior"])
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            calls.append((intent.title, reason, intent.assigned_to))
            await self.delegate(intent, to="senior")  # not in agents: allowed when escalating

    result = await run(portfolio(IntentSpec("X", assign="junior")), junior, senior,
                       coordinator=Lead)
    assert result.status == "completed"
    x = result.intents["X"]
    assert x.state == {"by": "senior"}
    assert x.assigned_to == "senior"
    assert calls == [("X", "too hard", "junior")]
    assert types_of(result, "X") == ["created", "ready", "dispatched", "escalated", "handoff",
                                     "completed"]
    assert one(result, "escalated", "X").data == {"reason": "too hard", "agent": "junior"}
    assert one(result, "handoff", "X").data == {"from": "lead", "to": "senior"}


async def test_self_escalate_and_a_returned_dict_resolve_the_intent():
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent):
            await self.escalate(intent, "need a decision")
            return {"unreachable": True}

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            return {"decided": reason}

    result = await run(portfolio(IntentSpec("X", assign="worker")), Worker, coordinator=Lead)
    assert result.intents["X"].state == {"decided": "need a decision"}
    assert result.intents["X"].assigned_to == "worker"
    assert "handoff" not in types_of(result, "X")


async def test_an_escalation_handler_that_raises_fails_the_attempt_and_retries_apply():
    calls: list[int] = []
    worker = SimulatedAgent("worker", escalate="stuck", register=False)

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            calls.append(intent.attempt)
            if intent.attempt == 1:
                raise RuntimeError("not now")
            return {"resolved_on": intent.attempt}

    spec = portfolio(IntentSpec("X", assign="worker", retry={
        "max_attempts": 3, "initial_delay": 1, "jitter": False}))
    result = await run(spec, worker, coordinator=Lead)
    assert result.status == "completed"
    assert calls == [1, 2]
    assert result.intents["X"].state == {"resolved_on": 2}
    assert result.intents["X"].attempts == 2
    assert types_of(result, "X") == [
        "created", "ready", "dispatched", "escalated", "attempt_failed", "retry_scheduled",
        "dispatched", "escalated", "completed"]


async def test_an_escalation_left_unresolved_fails_with_escalation_error_and_no_retry():
    worker = SimulatedAgent("worker", escalate="budget unclear", register=False)
    handled: list[str] = []

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            handled.append(reason)  # neither delegates nor returns a result

    spec = portfolio(IntentSpec("X", assign="worker", retry={"max_attempts": 3}))
    result = await run(spec, worker, coordinator=Lead)
    x = result.intents["X"]
    assert x.status == "failed"
    assert x.error_type == "EscalationError"
    assert "budget unclear" in x.error
    assert x.attempts == 1 and len(worker.calls) == 1
    assert handled == ["budget unclear"]


async def test_an_escalation_with_no_handler_fails_with_escalation_error_and_no_retry():
    worker = SimulatedAgent("worker", escalate="who decides?", register=False)

    @Coordinator("lead")
    class Lead:
        pass

    spec = portfolio(IntentSpec("X", assign="worker", retry={"max_attempts": 3}))
    result = await run(spec, worker, coordinator=Lead)
    x = result.intents["X"]
    assert x.error_type == "EscalationError"
    assert "who decides?" in x.error and "@on_escalation" in x.error
    assert x.attempts == 1 and len(worker.calls) == 1
    assert "retry_scheduled" not in types_of(result, "X")


async def test_on_escalation_may_not_delegate_to_an_unknown_agent():
    worker = SimulatedAgent("worker", escalate="help", register=False)

    @Coordinator("lead")
    class Lead:
        @on_escalation
        async def escalated(self, intent, reason):
            await self.delegate(intent, to="ghost")

    result = await run(portfolio(IntentSpec("X", assign="worker")), worker, coordinator=Lead)
    assert result.intents["X"].error_type == "DelegationError"
    assert "'ghost'" in result.intents["X"].error


async def test_an_agent_reached_by_delegation_can_escalate_back_to_the_coordinator():
    seen: list[str] = []
    junior = SimulatedAgent("junior", escalate="out of my depth", register=False)
    senior = SimulatedAgent("senior", result={"by": "senior"}, register=False)

    @Coordinator("lead", agents=["junior"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="junior")

        @on_escalation
        async def escalated(self, intent, reason):
            seen.append(reason)
            await self.delegate(intent, to="senior")

    result = await run(portfolio(IntentSpec("X")), junior, senior, coordinator=Lead)
    assert result.intents["X"].state == {"by": "senior"}
    assert result.intents["X"].assigned_to == "senior"
    assert seen == ["out of my depth"]
    assert [e.data["to"] for e in result.events.of_type("handoff")] == ["junior", "senior"]


# ------------------------------------------------------------------------- dynamic planning


async def test_add_intent_while_running_extends_the_plan():
    worker = SimulatedAgent("w", result=lambda i: {"t": i.title, "saw": sorted(i.inputs)},
                            delay=1, register=False)
    added: list[str] = []

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            await openintent.sleep(5)  # A has completed by now; B is still pending
            added.append(await self.add_intent(IntentSpec("C", assign="w",
                                                          depends_on=["A", "B"])))
            added.append(await self.add_intent(IntentSpec("D", assign="w")))
            return {"planned": True}

    spec = portfolio(IntentSpec("A", assign="w"), IntentSpec("Plan"),
                     IntentSpec("B", assign="w", depends_on=["Plan"]))
    result = await run(spec, worker, coordinator=Planner)
    assert result.status == "completed"
    assert list(result.intents) == ["A", "Plan", "B", "C", "D"]
    assert added == [result.intents["C"].id, result.intents["D"].id]
    assert result.intents["C"].state == {"t": "C", "saw": ["A", "B"]}
    assert result.intents["C"].depends_on == ("A", "B")
    assert worker.titles.index("B") < worker.titles.index("C")
    assert_replay_matches(result)


async def test_add_intent_refuses_duplicates_unknown_and_self_dependencies():
    refused: list[tuple[str, str]] = []

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            for spec in (IntentSpec("Plan", assign="w"),
                         IntentSpec("Y", assign="w", depends_on=["Nope"]),
                         IntentSpec("Z", assign="w", depends_on=["Z"])):
                try:
                    await self.add_intent(spec)
                except OpenIntentError as exc:
                    refused.append((type(exc).__name__, str(exc)))
            return {}

    worker = SimulatedAgent("w", result={}, register=False)
    result = await run(portfolio(IntentSpec("Plan")), worker, coordinator=Planner)
    assert result.status == "completed"
    assert list(result.intents) == ["Plan"]
    assert [name for name, _ in refused] == [
        DuplicateIntentError.__name__, UnknownDependencyError.__name__,
        DependencyCycleError.__name__]
    assert "intents[0] and the added intent are both titled 'Plan'" in refused[0][1]
    assert "'Nope'" in refused[1][1]
    assert "itself" in refused[2][1]
    assert worker.calls == []


async def test_an_added_intent_whose_dependency_already_failed_is_skipped():
    bad = SimulatedAgent("bad", result=RuntimeError("nope"), register=False)
    worker = SimulatedAgent("w", result={}, register=False)

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            await openintent.sleep(5)  # Bad has failed by now
            await self.add_intent(IntentSpec("After", assign="w", depends_on=["Bad"]))
            return {}

    result = await run(portfolio(IntentSpec("Bad", assign="bad"), IntentSpec("Plan")),
                       bad, worker, coordinator=Planner)
    assert result.status == "failed"
    assert result.intents["After"].status == "skipped"
    assert types_of(result, "After") == ["created", "skipped"]
    assert "'Bad'" in one(result, "skipped", "After").data["reason"]
    assert worker.calls == []


async def test_add_intent_from_on_complete_while_other_work_runs():
    worker = SimulatedAgent("w", result={}, register=False)
    slow = SimulatedAgent("slow", result={}, delay=10, register=False)

    @Coordinator("planner")
    class Planner:
        @on_complete
        async def grow(self, intent):
            if intent.title == "A":
                await self.add_intent(IntentSpec("B", assign="w", depends_on=["A"]))

    result = await run(portfolio(IntentSpec("A", assign="w"), IntentSpec("S", assign="slow")),
                       worker, slow, coordinator=Planner)
    assert result.status == "completed"
    assert result.intents["B"].status == "completed"
    assert worker.titles == ["A", "B"]


async def test_add_intent_from_on_complete_of_the_last_intent_extends_the_plan():
    worker = SimulatedAgent("w", result={}, register=False)

    @Coordinator("planner")
    class Planner:
        @on_complete
        async def grow(self, intent):
            if intent.title == "A":
                await self.add_intent(IntentSpec("B", assign="w", depends_on=["A"]))

    result = await run(portfolio(IntentSpec("A", assign="w")), worker, coordinator=Planner)
    assert result.events.of_type("hook_failed") == []
    assert list(result.intents) == ["A", "B"]
    assert worker.titles == ["A", "B"]


async def test_execute_runs_a_sub_portfolio_and_returns_its_result():
    worker = SimulatedAgent("w", result=lambda i: {"t": i.title, "saw": sorted(i.inputs)},
                            delay=2, register=False)
    subs: list[RunResult] = []
    clock = VirtualClock()

    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def plan(self, intent):
            sub = await self.execute(portfolio(
                IntentSpec("S1", assign="w"), IntentSpec("S2", assign="w", depends_on=["S1"]),
                name="sub"))
            subs.append(sub)
            return {"sub": sub.status.value, "s2": dict(sub.intents["S2"].state)}

    result = await run(portfolio(IntentSpec("Main")), worker, coordinator=Lead, clock=clock)
    assert result.status == "completed"
    (sub,) = subs
    assert isinstance(sub, RunResult)
    assert sub.name == "sub" and sub.portfolio_id != result.portfolio_id
    assert sub.status == "completed"
    assert list(sub.intents) == ["S1", "S2"]
    assert result.intents["Main"].state == {
        "sub": "completed", "s2": {"t": "S2", "saw": ["S1"]}}
    assert clock.now() == 4.0  # same clock: S1 then S2, 2 s each
    # The sub-portfolio's events are its own.
    assert list(result.intents) == ["Main"]
    assert {e.data["title"] for e in result.events.of_type("created")} == {"Main"}
    assert {e.data["title"] for e in sub.events.of_type("created")} == {"S1", "S2"}


# -------------------------------------------------------------------------- lifecycle hooks


async def test_on_all_complete_fires_once_and_on_complete_for_every_completed_intent():
    dev = Dev()

    @Coordinator("lead", agents=["dev", "a", "b"])
    class Lead:
        def __init__(self) -> None:
            self.completed: list[str] = []
            self.finished: list[Any] = []

        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="dev")

        @on_complete
        async def seen(self, intent):
            self.completed.append(intent.title)

        @on_all_complete
        async def done(self, portfolio):
            self.finished.append(sorted(portfolio.intents))
            return {"done": len(portfolio.intents)}

    a = SimulatedAgent("a", result={"v": 1}, delay=1, register=False)
    b = SimulatedAgent("b", result={"v": 1}, delay=2, register=False)
    lead = Lead()
    spec = portfolio(IntentSpec("Routed"), IntentSpec("Multi", assign=["a", "b"]),
                     IntentSpec("Single", assign="a", depends_on=["Multi"]))
    result = await run(spec, dev, a, b, coordinator=lead)
    assert result.status == "completed"
    assert result.output == {"done": 3}
    assert lead.finished == [["Multi", "Routed", "Single"]]
    assert lead.completed == ["Routed", "Multi", "Single"]


async def test_on_complete_does_not_fire_for_failed_intents_nor_on_all_complete():
    bad = SimulatedAgent("bad", result=RuntimeError("x"), register=False)
    good = SimulatedAgent("good", result={}, register=False)
    log: list[str] = []

    @Coordinator("lead")
    class Lead:
        @on_complete
        async def seen(self, intent):
            log.append(intent.title)

        @on_all_complete
        async def done(self, portfolio):
            log.append("all")

    result = await run(portfolio(IntentSpec("Bad", assign="bad"),
                                 IntentSpec("Good", assign="good")), bad, good, coordinator=Lead)
    assert result.status == "failed"
    assert result.output is None
    assert log == ["Good"]


async def test_the_delegates_own_on_complete_fires():
    completed: list[str] = []

    @Agent("helper")
    class Helper:
        @on_assignment
        async def work(self, intent):
            return {"ok": True}

        @on_complete
        async def done(self, intent):
            completed.append(intent.title)

    @Coordinator("lead", agents=["helper"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="helper")

    result = await run(portfolio(IntentSpec("X")), Helper, coordinator=Lead)
    assert result.intents["X"].assigned_to == "helper"
    assert completed == ["X"]


async def test_the_agent_of_an_added_intent_gets_its_on_complete():
    completed: list[str] = []

    @Agent("late")
    class Late:
        @on_assignment
        async def work(self, intent):
            return {"ok": True}

        @on_complete
        async def done(self, intent):
            completed.append(intent.title)

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            await self.add_intent(IntentSpec("Added", assign="late"))
            return {}

    result = await run(portfolio(IntentSpec("Plan")), Late, coordinator=Planner)
    assert result.intents["Added"].status == "completed"
    assert completed == ["Added"]


async def test_on_complete_sees_the_delegate_as_assignee():
    assignees: list[Any] = []

    @Coordinator("lead", agents=["dev"])
    class Lead:
        @on_assignment
        async def route(self, intent):
            await self.delegate(intent, to="dev")

        @on_complete
        async def seen(self, intent):
            assignees.append(intent.assigned_to)

    result = await run(portfolio(IntentSpec("X")), Dev(), coordinator=Lead)
    assert result.intents["X"].assigned_to == "dev"
    assert assignees == ["dev"]


# ------------------------------------------------------------------------------- strategies


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


# ------------------------------------------------------------------- end to end: the seed


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
