"""The runtime: dispatch, state, retries, failure propagation, events, hooks, results."""

from __future__ import annotations

import json

import anyio
import pytest
import structlog

import openintent
from openintent import (
    Escalate,
    EventType,
    IntentStatus,
    OpenIntentError,
    RetryPolicy,
    RunFailedError,
    RunStatus,
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
    on_event,
    on_retry,
    on_state_change,
)

pytestmark = pytest.mark.asyncio


def portfolio(*intents: IntentSpec, name: str = "p") -> PortfolioSpec:
    return PortfolioSpec(name, list(intents))


HANG_GUARD = 10  # real seconds; only a regression that hangs ever reaches it


async def run(spec: PortfolioSpec, *agents, coordinator=None, seed=None, clock=None):
    async with Runtime(agents=list(agents), seed=seed, clock=clock) as rt:
        return await rt.run(spec, coordinator=coordinator)


@Agent("echo")
class Echo:
    """Returns its title; records the order of calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @on_assignment
    async def work(self, intent):
        self.calls.append(intent.title)
        return {"title": intent.title, "saw": sorted(intent.inputs)}


class Flaky:
    """Fails the first ``failures`` attempts of every intent, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[tuple[str, int]] = []
        self.retries: list[tuple[int, str]] = []

    @on_assignment
    async def work(self, intent):
        self.attempts.append((intent.title, intent.attempt))
        if intent.attempt <= self.failures:
            raise RuntimeError(f"boom {intent.attempt}")
        return {"ok": intent.attempt}

    @on_retry
    async def retrying(self, intent, attempt, error):
        self.retries.append((attempt, str(error)))


FlakyAgent = Agent("flaky")(Flaky)


async def test_a_chain_passes_each_result_to_its_dependent():
    @Agent("sum")
    class Sum:
        @on_assignment
        async def add(self, intent):
            total = sum(state["n"] for state in intent.inputs.values())
            return {"n": total + intent.state.get("n", 0)}

    spec = portfolio(
        IntentSpec("A", assign="sum", initial_state={"n": 1}),
        IntentSpec("B", assign="sum", initial_state={"n": 2}),
        IntentSpec("C", assign="sum", depends_on=["A", "B"]),
    )
    result = await run(spec, Sum)
    assert result.status == RunStatus.COMPLETED == "completed"
    assert result.intents["C"].state == {"n": 3}
    assert result.intents["A"].state == {"n": 1}
    assert result.intents["C"].version == 1
    assert result.intents["C"].assigned_to == "sum"
    assert result.intents["C"].attempts == 1
    assert list(result.intents) == ["A", "B", "C"]


async def test_inputs_are_read_only_and_list_only_dependencies():
    seen = {}

    @Agent("peek")
    class Peek:
        @on_assignment
        async def work(self, intent):
            seen[intent.title] = dict(intent.inputs)
            if intent.inputs:
                with pytest.raises(TypeError):
                    intent.inputs["A"]["x"] = 2  # type: ignore[index]
                with pytest.raises(KeyError, match="not a dependency"):
                    intent.inputs["Z"]
            return {"x": 1}

    spec = portfolio(
        IntentSpec("A", assign="peek"),
        IntentSpec("Z", assign="peek"),
        IntentSpec("B", assign="peek", depends_on=["A"]),
    )
    result = await run(spec, Peek)
    assert result.status == "completed"
    assert seen["A"] == {}
    assert seen["B"] == {"A": {"x": 1}}


async def test_handler_sees_the_intent_fields():
    seen = []

    @Agent("inspect")
    class Inspect:
        @on_assignment
        async def work(self, intent):
            seen.append(intent)
            return None

    spec = portfolio(IntentSpec("A", assign="inspect", description="d", tags=["t"],
                                constraints={"tone": "formal"}, initial_state={"k": "v"}))
    result = await run(spec, Inspect)
    (intent,) = seen
    assert intent.id == result.intents["A"].id
    assert intent.portfolio_id == result.portfolio_id
    assert (intent.title, intent.description, intent.tags) == ("A", "d", ("t",))
    assert intent.constraints == {"tone": "formal"}
    assert intent.state == {"k": "v"}
    assert intent.status == IntentStatus.RUNNING
    assert intent.attempt == 1
    assert intent.assigned_to == "inspect"
    assert intent.idempotency_key == intent.id
    assert result.intents["A"].state == {"k": "v"}  # None changes nothing
    assert result.intents["A"].version == 0


