"""Property tests of coordinators on random DAGs with random multi-agent intents.

Each example draws a portfolio (``openintent.testing.strategies.portfolios`` with
``multi_assignee=True``), an answer for every (intent, agent) pair from a small set, and a
virtual-time delay for each, so answers arrive in random orders. An ``@on_conflict``
coordinator picks deterministically and records its decision. The run must then agree with a
model computed from the drawn answers alone.

The runtime is driven with ``anyio.run`` inside synchronous Hypothesis tests.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import Coordinator, PortfolioSpec, on_conflict, on_quorum
from openintent.models import EventType, RunResult
from openintent.testing import SimulatedAgent, assert_replay_matches
from openintent.testing.strategies import portfolios

AGENTS = ["ag-a", "ag-b", "ag-c"]
ANSWERS = ({"verdict": "approve"}, {"verdict": "reject"}, {"verdict": "revise"})
DELAYS = (0.0, 1.0, 2.5)
GUARD_SECONDS = 10_000.0  # far beyond any run: the longest is 12 intents x 2.5 s

Table = dict[tuple[str, str], int]  # (title, agent) -> index into ANSWERS / DELAYS


@Coordinator("arbiter", agents=AGENTS)
class Arbiter:
    """Resolves disagreements by the smallest (verdict, agent id); logs what it decided."""

    def __init__(self) -> None:
        self.decided: list[tuple[str, dict[str, Any], str]] = []

    @on_conflict
    async def pick(self, intent, versions):
        winner = min(versions, key=lambda v: (v["verdict"], v.agent_id))
        self.decided.append((intent.id, dict(winner), winner.agent_id))
        await self.record_decision(
            intent_id=intent.id,
            decision="conflict_resolved",
            rationale="smallest verdict, then agent id",
            chosen=dict(winner),
            agent=winner.agent_id,
        )
        return winner


@Coordinator("majority", agents=AGENTS)
class Majority:
    """Takes whatever the first half (rounded up) of the assignees answered."""

    def __init__(self) -> None:
        self.votes: dict[str, list[str]] = {}

    @on_quorum(threshold=0.5)
    async def decide(self, intent, responses):
        self.votes[intent.id] = [response.agent_id for response in responses]
        return {"voters": [response.agent_id for response in responses]}


def simulated_agents(answers: Table, delays: Table) -> list[SimulatedAgent]:
    def behaviour(agent_id: str) -> Any:
        async def answer(intent: Any) -> dict[str, Any]:
            await openintent.sleep(DELAYS[delays[intent.title, agent_id]])
            return dict(ANSWERS[answers[intent.title, agent_id]])

        return answer

    return [SimulatedAgent(agent_id, result=behaviour(agent_id), register=False)
            for agent_id in AGENTS]


def tables(draw: Any, spec: PortfolioSpec, *, distinct_delays: bool = False
           ) -> tuple[Table, Table]:
    answers: Table = {}
    delays: Table = {}
    for intent in spec.intents:
        if distinct_delays:
            order = draw(st.permutations(range(len(DELAYS))))
        for position, agent_id in enumerate(AGENTS):
            answers[intent.title, agent_id] = draw(st.integers(0, len(ANSWERS) - 1))
            delays[intent.title, agent_id] = (
                order[position] if distinct_delays else draw(st.integers(0, len(DELAYS) - 1))
            )
    return answers, delays


def execute(spec: PortfolioSpec, agents: list[SimulatedAgent], coordinator: Any) -> RunResult:
    async def main() -> RunResult | None:
        clock = VirtualClock()
        # A guard in virtual time: a run that loses an intent goes idle, time jumps to the
        # guard's deadline and the run is cancelled. (A real-time guard such as
        # anyio.fail_after would keep the virtual clock from jumping at all.)
        with clock.timeout(GUARD_SECONDS):
            async with Runtime(agents=agents, clock=clock, seed=3) as rt:
                return await rt.run(spec, coordinator=coordinator)
        return None

    result = anyio.run(main)
    assert result is not None, f"the run was still going after {GUARD_SECONDS} virtual seconds"
    return result


def seqs(result: RunResult, intent_id: str, event_type: str) -> list[int]:
    return [event.seq for event in result.events.for_intent(intent_id)
            if event.type == event_type]


@settings(max_examples=40, deadline=None)
@given(spec=portfolios(agents=AGENTS, multi_assignee=True), data=st.data())
def test_every_multi_agent_intent_settles_on_exactly_the_answer_the_handlers_decided(spec, data):
    answers, delays = tables(data.draw, spec)
    agents = simulated_agents(answers, delays)
    arbiter = Arbiter()
    result = execute(spec, agents, arbiter)

    assert result.status == "completed", [(i.title, i.error) for i in result.failed_intents]
    assert_replay_matches(result)

    expected_decisions: Counter[tuple[str, str, str]] = Counter()
    for intent_spec in spec.intents:
        item = result.intents[intent_spec.title]
        assignees = intent_spec.assignees
        given_answers = {agent: ANSWERS[answers[intent_spec.title, agent]] for agent in assignees}

        # Exactly one result: one completion, after one dispatch, with every assignee heard.
        assert item.status == "completed"
        assert len(seqs(result, item.id, EventType.COMPLETED)) == 1
        assert len(seqs(result, item.id, EventType.DISPATCHED)) == 1
        calls = Counter(call.title for agent in agents for call in agent.calls)
        assert calls[intent_spec.title] == len(assignees)

        if len(assignees) == 1:
            (only,) = given_answers.values()
            assert item.state == only
            assert seqs(result, item.id, EventType.RESPONSE) == []
            continue

        responses = result.events.for_intent(item.id)
        heard = {e.data["agent"]: e.data["response"] for e in responses
                 if e.type == EventType.RESPONSE}
        assert heard == given_answers
        distinct = {answer["verdict"] for answer in given_answers.values()}
        if len(distinct) == 1:
            assert item.state == next(iter(given_answers.values()))
            expected_decisions["runtime", "responses_agreed", item.id] += 1
        else:
            winner = min(given_answers, key=lambda agent: (given_answers[agent]["verdict"], agent))
            assert item.state == given_answers[winner]
            expected_decisions["arbiter", "conflict_resolved", item.id] += 1
            (mine,) = [d for d in result.decisions if d.intent_id == item.id]
            assert dict(mine.data) == {"chosen": given_answers[winner], "agent": winner}

        # The decision sits between the last answer and the completion.
        (decision_seq,) = seqs(result, item.id, EventType.DECISION)
        assert max(seqs(result, item.id, EventType.RESPONSE)) < decision_seq
        assert decision_seq < seqs(result, item.id, EventType.COMPLETED)[0]

    # The decision log is exactly what the handlers (and the runtime) decided.
    actual = Counter((d.coordinator_id, d.decision, d.intent_id) for d in result.decisions)
    assert actual == expected_decisions
    mine_in_order = [(d.intent_id, dict(d.data["chosen"]), d.data["agent"])
                     for d in result.decisions if d.coordinator_id == "arbiter"]
    assert mine_in_order == arbiter.decided
    assert [d.id for d in result.decisions] == [
        e.data["id"] for e in result.events.of_type(EventType.DECISION)]


@settings(max_examples=40, deadline=None)
@given(spec=portfolios(agents=AGENTS, multi_assignee=True), data=st.data())
def test_a_fractional_quorum_takes_the_fastest_half_and_cancels_the_rest(spec, data):
    answers, delays = tables(data.draw, spec, distinct_delays=True)
    agents = simulated_agents(answers, delays)
    majority = Majority()
    result = execute(spec, agents, majority)

    assert result.status == "completed"
    for intent_spec in spec.intents:
        item = result.intents[intent_spec.title]
        assignees = intent_spec.assignees
        if len(assignees) == 1:
            assert item.state == ANSWERS[answers[intent_spec.title, assignees[0]]]
            continue
        needed = math.ceil(len(assignees) / 2)
        fastest = sorted(assignees, key=lambda agent: delays[intent_spec.title, agent])[:needed]
        assert item.state == {"voters": fastest}
        assert majority.votes[item.id] == fastest
        heard = [e.data["agent"] for e in result.events.for_intent(item.id)
                 if e.type == EventType.RESPONSE]
        assert heard == fastest  # the slower assignees were cancelled before answering
        (quorum,) = [d for d in result.decisions if d.intent_id == item.id]
        assert (quorum.coordinator_id, quorum.decision) == ("runtime", "quorum_reached")
        assert list(quorum.data["agents"]) == fastest
