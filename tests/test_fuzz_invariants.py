"""Fuzzing the runtime: random DAGs x random fault plans x random coordinators and guardrails.

Each example draws

* a portfolio (``portfolios(multi_assignee=True)``) with a retry policy and a per-attempt
  timeout, sometimes with a fallback agent on single-agent intents;
* a fault plan with every kind of fault (fail, hang, escalate, overspend), and a delay and a
  cost per simulated agent;
* a coordinator: with or without ``@on_quorum(threshold)``, ``@on_conflict`` (picks the
  smallest agent id and records the decision), ``@on_escalation`` (delegates to a spare agent
  outside the team), a strategy, a ``max_concurrency`` option, and guardrails (budget, timeout,
  rate_limit, max_concurrency, require_output, approval with a timeout) split between the
  runtime and the coordinator.

It runs the portfolio on a ``VirtualClock`` with ``seed=0`` (twice, for determinism) and
checks the invariants the README and docs/testing.md promise for *every* run (see
``check_invariants``). Minimal reproductions of what broke an invariant are plain tests at the
bottom of the file.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from openintent import Runtime, VirtualClock
from openintent.agents import (
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_conflict,
    on_escalation,
    on_guardrail_breach,
    on_quorum,
)
from openintent.models import RunResult
from openintent.testing import SimulatedAgent, assert_replay_matches, isolated_registry
from openintent.testing.strategies import FAULT_KINDS, FaultPlan, fault_plans, portfolios

from _helpers import masked

AGENTS = ("ag-a", "ag-b", "ag-c")
SPARE = "ag-spare"  # outside the coordinator's team: escalations and fallbacks go to it
GUARD_SECONDS = 1_000_000.0  # a virtual-time guard far beyond any run

TERMINAL = {"completed", "failed", "cancelled", "skipped"}
HALTED_STATUSES = {"pending", "cancelled", "completed", "failed", "skipped"}
RUNTIME_DECISIONS = {
    "quorum_reached", "responses_agreed", "failover", "guardrail_breach",
    "approval_granted", "approval_denied",
}
ENDS_AN_ATTEMPT = {"completed", "failed", "cancelled", "skipped", "attempt_failed"}


# ------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Variant:
    """What the coordinator of a run looks like."""

    quorum: int | float | None = None
    conflict: bool = False
    escalation: bool = False
    strategy: str = "parallel"
    max_concurrency: int | None = None
    guardrails: tuple[dict[str, Any], ...] = ()  # the coordinator's
    runtime_guardrails: tuple[dict[str, Any], ...] = ()  # Runtime(guardrails=...)

    @property
    def all_guardrails(self) -> tuple[dict[str, Any], ...]:
        return self.runtime_guardrails + self.guardrails

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [g for g in self.all_guardrails if g["type"] == kind]


@dataclass(frozen=True)
class Scenario:
    spec: PortfolioSpec
    plan: FaultPlan
    delays: tuple[float, ...]  # per agent of AGENTS
    costs: tuple[float, ...]  # per agent of AGENTS
    overspend: float
    same_answer: bool  # every agent answers the same (agreement) or its own id (conflict)
    spare_delay: float
    spare_cost: float
    variant: Variant = field(default_factory=Variant)

    @property
    def max_call_cost(self) -> float:
        """The largest single ``cost_recorded`` any agent call can report."""
        return max((*self.costs, self.overspend, self.spare_cost))


RETRIES = (
    {"max_attempts": 1},
    {"max_attempts": 2, "initial_delay": 1.0, "jitter": False},
    {"max_attempts": 3, "initial_delay": 0.5, "multiplier": 2.0, "jitter": True},
)


def guardrail_dicts() -> st.SearchStrategy[dict[str, Any]]:
    budget = st.builds(
        lambda limit, warn: {"type": "budget", "max_cost_usd": limit,
                             **({"warn_at": warn} if warn else {})},
        st.sampled_from([0.5, 1.0, 2.0, 4.0, 20.0]), st.sampled_from([None, 0.5, 1.0]))
    timeout = st.builds(lambda s: {"type": "timeout", "max_seconds": s},
                        st.sampled_from([2.0, 5.0, 12.0, 40.0]))
    rate = st.builds(lambda r, per: {"type": "rate_limit", "per_second": r, "per_agent": per},
                     st.sampled_from([0.5, 1.0, 4.0]), st.booleans())
    concurrency = st.builds(lambda n: {"type": "max_concurrency", "limit": n}, st.integers(1, 3))
    output = st.builds(
        lambda keys, only: {"type": "require_output", "keys": keys,
                            **({"for": only} if only else {})},
        st.sampled_from([["by"], ["missing"]]), st.sampled_from([None, ["I1"], ["I0", "I2"]]))
    approval = st.builds(
        lambda s, outcome: {"type": "approval", "require_for": ["I0"], "timeout_seconds": s,
                            "on_timeout": outcome},
        st.sampled_from([1.0, 3.0]), st.sampled_from(["approve", "deny"]))
    return st.one_of(budget, timeout, rate, concurrency, output, approval)


@st.composite
def variants(draw: st.DrawFn) -> Variant:
    drawn = draw(st.lists(guardrail_dicts(), max_size=4, unique_by=lambda g: g["type"]))
    on_runtime = [draw(st.booleans()) for _ in drawn]
    return Variant(
        quorum=draw(st.sampled_from([None, None, 1, 2, 0.5, 1.0])),
        conflict=draw(st.booleans()),
        escalation=draw(st.booleans()),
        strategy=draw(st.sampled_from(["parallel", "parallel", "sequential"])),
        max_concurrency=draw(st.sampled_from([None, None, 1, 2])),
        guardrails=tuple(g for g, rt in zip(drawn, on_runtime, strict=True) if not rt),
        runtime_guardrails=tuple(g for g, rt in zip(drawn, on_runtime, strict=True) if rt),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    retry = draw(st.sampled_from(RETRIES))
    timeout = draw(st.sampled_from([3.0, 10.0]))
    spec = draw(portfolios(agents=list(AGENTS), max_intents=8, multi_assignee=True,
                           retry=retry, timeout=timeout))
    if draw(st.booleans()):
        # A fallback for single-agent intents (multi-agent ones may not have one).
        spec = PortfolioSpec(spec.name, [
            attrs.evolve(item, retry={**retry, "fallback": [SPARE]})
            if len(item.assignees) == 1 else item
            for item in spec.intents
        ])
    delay = st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0])
    cost = st.sampled_from([0.0, 0.25, 0.5, 1.0])
    return Scenario(
        spec=spec,
        plan=draw(fault_plans(list(AGENTS), max_calls=3, kinds=FAULT_KINDS, max_faults=5)),
        delays=tuple(draw(delay) for _ in AGENTS),
        costs=tuple(draw(cost) for _ in AGENTS),
        overspend=draw(st.sampled_from([1.5, 100.0])),
        same_answer=draw(st.booleans()),
        spare_delay=draw(delay),
        spare_cost=draw(cost),
        variant=draw(variants()),
    )


# ------------------------------------------------------------------------------ running one


def build_coordinator(variant: Variant) -> Any:
    """A fresh coordinator instance for ``variant`` (registered in the current registry)."""
    namespace: dict[str, Any] = {}

    def init(self: Any) -> None:
        self.breaches = []

    namespace["__init__"] = init

    if variant.quorum is not None:
        async def quorum(self: Any, intent: Any, responses: Any) -> dict[str, Any]:
            voters = [response.agent_id for response in responses]
            return {"by": min(voters), "voters": voters}

        namespace["quorum"] = on_quorum(threshold=variant.quorum)(quorum)

    if variant.conflict:
        async def conflict(self: Any, intent: Any, versions: Any) -> Any:
            winner = min(versions, key=lambda v: (v.agent_id, v.version))
            await self.record_decision(
                intent_id=intent.id, decision="conflict_resolved",
                rationale="smallest agent id", agent=winner.agent_id,
            )
            return winner

        namespace["conflict"] = on_conflict(conflict)

    if variant.escalation:
        async def escalation(self: Any, intent: Any, reason: str) -> None:
            await self.delegate(intent, to=SPARE)

        namespace["escalation"] = on_escalation(escalation)

    async def breached(self: Any, intent: Any, breach: Any) -> None:
        self.breaches.append(breach.guardrail)

    namespace["breached"] = on_guardrail_breach(breached)
    cls = type("Lead", (), namespace)
    decorated = Coordinator(
        "lead", agents=list(AGENTS), strategy=variant.strategy,
        guardrails=list(variant.guardrails), max_concurrency=variant.max_concurrency,
    )(cls)
    return decorated()


def build_agents(scenario: Scenario) -> list[SimulatedAgent]:
    agents: list[SimulatedAgent] = []
    for agent_id, delay, cost in zip(AGENTS, scenario.delays, scenario.costs, strict=True):
        answer = {"by": "everyone"} if scenario.same_answer else {"by": agent_id}
        agents += scenario.plan.agents([agent_id], result=answer, delay=delay, cost_usd=cost,
                                       overspend_usd=scenario.overspend)
    agents.append(SimulatedAgent(SPARE, result={"by": SPARE}, delay=scenario.spare_delay,
                                 cost_usd=scenario.spare_cost))
    return agents


@dataclass
class Outcome:
    result: RunResult
    coordinator: Any
    agents: list[SimulatedAgent]
    clock: VirtualClock


def execute(scenario: Scenario) -> Outcome:
    async def main() -> Outcome | None:
        with isolated_registry():
            agents = build_agents(scenario)
            lead = build_coordinator(scenario.variant)
            clock = VirtualClock()
            with clock.timeout(GUARD_SECONDS):
                async with Runtime(agents=agents, clock=clock, seed=0,
                                   guardrails=list(scenario.variant.runtime_guardrails)) as rt:
                    result = await rt.run(scenario.spec, coordinator=lead)
                    return Outcome(result, lead, agents, clock)
            return None

    outcome = anyio.run(main)
    assert outcome is not None, f"the run was still going after {GUARD_SECONDS} virtual seconds"
    return outcome


def comparable(result: RunResult) -> list[Any]:
    return masked([(e.seq, e.type, e.time, e.intent_id, e.data) for e in result.events])




# ------------------------------------------------------------------------------ invariants


def check_invariants(scenario: Scenario, outcome: Outcome) -> None:
    result = outcome.result
    variant = scenario.variant
    events = list(result.events)
    types = [e.type for e in events]

    # 1. The run ended, in a documented status, and the log is well formed.
    assert result.status in ("completed", "failed", "halted"), (result.status, result.error)
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("run_started") == 1 and types.count("run_finished") == 1
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].data["status"] == result.status
    assert all(a.time <= b.time for a, b in zip(events, events[1:], strict=False))

    # 2. The log replays to the live records (an independent derivation), and is possible.
    assert_replay_matches(result)

    # 3. Every intent is terminal unless the run halted; nothing completes after a breach.
    statuses = {title: str(item.status) for title, item in result.intents.items()}
    breaches = [e for e in events if e.type == "guardrail_breach"]
    if result.status == "halted":
        assert len(breaches) == 1 and result.breach is not None
        assert set(statuses.values()) <= HALTED_STATUSES, statuses
        breach_seq = breaches[0].seq
        after = [e.type for e in events[breach_seq:]]
        assert "completed" not in after, after
        # Nothing new is dispatched.
        late_dispatches = [e for e in events[breach_seq:] if e.type == "dispatched"]
        assert late_dispatches == [], after
        assert "ready" not in after, after
        assert outcome.coordinator.breaches == [result.breach.guardrail]
        # Every intent here has a timeout and every approval one too: never a deadlock.
        assert result.breach.guardrail != "virtual_clock", result.breach
        # What never started stays pending; what had started was cancelled (or had finished).
        for item in result.intents.values():
            history = {e.type for e in result.events.for_intent(item.id)}
            if item.status == "pending":
                # (An approved intent still waiting for a slot stays pending: see
                # test_an_approved_intent_queued_behind_the_cap_is_reported_as_never_started.)
                assert not history & {"dispatched", "attempt_failed"}, item
                assert item.attempts == 0, item
            if item.status == "cancelled":
                assert history & {"dispatched", "approval_requested", "attempt_failed"}, item
    else:
        assert breaches == [] and result.breach is None
        assert set(statuses.values()) <= TERMINAL, statuses
        assert outcome.coordinator.breaches == []
        assert (result.status == "completed") == all(s == "completed" for s in statuses.values())

    check_costs(scenario, result)
    check_concurrency(variant, result)
    check_rate_limit(variant, result)
    check_run_timeout(variant, result)
    check_output(variant, result)
    check_decisions(result)


def check_costs(scenario: Scenario, result: RunResult) -> None:
    events = list(result.events)
    costs = [e for e in events if e.type == "cost_recorded"]
    assert result.cost_usd == sum(e.data["usd"] for e in costs)
    assert math.isclose(sum(item.cost_usd for item in result.intents.values()), result.cost_usd,
                        abs_tol=1e-9)
    budgets = scenario.variant.of_type("budget")
    if not budgets:
        return
    (budget,) = budgets
    limit = budget["max_cost_usd"]
    spent = 0.0
    crossing = None
    for event in costs:
        before = spent
        spent += event.data["usd"]
        if spent > limit and crossing is None:
            crossing = event
            assert before <= limit
    if crossing is not None:
        # Spend past the limit halts the run (the budget's breach, unless another came first).
        assert result.status == "halted", "spend went past the budget and the run went on"
        (breach,) = result.events.of_type("guardrail_breach")
        assert breach.seq > crossing.seq or result.breach.guardrail != "budget"
        if result.breach.guardrail == "budget":
            # ... at once: the breach is the next thing after the crossing (and its warning).
            between = [e.type for e in events[crossing.seq + 1:breach.seq]]
            assert set(between) <= {"budget_warning"}, between
            assert result.breach.limit == limit
        # Nothing is spent once the run halted, so the overshoot is one agent call's cost.
        late = [e for e in costs if e.seq > breach.seq]
        assert late == [], [(e.seq, e.intent_id, e.data) for e in late]
        assert result.cost_usd <= limit + scenario.max_call_cost + 1e-9
    else:
        assert result.cost_usd <= limit + 1e-9
        assert result.breach is None or result.breach.guardrail != "budget"
    warnings = result.events.of_type("budget_warning")
    warn_at = budget.get("warn_at")
    if warn_at is None:
        assert warnings == []
    else:
        reached = result.cost_usd >= warn_at * limit
        assert len(warnings) == (1 if reached else 0), (result.cost_usd, warn_at * limit)
        if warnings:  # warned once, when the spend first reached the mark
            assert warnings[0].data["spent_usd"] >= warn_at * limit


def concurrency_cap(variant: Variant) -> int | None:
    caps = [g["limit"] for g in variant.of_type("max_concurrency")]
    if variant.max_concurrency is not None and variant.strategy != "sequential":
        caps.append(variant.max_concurrency)
    if variant.strategy == "sequential":
        caps.append(1)
    return min(caps) if caps else None


def in_flight_peak(result: RunResult) -> int:
    running: set[str] = set()
    peak = 0
    for event in result.events:
        if event.type == "dispatched":
            running.add(event.intent_id)
            peak = max(peak, len(running))
        elif event.type in ENDS_AN_ATTEMPT:
            running.discard(event.intent_id)
    return peak


def check_concurrency(variant: Variant, result: RunResult) -> None:
    cap = concurrency_cap(variant)
    if cap is not None:
        assert in_flight_peak(result) <= cap


def check_rate_limit(variant: Variant, result: RunResult) -> None:
    for guard in variant.of_type("rate_limit"):
        gap = 1.0 / guard["per_second"]
        by_key: dict[str, list[float]] = {}
        for event in result.events.of_type("dispatched"):
            _attempt, label = event.data if isinstance(event.data, tuple) else (
                event.data["attempt"], event.data["agent"])
            key = label if guard["per_agent"] else ""
            by_key.setdefault(key, []).append(event.time)
        for times in by_key.values():
            for index, time in enumerate(sorted(times)):
                assert time >= index * gap - 1e-9, (index, time, gap, sorted(times))


def check_run_timeout(variant: Variant, result: RunResult) -> None:
    for guard in variant.of_type("timeout"):
        assert result.events[-1].time <= guard["max_seconds"]
        if result.breach is not None and result.breach.guardrail == "timeout":
            (breach,) = result.events.of_type("guardrail_breach")
            assert breach.time == guard["max_seconds"]


def check_output(variant: Variant, result: RunResult) -> None:
    for guard in variant.of_type("require_output"):
        only = guard.get("for")
        for title, item in result.intents.items():
            if item.status == "completed" and (only is None or title in only):
                assert set(guard["keys"]) <= set(item.state), (title, item.state)


def check_decisions(result: RunResult) -> None:
    recorded = result.events.of_type("decision_recorded")
    assert len(recorded) == len(result.decisions)
    for decision, event in zip(result.decisions, recorded, strict=True):
        assert decision.id == event.data["id"]
        assert decision.intent_id == event.intent_id
        assert decision.time == event.time
        assert decision.coordinator_id == event.data["coordinator_id"]
        assert decision.decision == event.data["decision"]
        assert dict(decision.data) == dict(event.data["data"])
        assert decision.portfolio_id == result.portfolio_id
        if decision.coordinator_id == "runtime":
            assert decision.decision in RUNTIME_DECISIONS, decision
        else:
            assert (decision.coordinator_id, decision.decision) == ("lead", "conflict_resolved")
    breach_decisions = [d for d in result.decisions if d.decision == "guardrail_breach"]
    assert len(breach_decisions) == len(result.events.of_type("guardrail_breach"))
    counts = Counter(event.data["id"] for event in recorded)
    assert all(n == 1 for n in counts.values())


# ------------------------------------------------------------------------------ the property


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_random_runs_keep_every_documented_invariant(scenario: Scenario) -> None:
    first = execute(scenario)
    check_invariants(scenario, first)
    # Same spec, plan and seed: the identical event log, times included; ids differ
    # only by each run's token.
    second = execute(scenario)
    assert comparable(second.result) == comparable(first.result)
    assert second.result.cost_usd == first.result.cost_usd
    assert second.result.status == first.result.status


# ------------------------------------------------------------------------------ found bugs


def run_once(spec: PortfolioSpec, agents: list[SimulatedAgent], guardrails: list[Any]) -> RunResult:
    async def main() -> RunResult:
        with isolated_registry():
            lead = Coordinator("lead", guardrails=guardrails)(type("Lead", (), {}))
            async with Runtime(agents=agents, clock=VirtualClock(), seed=0) as rt:
                return await rt.run(spec, coordinator=lead)

    return anyio.run(main)


def test_assignees_not_yet_started_at_a_halt_never_run() -> None:
    # "Both" is dispatched (two assignees start_soon'ed), then "Pricey" spends past the budget
    # before they get to run: they must not start their work after the guardrail_breach.
    spec = PortfolioSpec("p", [IntentSpec("Both", assign=["ag-a", "ag-b"]),
                               IntentSpec("Pricey", assign="ag-c")])
    agents = [SimulatedAgent("ag-a", result={"by": "x"}, cost_usd=0.5, register=False),
              SimulatedAgent("ag-b", result={"by": "x"}, cost_usd=0.5, register=False),
              SimulatedAgent("ag-c", result={"by": "c"}, cost_usd=1.0, register=False)]
    result = run_once(spec, agents, [{"type": "budget", "max_cost_usd": 0.5}])

    assert result.status == "halted"
    (breach,) = result.events.of_type("guardrail_breach")
    after = [e.type for e in result.events if e.seq > breach.seq]
    assert "cost_recorded" not in after and "response_received" not in after, after
    assert result.cost_usd <= 0.5 + 1.0  # the limit plus the one call that crossed it


def test_agents_woken_at_the_instant_of_a_halt_spend_nothing_after_it() -> None:
    spec = PortfolioSpec("p", [IntentSpec("A", assign="ag-a"), IntentSpec("B", assign="ag-b")])
    agents = [SimulatedAgent("ag-a", result={"by": "a"}, delay=1.0, cost_usd=1.0, register=False),
              SimulatedAgent("ag-b", result={"by": "b"}, delay=1.0, cost_usd=1.0, register=False)]
    result = run_once(spec, agents, [{"type": "budget", "max_cost_usd": 0.5}])

    assert result.status == "halted"
    (breach,) = result.events.of_type("guardrail_breach")
    late = [e.data for e in result.events.of_type("cost_recorded") if e.seq > breach.seq]
    assert late == [], late
    assert result.cost_usd == 1.0  # only the call that crossed the limit was paid for


def test_an_approved_intent_queued_behind_the_cap_stays_pending_after_a_halt() -> None:
    # Documented: after a halt, "pending" means never dispatched, approval or not.
    spec = PortfolioSpec("p", [IntentSpec("Busy", assign="ag-a"),
                               IntentSpec("Gated", assign="ag-a")])
    agents = [SimulatedAgent("ag-a", result={"by": "a"}, delay=5.0, register=False)]
    result = run_once(spec, agents, [
        {"type": "timeout", "max_seconds": 3},
        {"type": "max_concurrency", "limit": 1},
        {"type": "approval", "require_for": ["Gated"], "timeout_seconds": 1,
         "on_timeout": "approve"},
    ])

    assert result.status == "halted"
    assert [d.decision for d in result.decisions] == ["approval_granted", "guardrail_breach"]
    assert result.titles_by_status() == {"cancelled": ["Busy"], "pending": ["Gated"]}


def test_a_dispatch_waiting_for_a_concurrency_slot_does_not_go_out_after_a_halt() -> None:
    # B's rate-limit slot and A's spend past the budget fall on the same virtual instant.
    spec = PortfolioSpec("p", [IntentSpec("A", assign="ag-a"), IntentSpec("B", assign="ag-a")])
    agent = SimulatedAgent("ag-a", result={"by": "a"}, delay=1.0, cost_usd=1.0, register=False)

    async def main() -> RunResult:
        with isolated_registry():
            lead = Coordinator("lead", max_concurrency=2, guardrails=[
                {"type": "budget", "max_cost_usd": 0.5},
                {"type": "rate_limit", "per_second": 1},
            ])(type("Lead", (), {}))
            async with Runtime(agents=[agent], clock=VirtualClock(), seed=0) as rt:
                return await rt.run(spec, coordinator=lead)

    result = anyio.run(main)
    assert result.status == "halted"
    (breach,) = result.events.of_type("guardrail_breach")
    assert [e.seq for e in result.events.of_type("dispatched") if e.seq > breach.seq] == []
    assert agent.titles == ["A"]  # B's agent is never called
    assert result.titles_by_status() == {"cancelled": ["A"], "pending": ["B"]}