async def test_several_assignment_handlers_run_in_order_and_merge():
    @Agent("multi")
    class Multi:
        @on_assignment
        async def first(self, intent):
            return {"a": 1, "b": 1}

        @on_assignment
        def second(self, intent):
            return {"b": 2}

    result = await run(portfolio(IntentSpec("A", assign="multi")), Multi)
    assert result.intents["A"].state == {"a": 1, "b": 2}


async def test_a_non_dict_return_fails_the_attempt_with_a_clear_error():
    @Agent("bad")
    class Bad:
        @on_assignment
        async def work(self, intent):
            return ["not", "a", "dict"]

    result = await run(portfolio(IntentSpec("A", assign="bad")), Bad)
    assert result.intents["A"].status == "failed"
    assert result.intents["A"].error_type == "DataError"  # a TypeError
    assert "returns a dict" in result.intents["A"].error


async def test_retries_follow_the_policy_and_on_retry_fires_before_each():
    flaky = FlakyAgent(failures=2)
    spec = portfolio(IntentSpec("A", assign="flaky", retry=RetryPolicy(
        max_attempts=3, initial_delay=0.001, jitter=False)))
    result = await run(spec, flaky)
    assert result.status == "completed"
    assert result.intents["A"].attempts == 3
    assert result.intents["A"].state == {"ok": 3}
    assert flaky.attempts == [("A", 1), ("A", 2), ("A", 3)]
    assert flaky.retries == [(2, "boom 1"), (3, "boom 2")]
    types = result.events.types()
    assert types.count(EventType.ATTEMPT_FAILED) == 2
    assert types.count(EventType.RETRY_SCHEDULED) == 2
    delays = [event.data["delay"] for event in result.events.of_type("retry_scheduled")]
    assert delays == [0.001, 0.002]


async def test_fallback_agents_take_over_when_the_primary_gives_up():
    @Agent("backup")
    class Backup:
        @on_assignment
        async def work(self, intent):
            return {"by": "backup", "attempt": intent.attempt}

    spec = portfolio(IntentSpec("A", assign="flaky", retry={
        "max_attempts": 2, "initial_delay": 0, "fallback": ["backup"]}))
    result = await run(spec, FlakyAgent(failures=10), Backup)
    assert result.status == "completed"
    assert result.intents["A"].state == {"by": "backup", "attempt": 3}
    assert result.intents["A"].assigned_to == "backup"
    dispatched = [event.data["agent"] for event in result.events.of_type("dispatched")]
    assert dispatched == ["flaky", "flaky", "backup"]


async def test_a_failure_skips_exactly_its_descendants_and_keeps_other_branches():
    spec = portfolio(
        IntentSpec("Bad", assign="flaky"),
        IntentSpec("Child", assign="echo", depends_on=["Bad"]),
        IntentSpec("Grandchild", assign="echo", depends_on=["Child"]),
        IntentSpec("Other", assign="echo"),
        IntentSpec("AfterOther", assign="echo", depends_on=["Other"]),
    )
    echo = Echo()
    result = await run(spec, FlakyAgent(failures=1), echo)
    statuses = {title: item.status for title, item in result.intents.items()}
    assert statuses == {
        "Bad": "failed", "Child": "skipped", "Grandchild": "skipped",
        "Other": "completed", "AfterOther": "completed",
    }
    assert echo.calls == ["Other", "AfterOther"]
    assert result.status == RunStatus.FAILED
    assert result.output is None
    skipped = result.events.of_type("skipped")
    assert {event.data["reason"] for event in skipped} == {"dependency 'Bad' failed"}
    with pytest.raises(RunFailedError, match="'Bad' failed") as caught:
        result.raise_for_status()
    (failure,) = caught.value.failures
    assert failure.title == "Bad"
    assert isinstance(failure.__cause__, RuntimeError)


