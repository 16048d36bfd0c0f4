"""Forking a run (``rt.fork``, ``rt.start_fork``): a new run that keeps what another run
completed and runs the named intents and their descendants again.

What is copied: each intent the source completed that is not downstream of ``rerun`` (nor of
an intent the source did not complete) is ``completed`` in the fork with the source's state,
version, attempts and agent, by an ``intent_copied`` event, and never dispatched; its cost in
the fork is 0 (the fork's cost counts only what the fork spends). What re-runs: the rest,
from their spec, from attempt 1. Time is virtual throughout; memory:// keeps a run while its
result is held, SQLite across runtimes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import openintent
from openintent import (
    OpenIntentError,
    RunInUseError,
    RunNotFoundError,
    Runtime,
    SpecError,
    VirtualClock,
)
from openintent.agents import Agent, Coordinator, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import EventType, IntentStatus, RunResult
from openintent.testing import SimulatedAgent, assert_replay_matches

pytestmark = pytest.mark.asyncio

_KEEP: list[Any] = []  # crashed logs: a memory store holds runs weakly


def steps() -> PortfolioSpec:
    """A -> B -> C, A + C -> E, and D on its own."""
    return PortfolioSpec("steps", [
        IntentSpec("A", assign="worker", initial_state={"seed": 1}),
        IntentSpec("B", assign="worker", depends_on=["A"]),
        IntentSpec("C", assign="worker", depends_on=["B"]),
        IntentSpec("D", assign="worker"),
        IntentSpec("E", assign="worker", depends_on=["A", "C"]),
    ])


def worker_agent(cost: float = 0.0, broken: set[str] | None = None) -> Any:
    """Records its calls; each answer says which call it was; fails the titles in
    ``broken`` (a set the test may change between runs)."""

    @Agent("worker")
    class Worker:
        def __init__(self) -> None:
            self.calls: list[str] = []

        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            self.calls.append(intent.title)
            await openintent.sleep(1.0)
            if cost:
                await self.record_cost(intent, cost)
            if broken and intent.title in broken:
                raise ValueError(f"{intent.title} went wrong")
            await self.patch_state(intent, {"call": len(self.calls)})
            return {"done": intent.title}

    return Worker()


def crashed(rt: Runtime, result: RunResult, upto: int) -> str:
    """The first ``upto`` events of ``result``'s log as a new run in ``rt``'s store, as a
    process killed at that point leaves it; the new run's id."""
    backend = rt._runs.backend
    run_id = openintent._plan.new_portfolio_id()
    log = backend.create_run(run_id, result.name,
                             timebase=backend.timebase(result.portfolio_id))
    log.extend(result.events._events[:upto])
    _KEEP.append(log)
    return run_id


def titles_of(result: RunResult, event_type: str) -> list[str]:
    return [event.title or "" for event in result.events if event.type == event_type]


def check_agrees(result: RunResult, loaded: RunResult) -> None:
    """The replay oracle and rt.load() agree with the live result."""
    assert_replay_matches(result)
    assert_replay_matches(loaded)
    assert dict(loaded.intents) == dict(result.intents)
    assert list(loaded.events) == list(result.events)
    assert (loaded.status, loaded.cost_usd) == (result.status, result.cost_usd)


# ---------------------------------------------------------------------------- what is copied


