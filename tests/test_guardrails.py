"""Guardrails as middleware: the chain of custom guardrails (``register_guardrail``, objects,
functions), ``require_output``, what a halted run reports, and the seed's ReviewCoordinator.
The built-ins have their own modules: test_budget, test_timeouts, test_approvals,
test_concurrency_limits.

Timers run on a ``VirtualClock``; virtual runs are bounded by a *virtual* deadline
(:func:`_helpers.bounded`), since a pending real-time deadline keeps a VirtualClock from
jumping. Either way a regression fails a test instead of hanging it.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import openintent
from openintent import (
    OpenIntentError,
    Runtime,
    SpecError,
    VirtualClock,
    register_event_type,
    register_guardrail,
)
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.guardrails import BudgetGuardrail, DispatchContext, Guardrail
from openintent.models import Event
from openintent.testing import SimulatedAgent, assert_replay_matches

from _helpers import NO_DELAY, bounded, load_example, of_type, statuses


@pytest.fixture
def fresh_types() -> None:
    """Guardrail types registered by a test vanish after it (the plugin's autouse fixture)."""


# ----------------------------------------------------------------- the chain: custom guardrails


class Recorder(Guardrail):
    """Writes ``name:before`` / ``name:after`` for every attempt to a shared trail."""

    type = "recorder"

    def __init__(self, name: str, trail: list[str], seen: list[str] | None = None) -> None:
        self.name = name
        self.trail = trail
        self.seen = seen

    async def before_dispatch(self, ctx: DispatchContext) -> None:
        self.trail.append(f"{self.name}:before:{ctx.title}:{ctx.attempt}")

    async def after_result(self, ctx: DispatchContext, result: Any) -> Any:
        self.trail.append(f"{self.name}:after:{ctx.title}:{ctx.attempt}")
        answer = dict(result or {})
        return {**answer, "stamped_by": [*answer.get("stamped_by", []), self.name]}

    def on_event(self, event: Event) -> None:
        if self.seen is not None:
            self.seen.append(event.type)


@pytest.mark.asyncio
async def test_runtime_guardrails_wrap_the_coordinators_once_per_attempt(fresh_types):
    trail: list[str] = []
    seen: list[str] = []
    register_guardrail("recorder", lambda name: Recorder(name, trail))

    @Coordinator("lead", guardrails=[{"type": "recorder", "name": "coord"}])
    class Lead:
        pass

    worker = SimulatedAgent("worker", result=[RuntimeError("flaky"), {"ok": True}])
    spec = PortfolioSpec("chain", [IntentSpec("A", assign="worker",
                                              retry={"max_attempts": 2, **NO_DELAY})])
    runtime_guardrail = Recorder("rt", trail, seen)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[runtime_guardrail]) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "completed"
    # Attempt 1 raised inside the chain: no after_result; attempt 2 went through both ways.
    assert trail == [
        "rt:before:A:1", "coord:before:A:1",
        "rt:before:A:2", "coord:before:A:2", "coord:after:A:2", "rt:after:A:2",
    ]
    assert len(worker.calls) == 2
    # after_result may replace the result: the innermost (coordinator's) stamps first.
    assert result.intents["A"].state == {"ok": True, "stamped_by": ["coord", "rt"]}
    # on_event sees every event of the run in order, once each, through run_finished.
    assert seen == result.events.types()
    assert seen[-6:] == ["dispatched", "attempt_failed", "retry_scheduled", "dispatched",
                         "completed", "run_finished"]


@pytest.mark.asyncio
async def test_on_event_sees_every_event_of_the_run_from_run_started():
    seen: list[str] = []
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("seen", [IntentSpec("A", assign="worker")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[Recorder("rt", [], seen)]) as rt:
        result = await bounded(rt, spec)
    assert seen == result.events.types()


@pytest.mark.asyncio
async def test_a_guardrail_that_raises_in_before_dispatch_fails_the_attempt_without_dispatching(
):
    class Closed(Guardrail):
        async def before_dispatch(self, ctx: DispatchContext) -> None:
            if ctx.title == "Blocked":
                raise PermissionError("the gate is closed")

    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("gate", [
        IntentSpec("Blocked", assign="worker", retry={"max_attempts": 2, **NO_DELAY}),
        IntentSpec("Open", assign="worker"),
    ])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[Closed()]) as rt:
        result = await bounded(rt, spec)

    assert statuses(result) == {"Blocked": "failed", "Open": "completed"}
    assert result.intents["Blocked"].error_type == "PermissionError"
    assert len(of_type(result, "attempt_failed", "Blocked")) == 2  # the retry policy applied
    assert of_type(result, "dispatched", "Blocked") == []
    assert worker.titles == ["Open"]