async def test_an_unhandled_escalation_fails_the_intent_without_retrying():
    @Agent("escalator")
    class Escalator:
        def __init__(self) -> None:
            self.calls = 0

        @on_assignment
        async def work(self, intent):
            self.calls += 1
            if intent.title == "B":
                await self.escalate(intent, "too hard")
            raise Escalate("needs a human")

    agent = Escalator()
    spec = portfolio(IntentSpec("A", assign="escalator", retry={"max_attempts": 3}),
                     IntentSpec("B", assign="escalator"))
    result = await run(spec, agent)
    assert agent.calls == 2
    assert result.intents["A"].error_type == "EscalationError"
    assert "needs a human" in result.intents["A"].error
    assert "too hard" in result.intents["B"].error


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


async def test_patch_state_outside_a_run_is_a_clear_error():
    with pytest.raises(OpenIntentError, match="outside a run"):
        await Echo().patch_state(None, {})  # type: ignore[arg-type]


async def test_costs_add_up_per_intent_and_per_run():
    @Agent("spender")
    class Spender:
        @on_assignment
        async def work(self, intent):
            await self.record_cost(intent, 0.25, model="small")
            await self.record_cost(intent, 0.5)
            with pytest.raises(ValueError, match="finite amount"):
                await self.record_cost(intent, -1)
            return {}

    result = await run(portfolio(IntentSpec("A", assign="spender"),
                                 IntentSpec("B", assign="spender")), Spender)
    assert result.cost_usd == 1.5
    assert result.intents["A"].cost_usd == 0.75
    (first, *_) = result.events.of_type("cost_recorded")
    assert first.data == {"usd": 0.25, "agent": "spender", "model": "small"}


async def test_every_transition_is_one_event_in_order():
    result = await run(portfolio(IntentSpec("A", assign="echo")), Echo(), seed=3)
    types = result.events.types()
    assert types == ["run_started", "created", "ready", "dispatched", "completed", "run_finished"]
    assert [event.seq for event in result.events] == list(range(6))
    assert all(event.portfolio_id == result.portfolio_id for event in result.events)
    assert result.events[-1].data == {"status": "completed"}
    created = result.events[1]
    assert created.data == {"title": "A", "depends_on": [], "assign": "echo", "initial_state": {}}
    assert result.events[3].data == {"attempt": 1, "agent": "echo"}


async def test_events_stream_live_and_end_with_the_run():
    spec = portfolio(IntentSpec("A", assign="echo"), IntentSpec("B", assign="echo",
                                                                  depends_on=["A"]))
    streamed = []
    async with Runtime(agents=[Echo]) as rt:
        stream = rt.events()

        async def consume() -> None:
            async for event in stream:
                streamed.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            result = await rt.run(spec)
    assert streamed == list(result.events)


async def test_a_late_subscriber_still_sees_the_whole_run():
    streamed = []

    entered = anyio.Event()
    subscribed = anyio.Event()

    @Agent("slow")
    class Slow:
        @on_assignment
        async def work(self, intent):
            entered.set()
            await subscribed.wait()  # the run goes on only once the late subscriber is in
            return {}

    async with Runtime(agents=[Slow]) as rt:
        async with anyio.create_task_group() as tg:

            async def late() -> None:
                await entered.wait()  # the run has started and dispatched A
                stream = rt.events()
                subscribed.set()
                async for event in stream:
                    streamed.append(event.type)

            tg.start_soon(late)
            with anyio.fail_after(HANG_GUARD):
                result = await rt.run(portfolio(IntentSpec("A", assign="slow")))
    assert "dispatched" in result.events.types()
    assert streamed == result.events.types()


async def test_result_is_json_serialisable():
    result = await run(portfolio(IntentSpec("A", assign="echo")), Echo(),
                       coordinator=Lead)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "completed"
    assert data["output"] == {"done": ["A"]}
    assert data["intents"]["A"]["state"] == {"title": "A", "saw": []}
    assert [event["type"] for event in data["events"]][0] == "run_started"


@Coordinator("lead")
class Lead:
    def __init__(self) -> None:
        self.completed: list[str] = []
        self.finished = 0

    @on_complete
    async def seen(self, intent):
        self.completed.append(intent.title)

    @on_all_complete
    async def done(self, portfolio):
        self.finished += 1
        return {"done": sorted(portfolio.intents)}


async def test_on_all_complete_fires_once_and_its_value_is_the_output():
    lead = Lead()
    spec = portfolio(IntentSpec("A", assign="echo"), IntentSpec("B", assign="echo",
                                                                  depends_on=["A"]))
    result = await run(spec, Echo(), coordinator=lead)
    assert lead.finished == 1
    assert result.output == {"done": ["A", "B"]}
    assert lead.completed == ["A", "B"]
    result.raise_for_status()