async def test_fork_copies_what_is_not_downstream_and_reruns_the_rest():
    worker = worker_agent(cost=0.5)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        source = await rt.run(steps())
        before = list(source.events)
        worker.calls.clear()
        fork = await rt.fork(source.portfolio_id, rerun=["B"])
        loaded = await rt.load(fork.portfolio_id)
        source_again = await rt.load(source.portfolio_id)

    assert fork.status == "completed" and fork.portfolio_id != source.portfolio_id
    # Only B and what is downstream of it ran again, once each.
    assert sorted(worker.calls) == ["B", "C", "E"]
    assert sorted(titles_of(fork, "dispatched")) == ["B", "C", "E"]
    assert titles_of(fork, EventType.INTENT_COPIED) == ["A", "D"]
    for title in ("A", "D"):  # the source's final record, but for its cost
        kept, old = fork.intents[title], source.intents[title]
        assert (kept.status, kept.state, kept.version, kept.attempts, kept.assigned_to) == (
            old.status, old.state, old.version, old.attempts, old.assigned_to)
        assert kept.cost_usd == 0.0
    for title in ("B", "C", "E"):  # run again from their spec: a first attempt, new state
        assert fork.intents[title].attempts == 1
        assert fork.intents[title].state["call"] != source.intents[title].state["call"]
    assert fork.cost_usd == pytest.approx(1.5)  # only what the fork spent
    # The new run's events say where it came from.
    started = fork.events[0]
    assert started.type == "run_started"
    assert started.data["forked_from"] == source.portfolio_id
    assert started.data["rerun"] == ["B"]
    copied = [event for event in fork.events if event.type == EventType.INTENT_COPIED]
    assert [event.data["from"] for event in copied] == [source.intents["A"].id,
                                                        source.intents["D"].id]
    assert titles_of(fork, "created") == ["A", "B", "C", "D", "E"]  # its own plan
    check_agrees(fork, loaded)
    # The source run is left as it was.
    assert list(source_again.events) == before


async def test_a_fork_of_a_failed_run_with_the_broken_step_fixed_completes():
    broken = {"B"}
    worker = worker_agent(broken=broken)
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        source = await rt.run(steps())
        assert source.status == "failed"
        assert source.intents["C"].status == IntentStatus.SKIPPED
        broken.clear()  # a different behaviour of the agent: the step is fixed
        worker.calls.clear()
        fork = await rt.fork(source.portfolio_id, rerun=["B"])
        loaded = await rt.load(fork.portfolio_id)

    assert fork.status == "completed"
    assert sorted(worker.calls) == ["B", "C", "E"]
    assert fork.intents["B"].error is None
    check_agrees(fork, loaded)


async def test_intents_the_source_did_not_complete_run_again_with_their_descendants():
    broken = {"D"}
    worker = worker_agent(broken=broken)
    spec = PortfolioSpec("two", [
        IntentSpec("A", assign="worker"),
        IntentSpec("D", assign="worker"),
        IntentSpec("F", assign="worker", depends_on=["D"]),
    ])
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        source = await rt.run(spec)
        broken.clear()
        worker.calls.clear()
        fork = await rt.fork(source.portfolio_id, rerun=["A"])
        loaded = await rt.load(fork.portfolio_id)

    assert fork.status == "completed"
    assert sorted(worker.calls) == ["A", "D", "F"]  # D failed, F was skipped: not copied
    assert fork.events[0].data["rerun"] == ["A"]
    check_agrees(fork, loaded)


async def test_forks_of_forks():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        source = await rt.run(steps())
        first = await rt.fork(source.portfolio_id, rerun=["C"])
        worker.calls.clear()
        second = await rt.fork(first.portfolio_id, rerun=["E"])
        loaded = await rt.load(second.portfolio_id)

    assert worker.calls == ["E"]
    assert second.events[0].data["forked_from"] == first.portfolio_id
    # C's state is the first fork's (copied from it), A's the source's (copied twice).
    assert second.intents["C"].state == first.intents["C"].state
    assert second.intents["A"].state == source.intents["A"].state
    assert [info.portfolio_id for info in rt.runs()] == [
        source.portfolio_id, first.portfolio_id, second.portfolio_id]
    check_agrees(second, loaded)


