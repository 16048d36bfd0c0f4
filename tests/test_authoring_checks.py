"""Mistakes caught when classes and runtimes are built, not during the run: guardrail
signatures, unknown event types (and declared custom ones), hook signatures, a second quorum
or conflict handler, method names the decorators use, duplicate agent ids, quorum spellings."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import pytest

import openintent
from openintent import (
    AgentError,
    GuardrailError,
    OpenIntentError,
    OpenIntentWarning,
    Runtime,
    register_event_type,
)
from openintent._registry import current_registry, definition_of, isolated_registry
from openintent.agents import (
    Agent,
    Coordinator,
    CoordinatorMethods,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_approval_denied,
    on_approval_granted,
    on_assignment,
    on_complete,
    on_conflict,
    on_escalation,
    on_event,
    on_guardrail_breach,
    on_handoff,
    on_quorum,
    on_retry,
    on_state_change,
)
from openintent.guardrails import Guardrail, register_guardrail
from openintent.testing import SimulatedAgent, VirtualClock

# ------------------------------------------------------------------ guardrail signatures


def test_a_guardrail_function_without_call_next_is_refused_by_runtime() -> None:
    async def only_ctx(ctx: Any) -> Any:
        return None

    with pytest.raises(GuardrailError, match=r"guardrails\[0\].*only_ctx.*\(ctx, call_next\)"):
        Runtime(guardrails=[only_ctx])


def test_a_guardrail_function_with_a_wrong_signature_is_refused_by_coordinator() -> None:
    async def three(ctx: Any, call_next: Any, extra: Any) -> Any:
        return await call_next(ctx)

    with pytest.raises(GuardrailError, match=r"@Coordinator\('lead'\) guardrails\[1\].*three"):
        Coordinator("lead", guardrails=[{"type": "budget", "max_cost_usd": 1}, three])


def test_a_guardrail_whose_call_is_overridden_badly_is_refused() -> None:
    class Bad(Guardrail):
        async def __call__(self, ctx: Any) -> Any:  # type: ignore[override]
            return None

    with pytest.raises(GuardrailError, match=r"Bad\.__call__.*\(ctx, call_next\)"):
        Runtime(guardrails=[Bad()])


def test_a_registered_factory_returning_a_bad_function_is_refused() -> None:
    register_guardrail("lonely", lambda: (lambda ctx: None))
    with pytest.raises(GuardrailError, match=r"lonely.*\(ctx, call_next\)"):
        Runtime(guardrails=[{"type": "lonely"}])


def test_well_formed_guardrail_functions_are_accepted() -> None:
    async def middleware(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    async def flexible(*args: Any) -> Any:
        return await args[1](args[0])

    Runtime(guardrails=[middleware, flexible, lambda ctx, call_next: call_next(ctx)])
    Coordinator("lead", guardrails=[middleware, Guardrail()])


# ------------------------------------------------------------------ event types


def test_an_unknown_on_event_type_is_refused_with_a_suggestion() -> None:
    with pytest.raises(AgentError, match=r"unknown event type 'complete' \(did you mean "
                                         r"'completed'\?\).*register_event_type"):

        @on_event("complete")
        async def heard(self: Any, event: Any) -> None: ...


@pytest.mark.parametrize("event_type", ["run_finished", "hook_failed"])
def test_on_event_refuses_types_no_hook_ever_hears(event_type: str) -> None:
    with pytest.raises(AgentError, match="would never fire"):
        on_event(event_type)


def test_register_event_type_is_exported_and_refuses_builtin_names() -> None:
    assert openintent.register_event_type is register_event_type
    assert "register_event_type" in openintent.__all__
    with pytest.raises(ValueError, match="built-in event type"):
        register_event_type("completed")
    with pytest.raises(ValueError, match="simple lowercase name"):
        register_event_type("")
    assert register_event_type("audit") == register_event_type("audit") == "audit"


@pytest.mark.parametrize("name", ["Bad Name!", "Audit", "audit log", "1audit", "_audit",
                                  "audit-", "a..b", " audit", "audit\n"])
def test_register_event_type_takes_only_simple_lowercase_names(name: str) -> None:
    with pytest.raises(openintent.SpecError, match="simple lowercase name") as caught:
        register_event_type(name)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(openintent.SpecError):
        register_event_type("completed")


def test_register_event_type_suggests_a_simple_name_and_takes_dotted_ones() -> None:
    with pytest.raises(openintent.SpecError, match="e.g. 'bad_name'"):
        register_event_type("Bad Name!")
    assert register_event_type("audit.logged") == "audit.logged"
    assert register_event_type("tool_called-2") == "tool_called-2"


def test_custom_event_types_stay_inside_an_isolated_registry() -> None:
    with isolated_registry():
        register_event_type("only-here")
        on_event("only-here")
        with isolated_registry(inherit=True):
            on_event("only-here")  # inherited
    with pytest.raises(AgentError, match="unknown event type 'only-here'"):
        on_event("only-here")


@pytest.mark.asyncio
async def test_a_declared_event_type_is_recorded_heard_and_queried(runtime: Runtime) -> None:
    register_event_type("audit")
    heard: list[tuple[str | None, dict[str, Any]]] = []

    @Agent("auditor")
    class Auditor:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await self.record_event(intent, "audit", checked=["rows"])  # type: ignore[attr-defined]
            return {"ok": True}

        @on_event("audit")
        async def note(self, event: Any) -> None:
            heard.append((event.intent_id, dict(event.data)))

    result = await runtime.run(PortfolioSpec("p", [IntentSpec("A", assign="auditor")]))
    assert result.status == "completed"
    (audit,) = result.events.of_type("audit")
    intent_id = result.intents["A"].id
    assert (audit.intent_id, dict(audit.data)) == (
        intent_id, {"checked": ["rows"], "agent": "auditor"})
    assert heard == [(intent_id, {"checked": ["rows"], "agent": "auditor"})]
    with pytest.raises(ValueError, match=r"'audti'.*did you mean 'audit'"):
        result.events.of_type("audti")


@pytest.mark.parametrize(
    ("event_type", "message"),
    [("audit", "unknown event type 'audit'"), ("completed", "built-in event type")],
)
@pytest.mark.asyncio
async def test_record_event_refuses_undeclared_and_builtin_types(
    runtime: Runtime, event_type: str, message: str
) -> None:
    @Agent("auditor")
    class Auditor:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await self.record_event(intent, event_type)  # type: ignore[attr-defined]
            return {"ok": True}

    result = await runtime.run(PortfolioSpec("p", [IntentSpec("A", assign="auditor")]))
    assert result.status == "failed"
    assert message in (result.intents["A"].error or "")
    assert result.intents["A"].error_type == "OpenIntentError"


def test_of_type_suggests_the_type_meant() -> None:
    log = openintent.EventLog([], "p")
    with pytest.raises(ValueError, match=r"did you mean 'completed'"):
        log.of_type("complete")


# ------------------------------------------------------------------ hook signatures


def _state_change(function: Any) -> Any:
    return on_state_change(keys=["x"])(function)


HOOKS = [
    (on_assignment, "(self, intent)"),
    (on_complete, "(self, intent)"),
    (_state_change, "(self, intent, old_state, new_state)"),
    (on_event("failed"), "(self, event)"),
    (on_retry, "(self, intent, attempt, error)"),
    (on_all_complete, "(self, portfolio)"),
    (on_handoff, "(self, intent, from_agent)"),
    (on_conflict, "(self, intent, versions)"),
    (on_escalation, "(self, intent, reason)"),
    (on_quorum(2), "(self, intent, responses)"),
    (on_approval_granted, "(self, intent, request)"),
    (on_approval_denied, "(self, intent, request)"),
    (on_guardrail_breach, "(self, intent, breach)"),
]


@pytest.mark.parametrize(("decorator", "expected"), HOOKS)
def test_a_hook_that_cannot_take_its_arguments_is_refused_at_decoration(
    decorator: Any, expected: str
) -> None:
    class Lead:
        @decorator
        async def hook(self) -> None: ...

    with pytest.raises(AgentError) as info:
        Coordinator("lead")(Lead)
    message = str(info.value)
    assert "Lead.hook" in message
    assert f"hook{expected}" in message
    assert "@on_" in message


def test_the_message_names_class_method_decorator_and_signature() -> None:
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> None: ...

        @on_retry
        async def again(self, intent: Any) -> None: ...

    with pytest.raises(AgentError, match=r"Worker\.again cannot take what @on_retry passes: "
                                         r"the runtime calls it as again\(self, intent, "
                                         r"attempt, error\)"):
        Agent("worker")(Worker)


def test_an_extra_required_parameter_is_refused_too() -> None:
    class Worker:
        @on_complete
        async def done(self, intent: Any, extra: Any) -> None: ...

    with pytest.raises(AgentError, match=r"Worker\.done.*@on_complete"):
        Agent("worker")(Worker)


def test_flexible_hook_signatures_are_accepted() -> None:
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any, note: str = "") -> None: ...

        @on_retry
        async def again(self, *args: Any) -> None: ...

        @on_complete
        @staticmethod
        def done(intent: Any) -> None: ...

        @classmethod
        @on_event("failed")
        def failed(cls, event: Any, **extra: Any) -> None: ...

    definition = definition_of(Worker)
    assert definition is not None and len(definition.hooks) == 4


def test_an_inherited_hook_is_checked_in_the_subclass() -> None:
    class Base:
        @on_complete
        async def done(self) -> None: ...

    with pytest.raises(AgentError, match=r"Child\.done"):

        @Agent("child")
        class Child(Base):
            @on_assignment
            async def work(self, intent: Any) -> None: ...


# ------------------------------------------------------------------ one quorum, one conflict


@pytest.mark.parametrize("decorator", [on_quorum(2), on_conflict], ids=["quorum", "conflict"])
def test_two_deciding_handlers_on_one_class_are_refused(decorator: Any) -> None:
    class Lead:
        @decorator
        async def first(self, intent: Any, answers: Any) -> None: ...

        @decorator
        async def second(self, intent: Any, answers: Any) -> None: ...

    with pytest.raises(AgentError, match=r"Lead has 2 @on_\w+ handlers \(first, second\); "
                                         r"only one"):
        Coordinator("lead")(Lead)


def test_a_subclass_may_override_its_bases_quorum_handler_but_not_add_a_second() -> None:
    class Base:
        @on_quorum(2)
        async def vote(self, intent: Any, responses: Any) -> None: ...

    @Coordinator("lead")
    class Override(Base):
        @on_quorum(fraction=1.0)
        async def vote(self, intent: Any, responses: Any) -> None: ...

    definition = definition_of(Override)
    assert definition is not None
    assert [hook.options["threshold"] for hook in definition.hooks] == [1.0]

    class Second(Base):
        @on_quorum(3)
        async def tally(self, intent: Any, responses: Any) -> None: ...

    with pytest.raises(AgentError, match=r"Second has 2 @on_quorum handlers"):
        Coordinator("other")(Second)


# ------------------------------------------------------------------ method names


@pytest.mark.parametrize("name", ["delegate", "execute", "record_decision", "add_intent",
                                  "patch_state", "record_cost", "escalate", "record_event"])
def test_a_method_named_like_a_coordinator_method_is_refused(name: str) -> None:
    async def method(self: Any, *args: Any) -> None: ...

    Lead = type("Lead", (), {name: method})
    with pytest.raises(AgentError, match=rf"Lead\.{name} has the name of the {name}\(\) "
                                         rf"method.*rename your method"):
        Coordinator("lead")(Lead)


def test_an_agent_may_use_coordinator_only_names() -> None:
    @Agent("worker")
    class Worker:
        @on_assignment
        async def execute(self, intent: Any) -> None: ...

    assert Worker.execute.__qualname__.endswith("Worker.execute")


def test_an_agent_method_clash_is_refused() -> None:
    with pytest.raises(AgentError, match=r"Worker\.patch_state.*@Agent\('worker'\)"):

        @Agent("worker")
        class Worker:
            def patch_state(self) -> None: ...


def test_subclassing_the_methods_class_allows_a_deliberate_override() -> None:
    @Coordinator("lead")
    class Lead(CoordinatorMethods):
        async def delegate(self, intent: Any, *, to: str) -> Any:
            return await super().delegate(intent, to=to)

    assert Lead.delegate.__qualname__.endswith("Lead.delegate")


def test_a_subclass_of_a_decorated_class_may_be_decorated_again() -> None:
    @Coordinator("lead")
    class Lead:
        pass

    @Coordinator("lead-2")
    class Child(Lead):
        pass

    assert Child.delegate is Lead.delegate  # type: ignore[attr-defined]


# ------------------------------------------------------------------ duplicate agent ids


def _worker_class() -> type[Any]:
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> None: ...

    return Worker


def test_a_second_class_under_a_taken_id_warns_naming_both() -> None:
    assert issubclass(OpenIntentWarning, UserWarning)
    assert "OpenIntentWarning" in openintent.__all__

    class Writer:
        pass

    class Editor:
        pass

    with isolated_registry():
        Agent("writer")(Writer)
        with pytest.warns(OpenIntentWarning, match=r"Editor.*'writer'.*Writer") as record:
            Agent("writer")(Editor)
        assert current_registry().get("writer").cls is Editor
    assert record[0].filename == __file__  # points at the decoration, not at openintent


def test_the_same_class_defined_again_replaces_it_quietly() -> None:
    with isolated_registry(), warnings.catch_warnings():
        warnings.simplefilter("error")
        first = Agent("worker")(_worker_class())
        second = Agent("worker")(_worker_class())  # same qualified name: a re-run cell
        assert first is not second
        assert current_registry().get("worker").cls is second


def test_a_simulated_agent_taking_a_class_id_warns() -> None:
    with isolated_registry():
        Agent("writer")(_worker_class())
        with pytest.warns(OpenIntentWarning, match="SimulatedAgent") as record:
            SimulatedAgent("writer")
    assert record[0].filename == __file__  # points at the agent's creation, not at openintent


def test_a_test_may_stand_in_for_an_import_time_class_once() -> None:
    with isolated_registry():
        Agent("writer")(_worker_class())
        with isolated_registry(inherit=True), warnings.catch_warnings():
            warnings.simplefilter("error")

            class StandIn:
                pass

            Agent("writer")(StandIn)  # replaces the inherited class quietly

            class Another:
                pass

            with pytest.warns(OpenIntentWarning, match="Another.*StandIn"):
                Agent("writer")(Another)


# ------------------------------------------------------------------ quorum spellings


@pytest.mark.parametrize(
    ("decorator", "threshold"),
    [
        (lambda: on_quorum(agents=2), 2),
        (lambda: on_quorum(fraction=0.5), 0.5),
        (lambda: on_quorum(fraction=1), 1.0),
        (lambda: on_quorum(threshold=2), 2),
        (lambda: on_quorum(1), 1),
        (lambda: on_quorum(1.0), 1.0),
        (lambda: on_quorum, 1.0),
    ],
    ids=["agents=2", "fraction=0.5", "fraction=1", "threshold=2", "int-1", "float-1.0", "bare"],
)
def test_quorum_spellings(decorator: Any, threshold: int | float) -> None:
    @Coordinator("lead")
    class Lead:
        @decorator()
        async def vote(self, intent: Any, responses: Any) -> None: ...

    definition = definition_of(Lead)
    assert definition is not None
    (hook,) = definition.hooks
    assert hook.options["threshold"] == threshold
    assert type(hook.options["threshold"]) is type(threshold)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: on_quorum(True), r"@on_quorum\(True\): not a threshold.*agents=N.*"
                                  r"@on_quorum\(1\) fires on the first answer.*"
                                  r"@on_quorum\(1\.0\) waits for all"),
        (lambda: on_quorum(2.0), r"@on_quorum\(2\.0\): a fraction .*\(a float, or "
                                 r"fraction=\) must be in \(0, 1\]; to "
                                 r"count agents pass an int: @on_quorum\(2\) or "
                                 r"@on_quorum\(agents=2\)"),
        (lambda: on_quorum(threshold=1.5), r"threshold=1\.5.*fraction"),
        (lambda: on_quorum(agents=1.5), r"agents= counts agents.*fraction=1\.5"),
        (lambda: on_quorum(fraction=2), r"fraction=2.*\(0, 1\].*@on_quorum\(agents=2\)"),
        (lambda: on_quorum(agents=0), r"at least 1"),
        (lambda: on_quorum(2, agents=2), r"one threshold"),
        (lambda: on_quorum(agents=True), r"not a threshold"),
    ],
    ids=["bool", "float-2.0", "threshold=1.5", "agents=1.5", "fraction=2", "agents=0", "twice",
         "agents=True"],
)
def test_confusable_quorum_thresholds_are_refused_saying_which_spelling_means_what(
    call: Any, message: str
) -> None:
    with pytest.raises(AgentError, match=message):
        call()


def _quorum_lead(decorator: Any) -> type[Any]:
    @Coordinator("lead")
    class Lead:
        @decorator
        async def vote(self, intent: Any, responses: Any) -> dict[str, Any]:
            return {"votes": len(responses)}

    return Lead


@pytest.mark.parametrize(
    ("decorator", "rationale", "votes"),
    [
        (lambda: on_quorum(1), "1 of 3 agents answered", 1),
        (lambda: on_quorum(agents=2), "2 of 3 agents answered", 2),
        (lambda: on_quorum(1.0), "all 3 assignees answered (fraction 1.0)", 3),
        (lambda: on_quorum(fraction=0.5), "2 of 3 assignees answered (fraction 0.5, rounded up)",
         2),
    ],
    ids=["int-1", "agents=2", "float-1.0", "fraction=0.5"],
)
@pytest.mark.asyncio
async def test_the_quorum_decision_says_agents_or_fraction(
    runtime: Runtime, decorator: Any, rationale: str, votes: int
) -> None:
    for delay, agent_id in enumerate(("a", "b", "c"), start=1):
        SimulatedAgent(agent_id, result={"v": agent_id}, delay=delay)
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("X", assign=["a", "b", "c"])]),
                               coordinator=_quorum_lead(decorator()))
    (decision,) = result.decisions
    assert (decision.decision, decision.rationale) == ("quorum_reached", rationale)
    assert result.intents["X"].state == {"votes": votes}


@pytest.mark.asyncio
async def test_a_fraction_counts_exactly_despite_floating_point() -> None:
    # 0.7 * 10 is 7.000000000000001 in floating point: 7 answers are 70 %.
    ids = [f"r{index}" for index in range(10)]
    agents = [SimulatedAgent(agent_id, result={"v": 1}, delay=index + 1, register=False)
              for index, agent_id in enumerate(ids)]
    async with Runtime(agents=agents, clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("X", assign=ids)]),
                              coordinator=_quorum_lead(on_quorum(0.7)))
    assert result.intents["X"].state == {"votes": 7}
    assert result.decisions[0].rationale == "7 of 10 assignees answered (fraction 0.7, rounded up)"


def test_record_event_reaches_the_run_through_the_context() -> None:
    # Outside a run it says so, like the other methods.
    worker = Agent("worker")(_worker_class())()
    with pytest.raises(OpenIntentError, match=r"record_event\(\) was called outside a run"):
        anyio.run(worker.record_event, None, "audit")


@pytest.mark.asyncio
async def test_a_hook_may_record_a_run_level_custom_event(runtime: Runtime) -> None:
    register_event_type("audit")
    SimulatedAgent("worker", result={"ok": True})

    @Coordinator("lead")
    class Lead:
        @on_complete
        async def done(self, intent: Any) -> None:
            await self.record_event(None, "audit", title=intent.title)  # type: ignore[attr-defined]

    result = await runtime.run(PortfolioSpec("p", [IntentSpec("A", assign="worker")]),
                               coordinator=Lead)
    (audit,) = result.events.of_type("audit")
    assert (audit.intent_id, dict(audit.data)) == (None, {"title": "A", "agent": "lead"})
    assert result.events.types()[-1] == "run_finished"


# ------------------------------------------------------------------ coordinator-only hooks


def _quorum_handler(self, intent, responses):
    return {}


def _conflict_handler(self, intent, versions):
    return {}


def _escalation_handler(self, intent, reason):
    return {}


def _notice_handler(self, intent, request):
    return None


def _breach_handler(self, intent, breach):
    return None


@pytest.mark.parametrize(
    ("decorate", "handler", "name"),
    [
        (lambda f: on_quorum(2)(f), _quorum_handler, "on_quorum"),
        (on_conflict, _conflict_handler, "on_conflict"),
        (on_escalation, _escalation_handler, "on_escalation"),
        (on_approval_granted, _notice_handler, "on_approval_granted"),
        (on_approval_denied, _notice_handler, "on_approval_denied"),
        (on_guardrail_breach, _breach_handler, "on_guardrail_breach"),
    ],
)
def test_a_coordinator_only_hook_on_an_agent_is_refused(decorate, handler, name):
    handle = decorate(copy_function(handler))
    work = on_assignment(lambda self, intent: {})
    with pytest.raises(AgentError, match=rf"@{name}.*only a coordinator receives.*never fire"):
        Agent("lonely-agent")(type("Lonely", (), {"handle": handle, "work": work}))


def test_the_same_hook_on_a_coordinator_is_accepted():
    @Coordinator("fine-lead")
    class Lead:
        @on_escalation
        def escalated(self, intent, reason):
            return {}

    assert definition_of(Lead) is not None


def copy_function(function):
    """A fresh function object, so each case decorates its own."""
    import types

    return types.FunctionType(function.__code__, function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