@pytest.mark.asyncio
async def test_a_guardrail_may_answer_an_attempt_itself_without_calling_call_next():
    class Cached(Guardrail):
        async def __call__(self, ctx: DispatchContext, call_next: Any) -> Any:
            if ctx.title == "Cached":
                return {"cached": True}
            return await call_next(ctx)

    worker = SimulatedAgent("worker", result={"fresh": True})
    spec = PortfolioSpec("cache", [IntentSpec("Cached", assign="worker"),
                                   IntentSpec("Fresh", assign="worker")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[Cached()]) as rt:
        result = await bounded(rt, spec)
    assert worker.titles == ["Fresh"]
    assert statuses(result) == {"Cached": "completed", "Fresh": "completed"}
    assert result.intents["Cached"].state == {"cached": True}


@pytest.mark.asyncio
async def test_a_guardrail_class_or_plain_function_is_refused_up_front_or_works():
    async def passthrough(ctx: DispatchContext, call_next: Any) -> Any:
        return await call_next(ctx)

    spec = PortfolioSpec("p", [IntentSpec("A", assign="worker")])
    SimulatedAgent("worker", result={"ok": True})
    with pytest.raises(SpecError, match=r"guardrails\[0\]"):
        Runtime(guardrails=[BudgetGuardrail])  # forgot to instantiate it
    try:
        rt = Runtime(clock=VirtualClock(), seed=0, guardrails=[passthrough])
    except SpecError:
        return
    async with rt:
        result = await bounded(rt, spec)
    assert result.status == "completed"


@pytest.mark.asyncio
async def test_a_factory_that_builds_a_plain_middleware_function_works() -> None:
    calls: list[str] = []

    async def middleware(ctx: Any, call_next: Any) -> Any:
        calls.append(ctx.title)
        return await call_next(ctx)

    register_guardrail("passthrough", lambda **fields: middleware)
    register_guardrail("nothing", lambda **fields: 42)
    SimulatedAgent("a", result={"ok": True})
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "passthrough"}]) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]))
    assert result.status == "completed" and calls == ["A"]
    with pytest.raises(SpecError, match="returned 42, not a Guardrail"):
        Runtime(guardrails=[{"type": "nothing"}])


@pytest.mark.asyncio
async def test_unknown_types_and_bad_fields_are_spec_errors_before_anything_runs(
    fresh_types, captured_events
):
    register_guardrail("recorder", lambda name: Recorder(name, []))
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("p", [IntentSpec("A", assign="worker")])

    @Coordinator("typo", guardrails=[{"type": "budget", "max_cost_usd": 1},
                                     {"type": "Recorder", "name": "x"}])
    class Typo:
        pass

    # Guardrails of registered types are checked when the class is decorated.
    with pytest.raises(SpecError, match=r"@Coordinator\('bad-field'\) guardrails\[0\] "
                                        r"\(recorder\).*nmae"):
        Coordinator("bad-field", guardrails=[{"type": "recorder", "nmae": "x"}])
    with pytest.raises(SpecError, match="on_timeout must be"):
        Coordinator("bad-value", guardrails=[{"type": "approval", "require_for": ["x"],
                                              "on_timeout": "shrug"}])

    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        with pytest.raises(SpecError, match=r"guardrails\[1\]: unknown guardrail type "
                                            r"'Recorder'.*known types: .*recorder"):
            await rt.run(spec, coordinator=Typo)
    with pytest.raises(SpecError, match=r"warn_at is a fraction"):
        Runtime(guardrails=[{"type": "budget", "max_cost_usd": 1, "warn_at": 2}])
    with pytest.raises(SpecError, match="limit must be an int"):
        Runtime(guardrails=[{"type": "max_concurrency", "limit": 0}])
    with pytest.raises(SpecError, match=r"unknown field\(s\) \['fro'\]"):
        Runtime(guardrails=[{"type": "require_output", "keys": ["x"], "fro": ["A"]}])
    assert worker.calls == []
    assert captured_events == []  # no run even started