async def test_a_crashed_run_forks_and_a_crashed_fork_resumes():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(steps())
        # Killed while B ran: A and D completed, B in flight, C and E never started.
        upto = next(event.seq for event in live.events
                    if event.type == "dispatched" and event.title == "B") + 1
        dead = crashed(rt, live, upto)
        worker.calls.clear()
        fork = await rt.fork(dead, rerun=["D"])
        assert sorted(worker.calls) == ["B", "C", "D", "E"]  # only A was complete
        assert titles_of(fork, EventType.INTENT_COPIED) == ["A"]
        check_agrees(fork, await rt.load(fork.portfolio_id))

        # A fork is a run like any: killed after its copies and a dispatch, it resumes.
        cut = next(event.seq for event in fork.events if event.type == "dispatched") + 1
        dead_fork = crashed(rt, fork, cut)
        worker.calls.clear()
        resumed = await rt.resume(dead_fork)
    assert resumed.status == "completed"
    assert "A" not in worker.calls
    assert resumed.intents["A"].state == live.intents["A"].state
    assert_replay_matches(resumed)


async def test_start_fork_returns_a_handle_whose_events_tell_the_fork():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        source = await rt.run(steps())
        handle = await rt.start_fork(source.portfolio_id, rerun=["E"])
        seen = [event.type async for event in handle.events()]
        result = await handle.result()
    assert result.status == "completed" and handle.portfolio_id == result.portfolio_id
    assert seen[:7] == ["run_started", *["created"] * 5, EventType.INTENT_COPIED]
    assert seen.count(EventType.INTENT_COPIED) == 4 and seen[-1] == "run_finished"

    with pytest.raises(OpenIntentError, match="async with"):
        await Runtime(agents=[worker_agent()]).start_fork("pf_x", rerun=["A"])


# ---------------------------------------------------------------------------- SQLite


async def test_fork_on_sqlite_from_a_fresh_runtime(tmp_path: Path):
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    worker = worker_agent(cost=1.0)
    async with Runtime(agents=[worker], clock=VirtualClock(), store=store) as rt:
        source = await rt.run(steps())
    before = list(source.events)
    worker = worker_agent(cost=1.0)
    async with Runtime(agents=[worker], clock=VirtualClock(), store=store) as rt:
        fork = await rt.fork(source.portfolio_id, rerun=["C"])
    assert sorted(worker.calls) == ["C", "E"]
    assert fork.cost_usd == pytest.approx(2.0)
    async with Runtime(store=store) as rt:  # read back by a third runtime
        loaded = await rt.load(fork.portfolio_id)
        source_again = await rt.load(source.portfolio_id)
        listed = [info.portfolio_id for info in rt.runs()]
    check_agrees(fork, loaded)
    assert list(source_again.events) == before
    assert listed == [source.portfolio_id, fork.portfolio_id]


# ---------------------------------------------------------------------------- a new spec


async def test_a_given_spec_changes_rerun_intents_and_may_add_some():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        source = await rt.run(steps())
        better = PortfolioSpec("steps", [
            *(intent if intent.title != "B" else IntentSpec(
                "B", assign="worker", depends_on=["A"], description="be stricter")
              for intent in steps().intents),
            IntentSpec("Extra", assign="worker", depends_on=["D"]),
        ])
        worker.calls.clear()
        fork = await rt.fork(source.portfolio_id, rerun=["B"], spec=better)
        assert sorted(worker.calls) == ["B", "C", "E", "Extra"]
        created = {event.title: event.data for event in fork.events if event.type == "created"}
        assert created["B"]["spec"]["description"] == "be stricter"
        check_agrees(fork, await rt.load(fork.portfolio_id))

        # A changed intent the fork would copy: refused, nothing runs or is written.
        runs = len(rt.runs())
        changed = PortfolioSpec("steps", [
            intent if intent.title != "D" else IntentSpec("D", assign="worker", timeout=5)
            for intent in steps().intents])
        with pytest.raises(SpecError, match=r"intent 'D': timeout"):
            await rt.fork(source.portfolio_id, rerun=["B"], spec=changed)
        assert len(rt.runs()) == runs


# ---------------------------------------------------------------------------- refusals


