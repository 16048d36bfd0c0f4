"""The authoring API: decorators, registration, specs and their validation."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import AgentError, OpenIntentError, RetryPolicy, SpecError, StateConflictError
from openintent._registry import HookKind, definition_of
from openintent.agents import (
    Agent,
    AgentMethods,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
    on_complete,
    on_event,
    on_quorum,
    on_retry,
    on_state_change,
)

from _helpers import Echo, portfolio, run


def test_agent_registers_in_the_default_registry(openintent_registry):
    @Agent("writer")
    class Writer:
        @on_assignment
        async def write(self, intent):
            return {}

    assert openintent_registry.get("writer").cls is Writer
    assert definition_of(Writer()).id == "writer"


def test_handlers_are_collected_in_definition_order():
    @Agent("busy")
    class Busy:
        @on_complete
        async def second(self, intent): ...

        @on_assignment
        async def first(self, intent): ...

        @on_assignment
        def third(self, intent): ...

        @on_state_change(keys=["data"])
        async def changed(self, intent, old, new): ...

        @on_event("failed")
        async def alert(self, event): ...

        @on_retry
        async def retrying(self, intent, attempt, error): ...

    definition = definition_of(Busy)
    assert [hook.method for hook in definition.hooks] == [
        "second", "first", "third", "changed", "alert", "retrying"
    ]
    assert [hook.method for hook in definition.hooks_of(HookKind.ASSIGNMENT)] == ["first", "third"]
    state_hook = definition.hooks_of(HookKind.STATE_CHANGE)[0]
    assert state_hook.options["keys"] == frozenset({"data"})
    assert definition.hooks_of(HookKind.EVENT)[0].options["type"] == "failed"


def test_bare_on_state_change_watches_every_key():
    @Agent("watcher")
    class Watcher:
        @on_state_change
        async def changed(self, intent, old, new): ...

    (hook,) = definition_of(Watcher).hooks_of(HookKind.STATE_CHANGE)
    assert hook.options["keys"] is None


def test_subclass_inherits_handlers_of_its_base():
    class Base:
        @on_assignment
        async def work(self, intent):
            return {"base": True}

    @Agent("child")
    class Child(Base):
        @on_complete
        async def done(self, intent): ...

    assert [hook.method for hook in definition_of(Child).hooks] == ["work", "done"]


def test_decorated_class_gets_agent_methods_and_may_override_them_by_subclassing():
    @Agent("own")
    class Own(AgentMethods):
        async def record_cost(self, intent, usd, **details):
            return "mine"

    assert callable(Own.patch_state)
    assert callable(Own.escalate)
    assert Own.record_cost.__qualname__.endswith("Own.record_cost")


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_agent_needs_a_non_empty_string_id(bad):
    with pytest.raises(AgentError, match="non-empty string id"):
        Agent(bad)


def test_on_event_needs_a_type():
    with pytest.raises(AgentError, match='@on_event\\("completed"\\)'):

        @on_event  # type: ignore[arg-type]
        async def handler(self, event): ...


def test_coordinator_rejects_an_unknown_strategy_listing_the_valid_ones():
    with pytest.raises(AgentError, match="sequential, parallel"):
        Coordinator("lead", strategy="round-robin")


def test_coordinator_rejects_a_bad_max_concurrency():
    with pytest.raises(AgentError, match="max_concurrency"):
        Coordinator("lead", max_concurrency=0)


def test_coordinator_records_its_options():
    @Coordinator("lead", agents=["a", "b"], strategy="sequential", max_concurrency=2)
    class Lead:
        @on_all_complete
        async def done(self, portfolio): ...

    definition = definition_of(Lead)
    assert definition.kind == "coordinator"
    assert definition.options["agents"] == ("a", "b")
    assert definition.options["strategy"] == "sequential"


def test_intent_spec_normalises_its_fields():
    spec = IntentSpec(
        "Review", assign=["a", "b"], depends_on=["Write"], tags="urgent",
        retry={"max_attempts": 2}, initial_state={"x": 1},
    )
    assert spec.assign == ("a", "b")
    assert spec.assignees == ("a", "b")
    assert spec.depends_on == ("Write",)
    assert spec.tags == ("urgent",)
    assert spec.retry == RetryPolicy(max_attempts=2)
    assert IntentSpec("Solo", assign="a").assignees == ("a",)
    assert IntentSpec("Routed").assignees == ()


def test_intent_spec_copies_initial_state():
    state = {"x": 1}
    spec = IntentSpec("A", initial_state=state)
    state["x"] = 2
    assert spec.initial_state == {"x": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"title": ""}, "title must be a non-empty string"),
        ({"title": "A", "depends_on": "B"}, r"write depends_on=\['B'\]"),
        ({"title": "A", "depends_on": [1]}, "depends_on must be a list of intent titles"),
        ({"title": "A", "assign": 5}, "assign must be an agent id"),
        ({"title": "A", "assign": []}, "assign must be an agent id"),
        ({"title": "A", "timeout": 0}, "timeout must be a positive number"),
        ({"title": "A", "timeout": True}, "timeout must be a positive number"),
        ({"title": "A", "initial_state": [1]}, "initial_state must be a dict"),
        ({"title": "A", "retry": {"tries": 3}}, "unknown RetryPolicy field"),
        ({"title": "A", "retry": {"max_attempts": 0}}, "max_attempts must be an int >= 1"),
        ({"title": "A", "retry": "3"}, "retry must be a RetryPolicy"),
        ({"title": "A", "tags": [1]}, "tags must be a list of strings"),
    ],
)
def test_intent_spec_rejects_bad_fields_with_a_clear_message(kwargs, message):
    with pytest.raises(SpecError, match=message):
        IntentSpec(**kwargs)


def test_portfolio_spec_rejects_what_is_not_an_intent_spec():
    with pytest.raises(SpecError, match=r"intents\[1\] is a dict, not an IntentSpec"):
        PortfolioSpec("p", [IntentSpec("A"), {"title": "B"}])
    with pytest.raises(SpecError, match="name must be a non-empty string"):
        PortfolioSpec("", [])
    with pytest.raises(SpecError, match="must be a list of IntentSpec"):
        PortfolioSpec("p", "A")


def test_retry_policy_delays_grow_exponentially_up_to_the_cap():
    import random

    policy = RetryPolicy(max_attempts=5, initial_delay=1.0, multiplier=3.0, max_delay=5.0)
    rng = random.Random(0)
    assert [policy.delay(n, rng, jitter=False) for n in range(4)] == [1.0, 3.0, 5.0, 5.0]
    jittered = [policy.delay(2, rng) for _ in range(50)]
    assert all(2.5 <= delay <= 5.0 for delay in jittered)
    assert len(set(jittered)) > 1


def test_retry_policy_gives_each_fallback_agent_its_attempts():
    policy = RetryPolicy(max_attempts=2, fallback=["b", "c"])
    assert [policy.agent_for(n, "a") for n in range(1, 8)] == ["a", "a", "b", "b", "c", "c", None]


def test_on_quorum_takes_the_threshold_positionally() -> None:
    class Voting:
        @on_quorum(2)
        async def reached(self, intent: Any, responses: Any) -> dict[str, Any]:
            return {}

    assert callable(Voting.reached)


def test_a_typed_base_class_for_agents_is_public() -> None:
    import openintent.agents as agents

    assert {"AgentMethods", "CoordinatorMethods"} <= set(agents.__all__)


@pytest.mark.asyncio
async def test_patch_state_versions_and_detects_stale_writes():
    outcomes = {}

    @Agent("patcher")
    class Patcher:
        @on_assignment
        async def work(self, intent):
            v1 = await self.patch_state(intent, {"step": 1})
            v2 = await self.patch_state(intent, {"step": 2}, expected_version=v1)
            assert intent.state == {"step": 2} and intent.version == v2 == 2
            with pytest.raises(StateConflictError) as caught:
                await self.patch_state(intent, {"step": 3}, expected_version=v1)
            outcomes["conflict"] = (caught.value.expected, caught.value.actual)
            return {"done": True}

    result = await run(portfolio(IntentSpec("A", assign="patcher")), Patcher)
    assert outcomes["conflict"] == (1, 2)
    assert result.intents["A"].state == {"step": 2, "done": True}
    assert result.intents["A"].version == 3
    patches = [event.data["patch"] for event in result.events.of_type("state_patched")]
    assert patches == [{"step": 1}, {"step": 2}]


@pytest.mark.asyncio
async def test_patch_state_outside_a_run_is_a_clear_error():
    with pytest.raises(OpenIntentError, match="outside a run"):
        await Echo().patch_state(None, {})  # type: ignore[arg-type]
