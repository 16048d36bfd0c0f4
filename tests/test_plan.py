"""The plan compiler: one set of checks for ``rt.run``, ``add_intent`` and ``execute``; ids
unique to each run; a sub-portfolio runs under the coordinator that executes it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from openintent import (
    AgentError,
    DependencyCycleError,
    DuplicateIntentError,
    OpenIntentError,
    Runtime,
    SpecError,
    UnknownAgentError,
    UnknownDependencyError,
    VirtualClock,
)
from openintent.agents import (
    Agent,
    Coordinator,
    CoordinatorMethods,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_quorum,
)
from openintent.models import RunResult
from openintent.testing import SimulatedAgent, assert_replay_matches

pytestmark = pytest.mark.asyncio


# ------------------------------------------------------------------ the same checks, both ways


@Agent("plan-worker")
class Worker:
    calls: list[str] = []

    @on_assignment
    async def work(self, intent):
        Worker.calls.append(intent.title)
        return {"by": "worker"}


@Agent("plan-helper")
class Helper:
    @on_assignment
    async def work(self, intent):
        return {"by": "helper"}


@Agent("plan-idle")
class Idle:
    """Takes no work: it has no @on_assignment handler."""


@Coordinator("plan-lead")
class Planner(CoordinatorMethods):
    """Routes ``Plan`` to itself; there it adds ``to_add``, keeps the error, and goes on."""

    to_add: IntentSpec | None = None
    to_execute: PortfolioSpec | None = None
    refused: list[Exception] = []

    @on_assignment
    async def plan(self, intent):
        if intent.title == "Main" and Planner.to_execute is not None:
            try:
                await self.execute(Planner.to_execute)
            except OpenIntentError as exc:
                Planner.refused.append(exc)
            return {}
        if intent.title == "Plan" and Planner.to_add is not None:
            try:
                await self.add_intent(Planner.to_add)
            except OpenIntentError as exc:
                Planner.refused.append(exc)
            # The run goes on: a good intent added after the refusal still runs.
            await self.add_intent(IntentSpec("After", assign="plan-worker"))
        return {}

    @on_quorum(threshold=3)
    async def vote(self, intent, responses):
        return dict(responses[0])


CASES: list[tuple[str, IntentSpec, type[Exception], str]] = [
    ("unknown agent", IntentSpec("X", assign="plan-wroker"), UnknownAgentError,
     r"^intent 'X': no agent with id 'plan-wroker' \(did you mean 'plan-worker'\?\)"),
    ("unknown dependency", IntentSpec("X", assign="plan-worker", depends_on=["Plam"]),
     UnknownDependencyError,
     r"^portfolio 'p': intent 'X' depends on 'Plam', which is not an intent of this portfolio "
     r"\(did you mean 'Plan'\?\)"),
    ("duplicate title", IntentSpec("Plan", assign="plan-worker"), DuplicateIntentError,
     r"^portfolio 'p': intents\[0\] and (intents\[1\]|the added intent) are both titled 'Plan'"),
    ("self dependency", IntentSpec("X", assign="plan-worker", depends_on=["X"]),
     DependencyCycleError, r"^portfolio 'p': intent 'X' depends on itself \(X -> X\)"),
    ("multi-agent with fallback",
     IntentSpec("X", assign=["plan-worker", "plan-helper"], retry={"fallback": ["plan-helper"]}),
     SpecError, r"^intent 'X' has 2 assignees and retry fallback agents"),
    ("quorum above the assignees", IntentSpec("X", assign=["plan-worker", "plan-helper"]),
     SpecError, r"^intent 'X' has 2 assignees but the @on_quorum .* needs 3"),
    ("agent without a handler", IntentSpec("X", assign="plan-idle"), AgentError,
     r"^intent 'X' is assigned to 'plan-idle', but Idle has no @on_assignment handler"),
    ("unknown fallback", IntentSpec("X", assign="plan-worker", retry={"fallback": ["nobody"]}),
     UnknownAgentError, r"^intent 'X': no agent with id 'nobody'"),
    ("fallback without a handler",
     IntentSpec("X", assign="plan-worker", retry={"fallback": ["plan-idle"]}), AgentError,
     r"^intent 'X' is assigned to 'plan-idle', but Idle has no @on_assignment handler"),
]
CASE_IDS = [case[0] for case in CASES]


async def refusal(bad: IntentSpec, path: str) -> Exception:
    """The error ``bad`` gets from ``rt.run`` (as the portfolio's second intent) or from
    ``add_intent`` (added while ``Plan`` runs); checks that nothing of it ran either way."""
    Worker.calls = []
    Planner.refused = []
    Planner.to_add = bad if path == "at add_intent" else None
    async with Runtime(agents=[Worker, Helper, Idle], clock=VirtualClock(), seed=0) as rt:
        if path == "at run":
            with pytest.raises(OpenIntentError) as caught:
                await rt.run(PortfolioSpec("p", [IntentSpec("Plan"), bad]), coordinator=Planner)
            assert Worker.calls == []
            return caught.value
        result = await rt.run(PortfolioSpec("p", [IntentSpec("Plan")]), coordinator=Planner)
    (error,) = Planner.refused
    assert result.status == "completed"
    assert list(result.intents) == ["Plan", "After"]  # the refused intent left no trace
    assert Worker.calls == ["After"]
    assert_replay_matches(result)
    return error


@pytest.mark.parametrize("path", ["at run", "at add_intent"])
@pytest.mark.parametrize(("bad", "error_type", "message"), [case[1:] for case in CASES],
                         ids=CASE_IDS)
async def test_a_bad_intent_is_refused_the_same_way_at_run_and_at_add_intent(
    path: str, bad: IntentSpec, error_type: type[Exception], message: str
) -> None:
    error = await refusal(bad, path)
    assert type(error) is error_type
    assert re.search(message, str(error)), str(error)


@pytest.mark.parametrize("bad", [case[1] for case in CASES if case[0] != "duplicate title"],
                         ids=[name for name in CASE_IDS if name != "duplicate title"])
async def test_add_intent_raises_exactly_what_rt_run_raises(bad: IntentSpec) -> None:
    at_run = await refusal(bad, "at run")
    at_add = await refusal(bad, "at add_intent")
    assert (type(at_add), str(at_add)) == (type(at_run), str(at_run))


@pytest.mark.parametrize("bad", [case[1] for case in CASES], ids=CASE_IDS)
async def test_execute_refuses_a_sub_portfolio_as_rt_run_refuses_it(bad: IntentSpec) -> None:
    at_run = await refusal(bad, "at run")
    Planner.to_add, Planner.refused = None, []
    Planner.to_execute = PortfolioSpec("p", [IntentSpec("Plan"), bad])
    try:
        async with Runtime(agents=[Worker, Helper, Idle], clock=VirtualClock()) as rt:
            result = await rt.run(PortfolioSpec("main", [IntentSpec("Main")]),
                                  coordinator=Planner)
    finally:
        Planner.to_execute = None
    (at_execute,) = Planner.refused
    assert (type(at_execute), str(at_execute)) == (type(at_run), str(at_run))
    assert result.status == "completed"
    assert Worker.calls == []


async def test_add_intent_refuses_what_is_not_an_intent_spec() -> None:
    Planner.refused = []
    Planner.to_add = {"title": "X"}  # type: ignore[assignment]
    async with Runtime(agents=[Worker], clock=VirtualClock()) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("Plan")]), coordinator=Planner)
    (error,) = Planner.refused
    assert type(error) is SpecError
    assert "add_intent() takes an IntentSpec, got dict" in str(error)
    assert list(result.intents) == ["Plan", "After"]


# ------------------------------------------------------------------ ids


def masked(result: RunResult) -> list[Any]:
    """The log with the run's token masked in its ids: what a seed must reproduce."""
    token = result.portfolio_id.removeprefix("pf_")
    return [(e.seq, e.type, e.time, e.intent_id and e.intent_id.replace(token, "*"),
             repr(e.data).replace(token, "*")) for e in result.events]


def _seeded_spec() -> PortfolioSpec:
    return PortfolioSpec("p", [
        IntentSpec("A", assign="flaky", retry={"max_attempts": 3, "initial_delay": 1.0}),
        IntentSpec("B", assign=["steady", "sure"], depends_on=["A"]),
    ])


@Agent("plan-keys")
class Keys:
    seen: list[str] = []

    @on_assignment
    async def work(self, intent):
        Keys.seen.append(intent.idempotency_key)
        return {}


async def _seeded_run(seed: int, keys: list[str]) -> RunResult:
    Keys.seen = keys
    flaky = SimulatedAgent("flaky", result={"ok": True}, fail_times=2, register=False)
    steady = SimulatedAgent("steady", result={"ok": True}, register=False)
    sure = SimulatedAgent("sure", result={"ok": True}, register=False)

    spec = PortfolioSpec("p", [*_seeded_spec().intents, IntentSpec("K", assign="plan-keys")])
    async with Runtime(agents=[flaky, steady, sure, Keys], clock=VirtualClock(), seed=seed) as rt:
        return await rt.run(spec)


async def test_two_runtimes_with_one_seed_repeat_the_run_under_ids_of_their_own() -> None:
    first_keys: list[str] = []
    second_keys: list[str] = []
    first = await _seeded_run(7, first_keys)
    second = await _seeded_run(7, second_keys)
    # A store must never see two runs under one id: portfolio, intent and decision ids differ.
    assert first.portfolio_id != second.portfolio_id
    first_ids = {item.id for item in first.intents.values()}
    assert first_ids.isdisjoint(item.id for item in second.intents.values())
    assert {d.id for d in first.decisions}.isdisjoint(d.id for d in second.decisions)
    assert first.decisions  # responses_agreed on B: there are decision ids to compare
    assert first_keys != second_keys  # an external system must not dedupe a new run's work
    # What the seed promises: the same events in the same order, times, titles, data and
    # retry jitter included.
    assert masked(first) == masked(second)
    delays = [e.data["delay"] for e in first.events.of_type("retry_scheduled")]
    assert delays == [e.data["delay"] for e in second.events.of_type("retry_scheduled")]
    assert len(delays) == 2


async def test_another_seed_draws_other_jitter() -> None:
    first = await _seeded_run(7, [])
    other = await _seeded_run(8, [])
    delays = [[e.data["delay"] for e in result.events.of_type("retry_scheduled")]
              for result in (first, other)]
    assert delays[0] != delays[1]


async def test_ids_of_one_run_are_unique_and_added_intents_follow_the_scheme() -> None:
    added: list[str] = []

    @Coordinator("grower")
    class Grower:
        @on_assignment
        async def plan(self, intent):
            added.append(await self.add_intent(IntentSpec("Added", assign="w")))
            return {}

    worker = SimulatedAgent("w", result={}, register=False)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        runs = [await rt.run(PortfolioSpec("p", [IntentSpec("Plan"), IntentSpec("W", assign="w")]),
                             coordinator=Grower) for _ in range(2)]
    ids = [item.id for result in runs for item in result.intents.values()]
    assert len(ids) == len(set(ids)) == 6
    for result in runs:
        assert result.intents["Added"].id in added
        assert all(item.id.startswith("in_") and result.portfolio_id[3:] in item.id
                   for item in result.intents.values())


# ------------------------------------------------------------------ execute's coordinator


@Agent("sub-worker")
class SubWorker:
    @on_assignment
    async def work(self, intent):
        return {"done": intent.title}


@Coordinator("sub-planner", agents=["sub-worker"])
class SubPlanner:
    """Given ``Main``, runs a sub-portfolio of unassigned intents, which it routes itself."""

    routed: list[str] = []
    subs: list[RunResult] = []

    @on_assignment
    async def plan(self, intent):
        if intent.title != "Main":
            SubPlanner.routed.append(intent.title)
            return await self.delegate(intent, to="sub-worker")
        sub = await self.execute(PortfolioSpec("sub", [IntentSpec("S1"), IntentSpec("S2")]))
        SubPlanner.subs.append(sub)
        return {"sub": str(sub.status)}


@Coordinator("sub-lead")
class SubLead:
    routed: list[str] = []

    @on_assignment
    async def route(self, intent):
        SubLead.routed.append(intent.title)
        return {"by": "lead"}


@pytest.mark.parametrize("lead", [None, SubLead], ids=["no lead", "another lead"])
async def test_execute_runs_the_sub_portfolio_under_the_coordinator_that_calls_it(lead):
    SubPlanner.routed, SubPlanner.subs, SubLead.routed = [], [], []
    async with Runtime(agents=[SubWorker, SubPlanner], clock=VirtualClock()) as rt:
        result = await rt.run(PortfolioSpec("main", [IntentSpec("Main", assign="sub-planner")]),
                              coordinator=lead)
    assert result.status == "completed", result.error
    (sub,) = SubPlanner.subs
    assert sub.status == "completed"
    assert sub.events.of_type("run_started")[0].data["coordinator"] == "sub-planner"
    assert SubPlanner.routed == ["S1", "S2"]  # routed by the caller, not by the run's lead
    assert SubLead.routed == []
    assert dict(sub.intents["S1"].state) == {"done": "S1"}


async def test_execute_from_an_agent_is_refused() -> None:
    errors: list[Exception] = []

    @Agent("pretender")
    class Pretender(CoordinatorMethods):
        @on_assignment
        async def work(self, intent):
            try:
                await self.execute(PortfolioSpec("sub", [IntentSpec("S", assign="sub-worker")]))
            except OpenIntentError as exc:
                errors.append(exc)
            return {}

    async with Runtime(agents=[Pretender, SubWorker], clock=VirtualClock()) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="pretender")]))
    assert result.status == "completed"
    (error,) = errors
    assert type(error) is AgentError
    assert "'pretender' is an @Agent; only a @Coordinator runs a sub-portfolio" in str(error)