@pytest.mark.asyncio
async def test_a_subclass_of_a_built_in_guardrail_keeps_its_overrides() -> None:
    seen: list[str] = []

    class LoudBudget(BudgetGuardrail):
        def on_event(self, event: Any) -> None:
            seen.append(event.type)
            super().on_event(event)

    SimulatedAgent("a", result={"ok": True}, cost_usd=1)
    async with Runtime(clock=VirtualClock(), seed=0,
                       guardrails=[LoudBudget(max_cost_usd=5)]) as rt:
        result = await rt.run(PortfolioSpec("p", [IntentSpec("A", assign="a")]))
    assert result.status == "completed"
    assert "cost_recorded" in seen


class _Refuse(Guardrail):
    async def before_dispatch(self, ctx: Any) -> None:
        raise RuntimeError("refused")


@pytest.mark.asyncio
async def test_attempts_refused_by_a_guardrail_are_counted() -> None:
    SimulatedAgent("a", result={"ok": True})
    async with Runtime(clock=VirtualClock(), seed=0, guardrails=[_Refuse()]) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="a", retry={"max_attempts": 3})]))
    [failed] = result.events.of_type("failed")
    assert failed.data["attempts"] == 3
    assert result.intents["A"].attempts == 3  # got 0


# ------------------------------------------------------------------------------- require output


@pytest.mark.asyncio
async def test_require_output_fails_an_attempt_missing_a_key_and_the_retry_policy_applies():
    writer = SimulatedAgent("writer", result=[{"draft": "..."}, {"summary": "short"}])
    lazy = SimulatedAgent("lazy", result={"draft": "..."})
    other = SimulatedAgent("other", result={"anything": 1})
    spec = PortfolioSpec("outputs", [
        IntentSpec("Write", assign="writer", retry={"max_attempts": 2, **NO_DELAY}),
        IntentSpec("Write again", assign="lazy", tags=["writing"]),
        IntentSpec("Publish", assign="other", depends_on=["Write again"]),
        IntentSpec("Unchecked", assign="other"),
    ])

    @Coordinator("lead", guardrails=[
        {"type": "require_output", "keys": ["summary"], "for": ["write", "WRITING"]}])
    class Lead:
        pass

    async with Runtime(agents=[writer, lazy, other], clock=VirtualClock(), seed=0) as rt:
        result = await bounded(rt, spec, Lead)

    assert statuses(result) == {"Write": "completed", "Write again": "failed",
                                "Publish": "skipped", "Unchecked": "completed"}
    write = result.intents["Write"]
    assert write.attempts == 2
    assert write.state == {"summary": "short"}  # the rejected result was not merged
    [failed_attempt] = of_type(result, "attempt_failed", "Write")
    assert failed_attempt.data["error_type"] == "OutputCheckError"
    assert "'summary'" in failed_attempt.data["error"]
    again = result.intents["Write again"]
    assert (again.error_type, again.attempts, again.state) == ("OutputCheckError", 1, {})
    assert result.intents["Unchecked"].state == {"anything": 1}  # "for" left it alone


# ------------------------------------------------------------------- a halted run loses nothing