async def test_on_all_complete_does_not_fire_for_a_failed_run():
    lead = Lead()
    result = await run(portfolio(IntentSpec("A", assign="flaky")), FlakyAgent(failures=1),
                       coordinator=lead)
    assert result.status == "failed"
    assert lead.finished == 0


async def test_lifecycle_hooks_fire_on_the_agent():
    log: list[tuple] = []

    @Agent("hooked")
    class Hooked:
        @on_assignment
        async def work(self, intent):
            await self.patch_state(intent, {"progress": 50})
            await self.patch_state(intent, {"note": "x"})
            return {"progress": 100}

        @on_state_change(keys=["progress"])
        async def progressed(self, intent, old, new):
            log.append(("progress", old.get("progress"), new["progress"]))

        @on_state_change
        def anything(self, intent, old, new):
            log.append(("any", sorted(set(new) - set(old))))

        @on_complete
        async def done(self, intent):
            log.append(("complete", intent.title, intent.status))

        @on_event("dispatched")
        async def dispatched(self, event):
            log.append(("event", event.type, event.data["attempt"]))

    await run(portfolio(IntentSpec("A", assign="hooked")), Hooked)
    assert log == [
        ("event", "dispatched", 1),
        ("progress", None, 50),
        ("any", ["progress"]),
        ("any", ["note"]),
        ("progress", 50, 100),
        ("any", []),
        ("complete", "A", "completed"),
    ]


async def test_a_failing_hook_is_recorded_and_does_not_fail_the_run(reset_structlog):
    @Agent("grumpy")
    class Grumpy:
        @on_assignment
        async def work(self, intent):
            return {}

        @on_complete
        async def done(self, intent):
            raise ValueError("hook broke")

    with structlog.testing.capture_logs() as logs:
        result = await run(portfolio(IntentSpec("A", assign="grumpy")), Grumpy)
    assert result.status == "completed"
    (failure,) = result.events.of_type("hook_failed")
    assert failure.data["error"] == "hook broke"
    assert failure.data["handler"].endswith("Grumpy.done")
    assert any(entry["event"] == "lifecycle handler failed" for entry in logs)


async def test_sequential_coordinator_runs_one_intent_at_a_time_in_declaration_order():
    running = 0
    peak = 0
    order = []

    @Agent("seq")
    class Seq:
        @on_assignment
        async def work(self, intent):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            order.append(intent.title)
            await openintent.sleep(1)
            running -= 1
            return {}

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
    assert peak == 1
    assert order == ["C", "A", "D", "B"]
    assert clock.now() == 4.0  # one virtual second each, one after another


async def test_max_concurrency_caps_the_running_handlers():
    running = 0
    peak = 0

    @Agent("capped")
    class Capped:
        @on_assignment
        async def work(self, intent):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await openintent.sleep(1)
            running -= 1
            return {}

    @Coordinator("cap", max_concurrency=3)
    class Cap:
        pass

    spec = portfolio(*(IntentSpec(f"I{i}", assign="capped") for i in range(12)))
    clock = VirtualClock()
    result = await run(spec, Capped, coordinator=Cap, clock=clock)
    assert result.status == "completed"
    assert peak == 3
    assert clock.now() == 4.0  # twelve one-second handlers, three at a time


async def test_parallel_is_the_default_and_runs_ready_intents_together():
    running = 0
    peak = 0

    @Agent("wide")
    class Wide:
        @on_assignment
        async def work(self, intent):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await openintent.sleep(1)
            running -= 1
            return {}

    spec = portfolio(*(IntentSpec(f"I{i}", assign="wide") for i in range(12)))
    clock = VirtualClock()
    result = await run(spec, Wide, clock=clock)
    assert result.status == "completed"
    assert peak == 12
    assert clock.now() == 1.0  # all twelve slept the same virtual second together


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


async def test_a_coordinator_with_on_assignment_handles_unassigned_intents():
    @Coordinator("router")
    class Router:
        @on_assignment
        async def route(self, intent):
            return {"routed_by": "router"}

    result = await run(portfolio(IntentSpec("A")), coordinator=Router)
    assert result.intents["A"].state == {"routed_by": "router"}
    assert result.intents["A"].assigned_to == "router"


