"""The plan as data in the log: intent specs, run settings and guardrails round-trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openintent import Runtime, VirtualClock
from openintent._plan_data import (
    intent_data,
    intent_from_data,
    logged_plan,
    spec_diff,
)
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.guardrails import (
    ApprovalGuardrail,
    BudgetGuardrail,
    Guardrail,
    MaxConcurrencyGuardrail,
    RateLimitGuardrail,
    RequireOutputGuardrail,
    TimeoutGuardrail,
    build_guardrails,
)
from openintent.models import RetryPolicy
from openintent.testing import SimulatedAgent
from openintent.workflow import WorkflowSpec

from _helpers import portfolio

SEED = Path(__file__).resolve().parent.parent / "examples" / "reviewed_content.yaml"

names = st.text("abcxyz", min_size=1, max_size=4)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), names,
                        st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)
positive = st.floats(0.01, 1000, allow_nan=False)


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy | None:
    if draw(st.booleans()):
        return None
    exceptions = st.sampled_from([TimeoutError, ValueError, "KeyError", "httpx.ReadTimeout",
                                  RuntimeError])
    retry_on = draw(st.lists(exceptions, max_size=2, unique=True))
    never = [item for item in draw(st.lists(exceptions, max_size=2, unique=True))
             if item not in retry_on]
    return RetryPolicy(
        max_attempts=draw(st.integers(1, 5)),
        initial_delay=draw(st.sampled_from([0.0, 0.5, 1.0, 3])),
        multiplier=draw(st.sampled_from([1.0, 2.0, 1.5])),
        max_delay=draw(st.sampled_from([60.0, 10.0])),
        jitter=draw(st.booleans()),
        fallback=draw(st.lists(names, max_size=2)),
        retry_on=tuple(retry_on),
        never_retry_on=tuple(never),
    )


@st.composite
def intent_specs(draw: st.DrawFn) -> IntentSpec:
    depends_on = draw(st.lists(st.sampled_from(["A", "B", "C"]), max_size=3, unique=True))
    inputs = {f"in_{title}": (title, draw(names)) for title in depends_on
              if draw(st.booleans())}
    assign = draw(st.one_of(st.none(), names, st.lists(names, min_size=1, max_size=3)))
    return IntentSpec(
        title=draw(names.map(lambda name: f"T{name}")),
        description=draw(st.sampled_from(["", "loads the data"])),
        assign=assign,
        depends_on=depends_on,
        constraints=draw(st.one_of(st.just({}), st.dictionaries(names, json_values,
                                                                 max_size=3),
                                   st.lists(json_values, max_size=2), st.just(0))),
        initial_state=draw(st.dictionaries(names, json_values, max_size=3)),
        timeout=draw(st.one_of(st.none(), positive)),
        retry=draw(retry_policies()),
        tags=draw(st.lists(names, max_size=3)),
        key=draw(st.one_of(st.none(), names)),
        inputs=inputs,
    )


def through_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(intent_specs())
def test_an_intent_spec_round_trips_through_its_data_exactly(spec: IntentSpec) -> None:
    data = intent_data(spec)
    # What a journal keeps is JSON: the packed fields as a JSON list.
    packed = through_json([spec.title, list(spec.depends_on), spec.assign,
                           dict(spec.initial_state) or None, data])
    assert intent_from_data(*packed) == spec
    assert spec_diff(portfolio(spec), portfolio(intent_from_data(*packed))) == []


def test_an_all_default_intent_has_no_spec_data() -> None:
    assert intent_data(IntentSpec("A", assign="w", depends_on=["B"],
                                  initial_state={"x": 1})) is None
    assert intent_data(IntentSpec("A", retry=RetryPolicy())) == {"retry": {}}
    assert intent_data(IntentSpec("A", timeout=30, tags=["etl"])) == {
        "timeout": 30, "tags": ["etl"]}


def test_an_exception_class_filter_is_kept_as_its_qualified_name() -> None:
    spec = IntentSpec("A", retry=RetryPolicy(retry_on=(TimeoutError, "Other")))
    data = intent_data(spec)
    assert data == {"retry": {"retry_on": [{"class": "builtins.TimeoutError"}, "Other"]}}
    assert intent_from_data("A", [], None, None, through_json(data)) == spec


# ------------------------------------------------------------------------------ guardrails


@pytest.mark.parametrize("guardrail", [
    BudgetGuardrail(max_cost_usd=5.0),
    BudgetGuardrail(max_cost_usd=2, warn_at=0.5),
    TimeoutGuardrail(max_seconds=300),
    ApprovalGuardrail(require_for=["deploy"]),
    ApprovalGuardrail(require_for=["Deploy", "ship"], approvers=["alice"], timeout_seconds=60,
                      on_timeout="approve"),
    RateLimitGuardrail(per_second=2),
    RateLimitGuardrail(per_second=0.5, per_agent=True),
    MaxConcurrencyGuardrail(limit=3),
    RequireOutputGuardrail(keys=["summary"]),
    RequireOutputGuardrail(keys=["a", "b"], **{"for": ["Write"]}),
], ids=repr)
def test_a_built_in_guardrail_round_trips_through_its_data(guardrail: Guardrail) -> None:
    data = through_json(guardrail.to_data())
    assert data["type"] == guardrail.type
    [rebuilt] = build_guardrails([data], "test")
    assert type(rebuilt) is type(guardrail)
    assert rebuilt.to_data() == data
    assert vars(rebuilt).keys() == vars(guardrail).keys()
    for name, value in vars(guardrail).items():
        if not name.startswith("_") and name != "requests":
            assert getattr(rebuilt, name) == value, name


def test_a_guardrail_that_cannot_say_its_settings_names_itself() -> None:
    class NoFridays(Guardrail):
        type = "no_fridays"

    async def middleware(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    custom, function = build_guardrails([NoFridays(), middleware], "test")
    assert custom.to_data() == {
        "type": "no_fridays",
        "name": "test_a_guardrail_that_cannot_say_its_settings_names_itself.<locals>.NoFridays"}
    assert function.to_data() == {
        "type": "function",
        "name": "test_a_guardrail_that_cannot_say_its_settings_names_itself.<locals>.middleware"}


# ------------------------------------------------------------------------------ in the log


@pytest.mark.asyncio
async def test_the_plan_read_back_from_a_log_is_the_spec_that_ran_with_added_intents() -> None:
    worker = SimulatedAgent("w", register=False)

    @Coordinator("grower", guardrails=[{"type": "budget", "max_cost_usd": 9}],
                 max_concurrency=2)
    class Grower:
        @on_assignment
        async def plan(self, intent: Any) -> dict[str, Any]:
            await self.add_intent(IntentSpec("Audit", assign="w", depends_on=["Load"],
                                             timeout=5, tags=["late"]))
            return {}

    spec = PortfolioSpec("etl", [
        IntentSpec("Load", assign="w", timeout=30, retry={"max_attempts": 2},
                   constraints={"estimated_cost_usd": 1}, initial_state={"rows": 0}),
        IntentSpec("Plan", depends_on=["Load"], description="grows the plan", key="plan"),
        IntentSpec("Report", assign="w", depends_on=["Load"], inputs={"rows": "Load.rows"}),
    ], description="nightly", metadata={"team": "data"})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "timeout", "max_seconds": 600}]) as rt:
        result = await rt.run(spec, coordinator=Grower)
    assert result.status == "completed"
    logged = logged_plan(result.events._events)
    added = IntentSpec("Audit", assign="w", depends_on=["Load"], timeout=5, tags=["late"])
    assert logged.spec == PortfolioSpec("etl", [*spec.intents, added],
                                        description="nightly", metadata={"team": "data"})
    assert logged.planned == 3
    assert logged.coordinator == "grower"
    assert logged.guardrails == ({"type": "timeout", "max_seconds": 600.0},
                                 {"type": "budget", "max_cost_usd": 9.0})
    assert logged.max_concurrency == 2 and logged.sequential is False
    # The public event shows the spec data (an all-default one shows none: test_events).
    created = result.events.of_type("created")
    assert created[0].data["spec"]["timeout"] == 30
    assert created[2].data["spec"] == {"inputs": {"rows": ["Load", "rows"]}}
    assert created[3].data["spec"] == {"timeout": 5, "tags": ["late"]}
    started = result.events[0].data
    assert started["plan"]["description"] == "nightly"


# ------------------------------------------------------------------------------ differences


def test_spec_diff_says_what_changed_line_by_line() -> None:
    logged = PortfolioSpec("etl", [
        IntentSpec("Load", assign="w", timeout=30),
        IntentSpec("Clean", assign="w", depends_on=["Load"]),
    ])
    given_spec = PortfolioSpec("etl", [
        IntentSpec("Load", assign="v", timeout=60, retry={"max_attempts": 4}),
        IntentSpec("Audit", assign="w"),
    ], description="new")
    assert spec_diff(logged, given_spec) == [
        "description '' -> 'new'",
        "intent 'Load': assign 'w' -> 'v'",
        "intent 'Load': timeout 30 -> 60",
        "intent 'Load': retry (default) -> {'max_attempts': 4}",
        "intent 'Clean' removed",
        "intent 'Audit' added",
    ]
    assert spec_diff(logged, logged) == []


def test_spec_diff_notices_a_new_order() -> None:
    a, b = IntentSpec("A", assign="w"), IntentSpec("B", assign="w")
    assert spec_diff(portfolio(a, b), portfolio(b, a)) == [
        "intent order ['A', 'B'] -> ['B', 'A']"]


@pytest.mark.asyncio
async def test_a_yaml_workflow_run_logs_the_plan_of_its_workflow() -> None:
    workflow = WorkflowSpec.from_string(SEED.read_text(), "wf.yaml")
    agents = [SimulatedAgent(agent_id, register=False)
              for agent_id in ("writer", "reviewer-a", "reviewer-b", "editor")]
    async with Runtime(agents=agents, clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(workflow)
    logged = logged_plan(result.events._events)
    assert logged.spec == workflow.to_portfolio_spec()
    assert logged.spec.intents[0].constraints == ["Formal tone", "Under 1000 words"]
    assert (logged.coordinator, logged.sequential, logged.max_concurrency) == (
        "content-lead", True, 1)
    assert logged.guardrails == ({"type": "budget", "max_cost_usd": 10.0},
                                 {"type": "timeout", "max_seconds": 600.0})


def test_a_workflow_outputs_check_says_its_declared_outputs() -> None:
    from openintent._workflow_run import OutputsGuardrail

    check = OutputsGuardrail({"write": {"draft": "string"}})
    assert check.to_data() == {"type": "workflow_outputs",
                               "outputs": {"write": {"draft": "string"}}}