async def test_what_cannot_be_forked_is_refused_and_nothing_is_written():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        source = await rt.run(steps())
        with pytest.raises(SpecError, match=r"'EE'.*did you mean 'E'\?"):
            await rt.fork(source.portfolio_id, rerun=["EE"])
        with pytest.raises(SpecError, match="at least one intent"):
            await rt.fork(source.portfolio_id, rerun=[])
        with pytest.raises(SpecError, match="a list of the intents"):
            await rt.fork(source.portfolio_id, rerun="B")  # type: ignore[arg-type]
        with pytest.raises(RunNotFoundError, match="pf_nope"):
            await rt.fork("pf_nope", rerun=["B"])
        assert len(rt.runs()) == 1

        handle = await rt.start(steps())
        with pytest.raises(RunInUseError, match="going on in this runtime"):
            await rt.fork(handle.portfolio_id, rerun=["B"])
        await handle.result()


# ---------------------------------------------------------------------------- coordinators


async def test_the_fork_keeps_the_sources_coordinator_guardrails_and_added_intents():
    worker = SimulatedAgent("w", result=lambda intent: {"t": intent.title}, delay=1,
                            register=False)

    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent: Any) -> dict[str, Any]:
            await openintent.sleep(5)
            await self.add_intent(IntentSpec("C", assign="w", depends_on=["A", "B"]))
            await self.add_intent(IntentSpec("D", assign="w"))
            return {"planned": True}

    spec = PortfolioSpec("planned", [
        IntentSpec("A", assign="w"), IntentSpec("Plan"),
        IntentSpec("B", assign="w", depends_on=["Plan"])])
    budget = [{"type": "budget", "max_cost_usd": 5.0}]
    async with Runtime(agents=[worker, Planner], clock=VirtualClock(),
                       guardrails=budget) as rt:
        source = await rt.run(spec, coordinator=Planner)
        worker.calls.clear()
        # The log's plan: the intents the coordinator added are in it (C downstream of A).
        fork = await rt.fork(source.portfolio_id, rerun=["A"])
        assert sorted(worker.titles) == ["A", "C"]
        assert list(fork.intents) == ["A", "Plan", "B", "C", "D"]
        started, before = fork.events[0].data, source.events[0].data
        assert started["coordinator"] == "planner"
        assert started["plan"]["guardrails"] == before["plan"]["guardrails"]
        check_agrees(fork, await rt.load(fork.portfolio_id))

        # Re-running the intent that adds them: fork from the spec the source was given,
        # so the coordinator adds them again.
        worker.calls.clear()
        again = await rt.fork(source.portfolio_id, rerun=["Plan"], spec=spec)
        assert again.status == "completed"
        assert sorted(worker.titles) == ["B", "C", "D"]
        assert titles_of(again, EventType.INTENT_COPIED) == ["A"]
        check_agrees(again, await rt.load(again.portfolio_id))


# ---------------------------------------------------------------------------- side effects