async def test_agents_are_found_in_the_default_registry_by_id(openintent_registry):
    @Agent("registered")
    class Registered:
        @on_assignment
        async def work(self, intent):
            return {"found": True}

    @Coordinator("registered-lead")
    class RegisteredLead:
        @on_all_complete
        async def done(self, portfolio):
            return "done"

    async with Runtime() as rt:
        result = await rt.run(portfolio(IntentSpec("A", assign="registered")),
                              coordinator="registered-lead")
    assert result.intents["A"].state == {"found": True}
    assert result.output == "done"


async def test_a_runtime_runs_several_portfolios_and_refuses_after_closing():
    echo = Echo()
    async with Runtime(agents=[echo]) as rt:
        first = await rt.run(portfolio(IntentSpec("A", assign="echo"), name="one"))
        second = await rt.run(portfolio(IntentSpec("B", assign="echo"), name="two"))
    assert (first.name, second.name) == ("one", "two")
    assert first.portfolio_id != second.portfolio_id
    assert echo.calls == ["A", "B"]
    with pytest.raises(OpenIntentError, match="closed"):
        await rt.run(portfolio(IntentSpec("C", assign="echo")))


async def test_run_level_logs_carry_the_portfolio_and_nothing_is_configured(
    monkeypatch, reset_structlog
):
    with structlog.testing.capture_logs() as logs:

        def configure(*args, **kwargs):
            raise AssertionError("a library never configures logging")

        monkeypatch.setattr(structlog, "configure", configure)
        result = await run(portfolio(IntentSpec("A", assign="flaky")), FlakyAgent(failures=1))
    assert all(entry["portfolio_id"] == result.portfolio_id for entry in logs)
    run_level = [entry for entry in logs if entry["log_level"] != "debug"]
    assert [entry["event"] for entry in run_level] == [
        "run started", "intent failed", "run finished"
    ]
    assert run_level[1]["intent"] == "A" and run_level[1]["log_level"] == "warning"
    # capture_logs configures structlog to want everything: then each event is a debug line.
    debug = [entry["event"] for entry in logs if entry["log_level"] == "debug"]
    assert debug == result.events.types()


async def test_an_empty_portfolio_completes():
    result = await run(portfolio(), coordinator=Lead)
    assert result.status == "completed"
    assert result.output == {"done": []}


async def test_a_failing_on_all_complete_fails_the_run_but_keeps_the_work(reset_structlog):
    @Coordinator("broken-lead")
    class BrokenLead:
        @on_all_complete
        async def done(self, portfolio):
            raise KeyError("summary")

    with structlog.testing.capture_logs():
        result = await run(portfolio(IntentSpec("A", assign="echo")), Echo(),
                           coordinator=BrokenLead)
    assert result.status == "failed"
    assert result.intents["A"].status == "completed"
    assert result.error == "@on_all_complete raised KeyError: 'summary'"
    assert result.events.types()[-2:] == ["hook_failed", "run_finished"]
    with pytest.raises(RunFailedError, match="on_all_complete raised KeyError") as caught:
        result.raise_for_status()
    assert isinstance(caught.value.__cause__, KeyError)


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


async def test_changing_a_result_state_never_touches_the_log():
    from openintent.testing import replay

    result = await run(portfolio(IntentSpec("A", assign="echo")), Echo())
    state = result.intents["A"].state
    assert isinstance(state, dict)
    state["title"] = "changed"  # type: ignore[index]
    assert replay(result)["A"].state["title"] == "A"


async def test_events_of_concurrent_runs_stream_until_every_run_finished():
    @Agent("nap")
    class Nap:
        @on_assignment
        async def work(self, intent):
            await openintent.sleep(10 if intent.title == "slow" else 0)
            return {}

    streamed = []
    async with Runtime(agents=[Nap], clock=VirtualClock()) as rt:
        stream = rt.events()
        results = []

        async def consume() -> None:
            async for event in stream:
                streamed.append(event)

        async def one(title: str) -> None:
            results.append(await rt.run(portfolio(IntentSpec(title, assign="nap"), name=title)))

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(one, "slow")
            tg.start_soon(one, "fast")
    assert sorted(map(tuple, streamed)) == sorted(
        tuple(event) for result in results for event in result.events
    )