@pytest.mark.asyncio
async def test_a_halted_run_says_what_ran_what_was_cancelled_and_what_never_started():
    finally_ran: list[str] = []

    @Agent("hanger")
    class Hanger:
        @on_assignment
        async def work(self, intent):
            try:
                await openintent.sleep(math.inf)
            finally:
                finally_ran.append(intent.title)

    builder = SimulatedAgent("builder", result={"artifact": "app.tar"}, delay=20, cost_usd=0.5)
    failing = SimulatedAgent("failing", result=RuntimeError("boom"))

    @Coordinator("lead", guardrails=[{"type": "approval", "require_for": ["deploy"]}])
    class Lead:
        pass

    spec = PortfolioSpec("release", [
        IntentSpec("Build", assign="builder"),
        IntentSpec("Test", assign="hanger", depends_on=["Build"]),
        IntentSpec("Deploy", assign="builder", depends_on=["Build"]),
        IntentSpec("Announce", assign="builder", depends_on=["Test"]),
        IntentSpec("Retrying", assign="failing",
                   retry={"max_attempts": 3, "initial_delay": 1000, "max_delay": 1000,
                          "jitter": False}),
    ])
    async with Runtime(agents=[Hanger, builder, failing], clock=VirtualClock(), seed=0,
                       guardrails=[{"type": "timeout", "max_seconds": 300}]) as rt:
        result = await bounded(rt, spec, Lead)

    assert result.status == "halted"
    assert result.titles_by_status() == {
        "completed": ["Build"],
        "cancelled": ["Test", "Deploy", "Retrying"],  # started, waiting approval, in backoff
        "pending": ["Announce"],
    }
    assert finally_ran == ["Test"]
    build = result.intents["Build"]
    assert (build.state, build.cost_usd) == ({"artifact": "app.tar"}, 0.5)
    assert [e.type for e in result.events.for_intent(build.id)] == [
        "created", "ready", "dispatched", "cost_recorded", "completed"]
    assert builder.titles == ["Build"]  # Deploy waited for approval; Announce never started
    assert of_type(result, "approval_requested", "Deploy")[0].time == 20.0
    assert rt.pending_approvals() == []
    assert result.intents["Retrying"].attempts == 1
    assert result.breach.guardrail == "timeout"
    assert result.to_dict()["breach"]["limit"] == 300
    assert_replay_matches(result)


@pytest.mark.asyncio
async def test_a_halt_cancels_an_intent_backing_off_after_a_refused_attempt() -> None:
    class RefuseFirst(Guardrail):
        async def before_dispatch(self, ctx: Any) -> None:
            if ctx.title == "A" and ctx.attempt == 1:
                raise RuntimeError("not yet")

    SimulatedAgent("a", result={"ok": True})
    SimulatedAgent("spender", result={"ok": True}, cost_usd=10, delay=1)
    async with Runtime(clock=VirtualClock(), seed=0, guardrails=[
            RefuseFirst(), {"type": "budget", "max_cost_usd": 5}]) as rt:
        result = await rt.run(PortfolioSpec("p", [
            IntentSpec("A", assign="a",
                       retry={"max_attempts": 2, "initial_delay": 10, "jitter": False}),
            IntentSpec("S", assign="spender")]))
    assert result.status == "halted"
    assert result.intents["A"].status == "cancelled"


# -------------------------------------------------------------------- the seed's review example


@pytest.mark.asyncio
async def test_the_seed_review_coordinator_runs_end_to_end(capsys):
    review = load_example("review")
    await review.main()
    out = capsys.readouterr().out
    assert "Review release notes: {'approved': True, 'votes': 2}" in out
    assert "Review code: {'approved': True, 'votes': 2}" in out
    assert out.count("decision: quorum_reached (2 of 3 agents answered)") == 2
    assert "cost: $1.60" in out

    reviewers = review.reviewers()
    async with Runtime(agents=reviewers, clock=VirtualClock(), seed=7) as rt:
        result = await bounded(rt, review.workflow, review.ReviewCoordinator)
    assert result.status == "completed"
    assert result.cost_by_agent == pytest.approx({"reviewer-a": 0.8, "reviewer-b": 0.8})
    assert result.events[-1].time == 45.0  # the slow reviewer was cancelled at the quorum
    assert of_type(result, "guardrail_breach") == []
    assert [len(agent.calls) for agent in reviewers] == [2, 2, 2, 0]