async def test_the_side_effects_a_copied_intent_completed_go_with_it():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock()) as rt:
        live = await rt.run(steps())
        # The source's log as a run with side effects (self.effect) journals them: A charged
        # a card, sent an email on its second try, and left an audit call in doubt.
        a = live.intents["A"].id
        done = next(event.seq for event in live.events
                    if event.type == "completed" and event.intent_id == a)
        raw = list(live.events._events)
        time = raw[done][1]
        raw[done:done] = [
            ("effect_started", time, a, {"name": "charge", "attempt": 1}),
            ("effect_completed", time, a, {"name": "charge", "value": {"id": "ch_1"}}),
            ("effect_started", time, a, {"name": "email", "attempt": 1}),
            ("effect_failed", time, a, {"name": "email", "error": "x", "error_type": "E"}),
            ("effect_started", time, a, {"name": "email", "attempt": 1}),
            ("effect_completed", time, a, {"name": "email", "value": None, "checked": True}),
            ("effect_started", time, a, {"name": "audit", "attempt": 1}),
        ]
        backend = rt._runs.backend
        source = openintent._plan.new_portfolio_id()
        log = backend.create_run(source, live.name, timebase=backend.timebase(live.portfolio_id))
        log.extend(raw)
        _KEEP.append(log)
        worker.calls.clear()
        fork = await rt.fork(source, rerun=["B"])

    assert "A" not in worker.calls  # so its effects did not run again
    copied = {event.title: event.data for event in fork.events
              if event.type == EventType.INTENT_COPIED}
    assert copied["A"]["effects"] == [
        {"name": "charge", "value": {"id": "ch_1"}, "attempts": 1},
        {"name": "email", "value": None, "attempts": 2, "checked": True}]  # audit: in doubt
    assert "effects" not in copied["D"]  # none: nothing to say
    assert [(effect.name, effect.status, effect.value, effect.attempts, effect.checked)
            for effect in fork.intents["A"].effects] == [
        ("charge", "completed", {"id": "ch_1"}, 1, False),
        ("email", "completed", None, 2, True)]
    assert fork.intents["D"].effects == ()
    assert_replay_matches(fork)


async def test_a_copied_intents_effects_are_copied_a_rerun_intents_run_again(tmp_path: Path):
    charged: list[str] = []

    def charge(title: str) -> dict[str, str]:
        charged.append(title)
        return {"charge": f"ch_{title}_{len(charged)}"}

    @Agent("payer")
    class Payer:
        @on_assignment
        async def pay(self, intent: Any) -> dict[str, Any]:
            receipt = await self.effect(intent, "charge", charge, intent.title)
            return {"receipt": receipt["charge"]}

    spec = PortfolioSpec("pay", [IntentSpec("Pay", assign="payer"),
                                 IntentSpec("Ship", assign="payer", depends_on=["Pay"])])
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    async with Runtime(agents=[Payer()], clock=VirtualClock(), store=store) as rt:
        source = await rt.run(spec)
    async with Runtime(agents=[Payer()], clock=VirtualClock(), store=store) as rt:
        fork = await rt.fork(source.portfolio_id, rerun=["Ship"])
        loaded = await rt.load(fork.portfolio_id)
    assert charged == ["Pay", "Ship", "Ship"]  # Pay's charge never ran again
    assert fork.intents["Pay"].effects == source.intents["Pay"].effects
    assert fork.intents["Pay"].effects[0].value == {"charge": "ch_Pay_1"}
    assert fork.intents["Ship"].effects[0].value == {"charge": "ch_Ship_3"}  # a fresh run
    check_agrees(fork, loaded)
    assert loaded.intents["Pay"].effects == source.intents["Pay"].effects


# ---------------------------------------------------------------------------- approvals


async def test_a_rerun_intent_asks_for_approval_again_a_copied_one_does_not():
    approval = {"type": "approval", "require_for": ["A", "C"], "approvers": ["alice"]}
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), guardrails=[approval]) as rt:
        handle = await rt.start(steps())
        async for event in handle.events():
            if event.type == "approval_requested":
                await handle.approve(event.intent_id or "", by="alice")
        source = await handle.result()
        assert titles_of(source, "approval_requested") == ["A", "C"]

        forked = await rt.start_fork(source.portfolio_id, rerun=["B"])
        async for event in forked.events():
            if event.type == "approval_requested":
                await forked.approve(event.intent_id or "", by="alice")
        fork = await forked.result()
    assert fork.status == "completed"
    assert titles_of(fork, "approval_requested") == ["C"]  # A was copied: not asked again
    assert len(source.decisions) == 2
    # Only the fork's own decision (C's approval): the source's are not copied.
    assert [(decision.portfolio_id, decision.intent_id) for decision in fork.decisions] == [
        (fork.portfolio_id, fork.intents["C"].id)]
    assert_replay_matches(fork)
