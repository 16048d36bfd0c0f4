"""Remote agents: a run whose agents are not in its process hands each attempt to a worker
(``rt.serve``) through the store's task queue, and its log reads as a local run's: the
worker's state patches, costs, events and side effects are replayed in order, its errors
raise under their own names (openintent's own classes as themselves, so never-retried stays
never retried), and guardrails, retries and timeouts stay with the coordinator. All on
``memory://?workers=1`` and a virtual clock (tests/_serving.py)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _serving import serving, shape, voters

import openintent
from openintent import (
    EffectInDoubtError,
    RemoteAgentError,
    RetryPolicy,
    Runtime,
    UnknownAgentError,
    VirtualClock,
)
from openintent._context import current_run
from openintent._remote import remote_error
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import assert_replay_matches

pytestmark = pytest.mark.asyncio


def dag() -> PortfolioSpec:
    return PortfolioSpec("dag", [
        IntentSpec("A", assign="calc", constraints={"n": 1}),
        IntentSpec("B", assign="calc", depends_on=["A"], constraints={"n": 2}),
        IntentSpec("C", assign="calc", depends_on=["A"], constraints={"n": 3}),
        IntentSpec("D", assign="calc", depends_on=["B", "C"], constraints={"n": 4}),
    ])


def calc_agent(calls: list[str]) -> Any:
    openintent.register_event_type("calc_note")

    @Agent("calc")
    class Calc:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls.append(intent.title)
            n = intent.constraints["n"]
            await openintent.sleep(n)
            version = await self.patch_state(intent, {"step": 1})
            await self.patch_state(intent, {"step": 2}, expected_version=version)
            await self.record_cost(intent, 0.25 * n, model="small")
            await self.record_event(intent, "calc_note", inputs=sorted(intent.inputs))
            receipt = await self.effect(intent, "send", self.send, n)
            return {"total": n + sum(v["total"] for v in intent.inputs.values()),
                    "receipt": receipt}

        async def send(self, n: int) -> str:
            return f"sent {n}"

    return Calc


async def test_remote_dispatch_completes_a_dag_with_the_events_of_a_local_run() -> None:
    calls: list[str] = []
    calc = calc_agent(calls)
    async with Runtime(agents=[calc], clock=VirtualClock(), seed=0) as local:
        expected = await local.run(dag())
    async with serving([calc]) as coordinator:
        result = await coordinator.run(dag())

    assert result.status == "completed", result.error
    assert result.intents["D"].state["total"] == 4 + (2 + 1) + (3 + 1)
    assert result.intents["D"].state["receipt"] == "sent 4"
    assert result.cost_usd == pytest.approx(2.5)
    assert shape(result) == shape(expected)
    assert_replay_matches(result)
    assert [event.time for event in result.events] == [event.time for event in expected.events]
    assert [record.status for record in result.intents["B"].effects] == ["completed"]
    assert sorted(calls) == ["A", "A", "B", "B", "C", "C", "D", "D"]  # local run + remote one


async def test_a_plain_memory_store_has_no_remote_agents() -> None:
    async with Runtime(agents=[], clock=VirtualClock()) as rt:
        with pytest.raises(UnknownAgentError, match="calc"):
            await rt.run(dag())
    with pytest.raises(openintent.StoreError, match="workers=1"):
        Runtime(store="memory://?workers=yes")


async def test_a_remote_failure_raises_under_the_workers_error_name_and_retries() -> None:
    @Agent("flaky")
    class Flaky:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if intent.attempt == 1 or intent.title == "Broken":
                raise ValueError(f"boom {intent.attempt}")
            return {"ok": intent.attempt}

    retry = RetryPolicy(max_attempts=2, initial_delay=1, jitter=False,
                        retry_on=(ValueError,))
    spec = PortfolioSpec("flaky", [IntentSpec("Flaky", assign="flaky", retry=retry),
                                   IntentSpec("Broken", assign="flaky", retry=retry)])
    async with serving([Flaky]) as coordinator:
        result = await coordinator.run(spec)

    assert result.intents["Flaky"].state == {"ok": 2}
    broken = result.intents["Broken"]
    assert (broken.status, broken.attempts) == ("failed", 2)
    assert (broken.error, broken.error_type) == ("boom 2", "ValueError")
    failed = [event.data for event in result.events.of_type("attempt_failed")]
    assert {(data["error_type"], data["error"]) for data in failed} == {
        ("ValueError", "boom 1"), ("ValueError", "boom 2")}


async def test_remote_errors_are_cached_classes_and_openintent_errors_are_themselves() -> None:
    first = remote_error("ValueError", "one", {})
    assert isinstance(first, RemoteAgentError) and isinstance(first, ValueError)
    assert type(first) is type(remote_error("ValueError", "two", {}))
    assert type(first).__name__ == "ValueError" and str(first) == "one"
    custom = remote_error("PaymentDeclined", "no", {})
    assert type(custom).__name__ == "PaymentDeclined" and isinstance(custom, RemoteAgentError)
    doubt = remote_error("EffectInDoubtError", "why", {"effect": "charge"})
    assert type(doubt) is EffectInDoubtError and doubt.effect == "charge"


async def test_an_effect_in_doubt_error_from_a_worker_is_never_retried() -> None:
    @Agent("doubter")
    class Doubter:
        @on_assignment
        async def work(self, intent: Any) -> None:
            raise EffectInDoubtError("in doubt", effect="x", intent_id=intent.id,
                                     title=intent.title, portfolio_id=intent.portfolio_id)

    spec = PortfolioSpec("doubt", [IntentSpec("Pay", assign="doubter",
                                              retry=RetryPolicy(max_attempts=3))])
    async with serving([Doubter]) as coordinator:
        result = await coordinator.run(spec)

    pay = result.intents["Pay"]
    assert (pay.status, pay.attempts, pay.error_type) == ("failed", 1, "EffectInDoubtError")


async def test_a_timeout_cancels_the_task_and_the_workers_handler() -> None:
    stopped: list[str] = []

    @Agent("slow")
    class Slow:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            try:
                await openintent.sleep(1000)
            finally:
                stopped.append(intent.title)
            return {}

    spec = PortfolioSpec("slow", [IntentSpec("Slow", assign="slow", timeout=5)])
    async with serving([Slow]) as coordinator:
        result = await coordinator.run(spec)
        # The worker hears of it at its next renewal of the claim.
        await coordinator.clock.sleep(30)  # type: ignore[attr-defined]
        assert stopped == ["Slow"]

    assert result.intents["Slow"].error_type == "IntentTimeoutError"
    queue = coordinator._runs.backend.tasks  # type: ignore[attr-defined]
    outcome = await queue.outcome(1)
    assert outcome.status == "cancelled"
    assert not await queue.finish(await _claimed(queue), "done", {"value": None, "ops": []})


async def _claimed(queue: Any) -> Any:
    from openintent._tasks import Task

    row = queue._rows[1]
    return Task(1, row.run_id, row.intent_id, row.attempt, row.agent_id, row.payload,
                row.token, row.claims, row.worker)


async def test_guardrails_stay_with_the_coordinator_budget_halts_on_a_replayed_cost() -> None:
    @Agent("spender")
    class Spender:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            await self.record_cost(intent, intent.constraints["usd"])
            return {"spent": True}

    @Coordinator("lead", guardrails=[{"type": "budget", "max_cost_usd": 5.0}])
    class Lead:
        pass

    spec = PortfolioSpec("spendy", [
        IntentSpec("Cheap", assign="spender", constraints={"usd": 2.0}),
        IntentSpec("Pricey", assign="spender", depends_on=["Cheap"], constraints={"usd": 4.0}),
        IntentSpec("After", assign="spender", depends_on=["Pricey"], constraints={"usd": 0}),
    ])
    async with serving([Spender], coordinator_agents=[Lead]) as coordinator:
        result = await coordinator.run(spec, coordinator=Lead)

    assert result.status == "halted"
    assert result.breach is not None and result.breach.guardrail == "budget"
    assert result.cost_usd == pytest.approx(6.0)
    assert result.intents["After"].status == "pending"


async def test_max_concurrency_caps_remote_attempts_and_the_worker_caps_its_own() -> None:
    running: list[int] = [0]
    peak: list[int] = [0]

    @Agent("busy")
    class Busy:
        @on_assignment
        async def work(self, intent: Any) -> None:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            try:
                await openintent.sleep(10)
            finally:
                running[0] -= 1

    spec = PortfolioSpec("many", [IntentSpec(f"I{n}", assign="busy") for n in range(6)])

    @Coordinator("capped", max_concurrency=2)
    class Capped:
        pass

    async with serving([Busy], coordinator_agents=[Capped]) as coordinator:
        result = await coordinator.run(spec, coordinator=Capped)
    assert result.status == "completed" and peak[0] == 2

    peak[0] = 0
    async with serving([Busy], concurrency=3) as coordinator:
        result = await coordinator.run(spec)
        assert coordinator.clock.now() == pytest.approx(20)  # two rounds of three
    assert result.status == "completed" and peak[0] == 3


async def test_approval_is_asked_by_the_coordinator_before_a_remote_dispatch() -> None:
    done: list[str] = []

    @Agent("deployer")
    class Deployer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            done.append(intent.title)
            return {"deployed": True}

    @Coordinator("lead", guardrails=[{"type": "approval", "require_for": ["deploy"],
                                      "approvers": ["alice"]}])
    class Lead:
        pass

    spec = PortfolioSpec("ship", [IntentSpec("Deploy", assign="deployer", tags=("deploy",))])
    async with serving([Deployer], coordinator_agents=[Lead]) as coordinator:
        handle = await coordinator.start(spec, coordinator=Lead)
        while not coordinator.pending_approvals():
            await anyio.lowlevel.checkpoint()
        assert done == []
        await coordinator.approve("Deploy", by="alice")
        result = await handle.result()

    assert result.status == "completed" and done == ["Deploy"]
    types = [event.type for event in result.events]
    assert types.index("approval_granted") < types.index("dispatched")


async def test_coordinator_only_methods_are_refused_in_a_worker() -> None:
    @Agent("planner")
    class Planner:
        @on_assignment
        async def work(self, intent: Any) -> None:
            # As a coordinator's self.add_intent() would call it.
            await current_run("add_intent").add_intent(IntentSpec("More", assign="planner"))

    spec = PortfolioSpec("plan", [IntentSpec("Plan", assign="planner")])
    async with serving([Planner]) as coordinator:
        result = await coordinator.run(spec)
    plan = result.intents["Plan"]
    assert plan.status == "failed" and plan.error_type == "OpenIntentError"
    assert "for coordinators" in (plan.error or "")


async def test_each_remote_assignee_of_a_multi_agent_intent_gets_its_own_task() -> None:
    served: list[str] = []

    spec = PortfolioSpec("vote", [IntentSpec("Review", assign=["rev-a", "rev-b"])])
    async with serving(voters(served, "rev-a", "rev-b")) as coordinator:
        result = await coordinator.run(spec)

    assert result.status == "completed", result.error
    responses = result.events.of_type("response_received")
    assert sorted(event.data["agent"] for event in responses) == ["rev-a", "rev-b"]
    assert sorted(served) == ["rev-a", "rev-b"]


async def test_an_intent_whose_task_is_not_json_data_fails_without_a_retry() -> None:
    @Agent("calc")
    class Calc:
        @on_assignment
        async def work(self, intent: Any) -> None:
            return None

    spec = PortfolioSpec("odd", [IntentSpec("Odd", assign="calc", constraints={"x": object()},
                                            retry=RetryPolicy(max_attempts=3))])
    async with serving([Calc]) as coordinator:
        result = await coordinator.run(spec)
    odd = result.intents["Odd"]
    assert (odd.status, odd.attempts, odd.error_type) == ("failed", 1, "DataError")
    assert "remote agent 'calc'" in (odd.error or "")


async def test_a_workers_decisions_and_run_level_events_are_replayed_in_order() -> None:
    openintent.register_event_type("remote_note")

    @Agent("decider")
    class Decider:
        @on_assignment
        async def work(self, intent: Any) -> None:
            run = current_run("record_decision")
            run.record_decision("decider", intent.id, "chose", "it fits", {"pick": 2})
            await self.record_event(None, "remote_note", level="run")
            run.record_decision("decider", None, "noted", "run-wide", {})

    spec = PortfolioSpec("decide", [IntentSpec("Decide", assign="decider")])
    async with serving([Decider]) as coordinator:
        result = await coordinator.run(spec)

    decide = result.intents["Decide"].id
    assert [(d.decision, d.intent_id, dict(d.data)) for d in result.decisions] == [
        ("chose", decide, {"pick": 2}), ("noted", None, {})]
    notes = result.events.of_type("remote_note")
    assert [(event.intent_id, event.data["level"]) for event in notes] == [(None, "run")]
    types = [event.type for event in result.events]
    assert types.index("decision_recorded") < types.index("remote_note")


async def test_cancelling_the_run_cancels_its_tasks_and_the_workers_handlers() -> None:
    stopped: list[str] = []
    started = anyio.Event()

    @Agent("slow")
    class Slow:
        @on_assignment
        async def work(self, intent: Any) -> None:
            started.set()
            try:
                await openintent.sleep(1000)
            finally:
                stopped.append(intent.title)

    spec = PortfolioSpec("slow", [IntentSpec("One", assign="slow"),
                                  IntentSpec("Two", assign="slow")])
    async with serving([Slow]) as coordinator:
        handle = await coordinator.start(spec)
        await started.wait()
        await handle.cancel()
        result = await handle.result()
        queue = coordinator._runs.backend.tasks  # type: ignore[attr-defined]
        assert [(await queue.outcome(task_id)).status for task_id in (1, 2)] == [
            "cancelled", "cancelled"]
        await coordinator.clock.sleep(30)  # type: ignore[attr-defined]
        assert sorted(stopped) == ["One", "Two"]
    assert result.status == "cancelled"


async def test_a_failed_effect_and_its_retry_log_as_in_a_local_run() -> None:
    calls: list[int] = []

    @Agent("payer")
    class Payer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            receipt = await self.effect(intent, "charge", self.charge, intent.attempt)
            return {"receipt": receipt}

        async def charge(self, attempt: int) -> str:
            calls.append(attempt)
            if attempt == 1:
                raise ValueError("card declined")
            return f"ch_{attempt}"

    retry = RetryPolicy(max_attempts=2, initial_delay=1, jitter=False)
    spec = PortfolioSpec("pay", [IntentSpec("Pay", assign="payer", retry=retry)])
    async with Runtime(agents=[Payer], clock=VirtualClock(), seed=0) as local:
        expected = await local.run(spec)
    async with serving([Payer]) as coordinator:
        result = await coordinator.run(spec)

    assert result.intents["Pay"].state == {"receipt": "ch_2"}
    assert shape(result) == shape(expected)
    failed = result.events.of_type("effect_failed")[0].data
    assert (failed["error_type"], failed["error"]) == ("ValueError", "card declined")
    assert calls == [1, 2, 1, 2]  # the local run's, then the remote one's