@pytest.mark.asyncio
async def test_the_review_coordinators_guardrails_hold():
    review = load_example("review")
    coordinator = review.ReviewCoordinator

    # timeout: every reviewer is slower than the 300 s limit.
    slow = [SimulatedAgent(f"reviewer-{x}", result={"approved": True}, delay=600,
                           register=False) for x in "abc"]
    async with Runtime(agents=slow, clock=VirtualClock(), seed=7) as rt:
        result = await bounded(rt, review.workflow, coordinator)
    assert result.status == "halted" and result.breach.guardrail == "timeout"
    assert of_type(result, "guardrail_breach")[0].time == 300.0
    assert set(statuses(result).values()) == {"cancelled"}

    # budget: two answers at $3 each exceed $5.
    pricey = [SimulatedAgent(f"reviewer-{x}", result={"approved": True}, delay=d, cost_usd=3.0,
                             register=False) for x, d in zip("abc", (10, 20, 30), strict=True)]
    single = PortfolioSpec("one review", [IntentSpec("Review code")])
    async with Runtime(agents=pricey, clock=VirtualClock(), seed=7) as rt:
        result = await bounded(rt, single, coordinator)
    assert result.status == "halted" and result.breach.guardrail == "budget"
    assert of_type(result, "guardrail_breach")[0].time == 20.0
    assert result.cost_usd == pytest.approx(6.0)

    # approval: a "deploy" step waits for a human; the answer comes from the event stream.
    quick = [SimulatedAgent(f"reviewer-{x}", result={"approved": True}, delay=5,
                            register=False) for x in "abc"]
    spec = PortfolioSpec("release", [IntentSpec("Review code"),
                                     IntentSpec("Deploy", depends_on=["Review code"])])
    async with Runtime(agents=quick, clock=VirtualClock(), seed=7) as rt:
        stream = rt.events()
        box: dict[str, Any] = {}

        async def approver() -> None:
            async for event in stream:
                if event.type == "approval_requested":
                    box["waited_at"] = event.time
                    await rt.approve(event.intent_id, by="release-manager")

        async with anyio.create_task_group() as tg:  # virtual clock: no real deadline here
            tg.start_soon(approver)
            box["result"] = await bounded(rt, spec, coordinator)
    result = box["result"]
    assert result.status == "completed"
    assert box["waited_at"] == 5.0
    assert result.intents["Deploy"].state == {"approved": True, "votes": 2}
    assert of_type(result, "approval_granted")[0].data["by"] == "release-manager"


# ------------------------------------------------------------ guardrail events
# What a user guardrail may append to the log with ``ctx.run.emit``: events of its own,
# declared with ``register_event_type`` (and ``budget_warning``), never the lifecycle events
# the runtime records itself, whose forgery would corrupt the run (a second ``run_finished``
# ends every event stream early).


async def run_with_guardrail(guardrail: Any) -> Any:
    spec = PortfolioSpec("p", [IntentSpec(title="A", assign="w")])
    async with Runtime(agents=[SimulatedAgent("w", result={})], clock=VirtualClock(), seed=0,
                       guardrails=[guardrail]) as rt:
        return await rt.run(spec)


@pytest.mark.asyncio
@pytest.mark.parametrize("event_type", ["run_finished", "completed", "created", "not_declared"])
async def test_a_guardrail_cannot_append_lifecycle_or_undeclared_events(event_type: str) -> None:
    refused: list[str] = []

    async def forger(ctx: Any, call_next: Any) -> Any:
        try:
            ctx.run.emit(event_type, ctx.intent_id, {"status": "completed"})
        except OpenIntentError as exc:
            refused.append(str(exc))
        return await call_next(ctx)

    result = await run_with_guardrail(forger)
    assert result.status == "completed"
    assert len(refused) == 1 and event_type in refused[0]
    assert result.events.types().count(event_type) == (
        0 if event_type == "not_declared" else 1
    )


@pytest.mark.asyncio
async def test_a_guardrail_appends_events_of_a_declared_type() -> None:
    register_event_type("guard_audit")

    async def auditor(ctx: Any, call_next: Any) -> Any:
        ctx.run.emit("guard_audit", ctx.intent_id, {"checked": ctx.title})
        return await call_next(ctx)

    result = await run_with_guardrail(auditor)
    [event] = result.events.of_type("guard_audit")
    assert event.data == {"checked": "A"} and event.title == "A"


@pytest.mark.asyncio
async def test_a_guardrail_changes_statuses_only_through_approvals() -> None:
    refused: list[str] = []

    async def forger(ctx: Any, call_next: Any) -> Any:
        try:
            ctx.run.set_status(ctx.intent_id, "completed", {"forged": True})
        except OpenIntentError as exc:
            refused.append(str(exc))
        return await call_next(ctx)

    result = await run_with_guardrail(forger)
    assert result.status == "completed"
    assert len(refused) == 1 and "completed" in refused[0]
    assert result.events.types().count("completed") == 1
    assert result.intents["A"].state == {}
