"""Workers (``rt.serve``): a lost worker's task is claimed again once its lease expires and
its side effects still happen once (recorded value, or in doubt: check or
EffectInDoubtError), a restarted worker with the same id takes its tasks back at once,
detached runs are adopted by one serving runtime only, and cancelling serve leaves nothing
running. On ``memory://?workers=1`` and a virtual clock; trio on the real clock."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest
from _serving import HANG_GUARD, STORE, serving

import openintent
from openintent import OpenIntentError, RetryPolicy, Runtime, VirtualClock
from openintent._detach import start_detached
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.testing import assert_replay_matches

pytestmark = pytest.mark.asyncio

TTL = 30.0  # the memory store's default task_ttl


class Outside:
    """The outside world: counts the real calls of the effect; the first worker's handler
    stops (forever) after the effect, or inside it."""

    def __init__(self, hang_inside: bool = False) -> None:
        self.calls = 0
        self.hang_inside = hang_inside
        self.reached = anyio.Event()

    async def charge(self, amount: int) -> dict[str, Any]:
        self.calls += 1
        if self.hang_inside and self.calls == 1:
            self.reached.set()
            await openintent.sleep(10_000)
        return {"charge": f"ch_{self.calls}", "amount": amount}

    async def find(self, amount: int) -> dict[str, Any] | None:
        return {"charge": "found", "amount": amount}


def payer(outside: Outside, *, check: bool = False) -> Any:
    @Agent("payer")
    class Payer:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            receipt = await self.effect(intent, "charge", outside.charge, 42,
                                        check=outside.find if check else None)
            if intent.attempt == 1:  # the first claim: the worker is lost here
                outside.reached.set()
                await openintent.sleep(10_000)
            return {"receipt": receipt, "seen_attempt": intent.attempt}

    return Payer


async def run_with_lost_worker(outside: Outside, agent: Any, *, same_id: bool = False
                               ) -> tuple[Any, float]:
    """Worker "w1" claims the task and is lost (its serve cancelled, nothing finished);
    worker "w2" (or "w1" again, restarted) serves next. Returns the result and the time the
    run ended."""
    spec = PortfolioSpec("pay", [IntentSpec("Pay", assign="payer",
                                            retry=RetryPolicy(max_attempts=3))])
    clock = VirtualClock()
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[], store=STORE, clock=clock) as coordinator, \
                Runtime(agents=[agent], store=STORE, clock=clock) as first, \
                Runtime(agents=[agent], store=STORE, clock=clock) as second:
            async with anyio.create_task_group() as group:
                handle = await coordinator.start(spec)
                lost = anyio.CancelScope()
                group.start_soon(_serve_in, first, "w1", lost)
                await outside.reached.wait()
                lost.cancel()  # the first worker is gone, its claim still held
                group.start_soon(functools.partial(second.serve,
                                                   worker_id="w1" if same_id else "w2"))
                result = await handle.result()
                ended = clock.now()
                group.cancel_scope.cancel()
    return result, ended


async def _serve_in(rt: Runtime, worker_id: str, scope: anyio.CancelScope) -> None:
    with scope:
        await rt.serve(worker_id=worker_id)


async def test_a_lost_workers_task_is_claimed_again_and_its_effect_happens_once() -> None:
    outside = Outside()
    result, ended = await run_with_lost_worker(outside, payer(outside))

    assert result.status == "completed", result.error
    assert outside.calls == 1
    assert_replay_matches(result)
    pay = result.intents["Pay"]
    assert pay.state == {"receipt": {"charge": "ch_1", "amount": 42}, "seen_attempt": 2}
    assert pay.attempts == 1  # one attempt, claimed twice
    assert ended >= TTL  # claimed again once the first claim's lease expired
    handoffs = result.events.of_type("handoff")
    assert [event.data["reason"] for event in handoffs] == ["worker lease expired"]
    assert handoffs[0].data["worker"] == "w2" and handoffs[0].data["claims"] == 2
    assert [(event.type, event.data["name"]) for event in result.events
            if event.type.startswith("effect_")] == [
                ("effect_started", "charge"), ("effect_completed", "charge")]


async def test_a_worker_restarted_with_the_same_id_takes_its_tasks_back_at_once() -> None:
    outside = Outside()
    result, ended = await run_with_lost_worker(outside, payer(outside), same_id=True)

    assert result.status == "completed" and outside.calls == 1
    assert ended < TTL  # forget_worker: no wait for the lease to expire


async def test_an_effect_cut_short_with_its_worker_is_in_doubt_and_never_retried() -> None:
    outside = Outside(hang_inside=True)
    result, _ended = await run_with_lost_worker(outside, payer(outside))

    pay = result.intents["Pay"]
    assert (pay.status, pay.error_type, pay.attempts) == ("failed", "EffectInDoubtError", 1)
    assert outside.calls == 1
    assert [record.status for record in pay.effects] == ["in_doubt"]
    decisions = [decision.decision for decision in result.decisions]
    assert decisions == ["effect_in_doubt"]
    assert_replay_matches(result)


async def test_an_effect_in_doubt_settled_by_a_person_goes_on_remotely_after_a_resume(
) -> None:
    outside = Outside(hang_inside=True)
    agent = payer(outside)
    failed, _ended = await run_with_lost_worker(outside, agent)
    run_id = failed.portfolio_id

    async with serving([agent]) as coordinator:
        await coordinator.resolve_effect(run_id, "Pay", "charge", value={"charge": "manual"})
        result = await coordinator.resume(run_id)

    assert result.status == "completed" and outside.calls == 1
    assert result.intents["Pay"].state["receipt"] == {"charge": "manual"}


async def test_an_effect_in_doubt_with_a_check_takes_the_checks_value() -> None:
    outside = Outside(hang_inside=True)
    result, _ended = await run_with_lost_worker(outside, payer(outside, check=True))

    pay = result.intents["Pay"]
    assert pay.status == "completed" and outside.calls == 1
    assert pay.state["receipt"] == {"charge": "found", "amount": 42}


def adder(calls: list[str]) -> Any:
    @Agent("adder")
    class Adder:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls.append(intent.title)
            await openintent.sleep(1)
            return {"n": 1 + sum(v["n"] for v in intent.inputs.values())}

    return Adder


async def test_a_detached_run_is_adopted_by_one_serving_runtime_only() -> None:
    calls: list[str] = []
    agent = adder(calls)

    @Coordinator("lead")
    class Lead:
        pass

    spec = PortfolioSpec("detached", [IntentSpec("A", assign="adder"),
                                      IntentSpec("B", assign="adder", depends_on=["A"])])
    clock = VirtualClock()
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[], store=STORE, clock=clock) as starter:
            run_id = await start_detached(starter, spec, Lead)
        async with Runtime(agents=[agent, Lead], store=STORE, clock=clock) as one, \
                Runtime(agents=[agent, Lead], store=STORE, clock=clock) as two:
            assert one._runs.backend.adoptable_runs() == [run_id]  # type: ignore[attr-defined]
            async with anyio.create_task_group() as group:
                group.start_soon(functools.partial(one.serve, worker_id="one"))
                group.start_soon(functools.partial(two.serve, worker_id="two"))
                while (await one.load(run_id)).status == "running":
                    await clock.sleep(1)
                group.cancel_scope.cancel()
            result = await one.load(run_id)

    assert result.status == "completed"
    assert result.intents["B"].state == {"n": 2}
    assert sorted(calls) == ["A", "B"]
    assert len(result.events.of_type("run_resumed")) == 1  # adopted once
    assert one._runs.backend.adoptable_runs() == []  # type: ignore[attr-defined]


async def test_detach_and_serve_need_a_store_with_a_task_queue() -> None:
    spec = PortfolioSpec("p", [IntentSpec("A", assign="adder")])
    async with Runtime(agents=[adder([])], clock=VirtualClock()) as rt:
        with pytest.raises(OpenIntentError, match="task queue"):
            await rt.serve()
        with pytest.raises(OpenIntentError, match="task queue"):
            await start_detached(rt, spec)
        with pytest.raises(OpenIntentError, match="concurrency"):
            await Runtime(store=STORE).serve(concurrency=0)


async def test_cancelling_serve_stops_its_handlers_and_leaves_nothing_running() -> None:
    stopped: list[str] = []
    started = anyio.Event()

    @Agent("sleeper")
    class Sleeper:
        @on_assignment
        async def work(self, intent: Any) -> None:
            started.set()
            try:
                await openintent.sleep(10_000)
            finally:
                stopped.append(intent.title)

    clock = VirtualClock()
    spec = PortfolioSpec("s", [IntentSpec("Sleep", assign="sleeper")])
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=[], store=STORE, clock=clock) as coordinator, \
                Runtime(agents=[Sleeper], store=STORE, clock=clock) as worker:
            handle = await coordinator.start(spec)
            async with anyio.create_task_group() as group:
                group.start_soon(worker.serve)
                await started.wait()
                group.cancel_scope.cancel()
            assert stopped == ["Sleep"]
            await handle.cancel()




async def test_a_sub_portfolio_is_never_adopted_on_its_own() -> None:
    from openintent._adopt import Adopter

    async with Runtime(agents=[], store=STORE, clock=VirtualClock()) as rt:
        backend: Any = rt._runs.backend
        held = [backend.create_run("pf_parent", "parent"),
                backend.create_run("pf_child", "child", parent="pf_parent")]
        backend.detach_run("pf_parent")
        backend.detach_run("pf_child")
        assert backend.adoptable_runs() == ["pf_parent"]
        adopter = Adopter(rt._runs, rt._agents, lambda agent_id: None,  # type: ignore[arg-type,return-value]
                          (), 2.0, None)
        assert await adopter._adoptable() == ["pf_parent"]
        del held
