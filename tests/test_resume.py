"""Resuming a run from its log (``rt.resume``, ``rt.start_resume``) on ``memory://``.

A memory store keeps a run while its result is held, so these resume in the process that ran
it. A crashed process leaves a log that is a prefix of what the run would have logged: the
``crashed`` helper puts such a prefix into the runtime's store under a new id (the SIGKILL
test does it for real, on SQLite). Time is virtual throughout.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

import openintent
from openintent import (
    ResumeMismatchError,
    RunInUseError,
    RunNotFoundError,
    Runtime,
    VirtualClock,
)
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
)
from openintent.models import EventType, RetryPolicy, RunResult
from openintent.testing import assert_replay_matches

from _helpers import NO_DELAY, statuses

pytestmark = pytest.mark.asyncio

_KEEP: list[Any] = []  # crashed logs: a memory store holds runs weakly


def crashed(rt: Runtime, result: RunResult, upto: int) -> str:
    """Put the first ``upto`` events of ``result``'s log into ``rt``'s store as a new run,
    as a process killed at that point leaves it; return the new run's id."""
    backend = rt._runs.backend
    run_id = openintent._plan.new_portfolio_id()
    log = backend.create_run(run_id, result.name,
                             timebase=backend.timebase(result.portfolio_id))
    log.extend(result.events._events[:upto])
    _KEEP.append(log)
    return run_id


def after(result: RunResult, event_type: str, title: str, nth: int = 1) -> int:
    """The length of the log up to and including the ``nth`` ``event_type`` of ``title``."""
    intent_id = result.intents[title].id
    seen = 0
    for event in result.events:
        if event.type == event_type and event.intent_id == intent_id:
            seen += 1
            if seen == nth:
                return event.seq + 1
    raise AssertionError(f"no {event_type} #{nth} of {title!r}")


def chain() -> PortfolioSpec:
    return PortfolioSpec("chain", [
        IntentSpec("A", assign="worker", initial_state={"n": 0}),
        IntentSpec("B", assign="worker", depends_on=["A"]),
        IntentSpec("C", assign="worker", depends_on=["B"]),
        IntentSpec("D", assign="worker"),
    ])


def worker_agent(seconds: dict[str, float] | None = None, cost: float = 0.0) -> Any:
    @Agent("worker")
    class Worker:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int, str]] = []

        @on_assignment
        async def work(self, intent):
            self.calls.append((intent.title, intent.attempt, intent.idempotency_key))
            await openintent.sleep((seconds or {}).get(intent.title, 1.0))
            if cost:
                await self.record_cost(intent, cost)
            return {"done": intent.title, "attempt": intent.attempt}

    return Worker()


def same_events(these: list[Any], those: list[Any]) -> bool:
    """The same events, but for the portfolio id (a crashed copy has its own)."""
    return [event._replace(portfolio_id="") for event in these] == [
        event._replace(portfolio_id="") for event in those]


def states(result: RunResult) -> dict[str, Any]:
    return {title: (str(item.status), {k: v for k, v in item.state.items() if k != "attempt"})
            for title, item in result.intents.items()}


# ---------------------------------------------------------------------------- after a crash


async def test_after_a_crash_completed_intents_stay_done_and_in_flight_ones_run_again():
    worker = worker_agent({"D": 0.5})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(chain())
        cut = after(live, "dispatched", "B")  # B in flight, D (0.5 s) done, A done
        crashed_id = crashed(rt, live, cut)
        worker.calls.clear()
        resumed = await rt.resume(crashed_id)

    assert resumed.status == "completed"
    assert resumed.portfolio_id == crashed_id
    # Only B (its next attempt, past max_attempts=1) and C ran; nothing completed ran again.
    assert [(title, attempt) for title, attempt, _ in worker.calls] == [("B", 2), ("C", 1)]
    assert states(resumed) == states(live)
    assert resumed.intents["B"].attempts == 2
    # The idempotency key is the same across attempts and the restart: the intent's id.
    keys = {key for title, _, key in worker.calls if title == "B"}
    assert keys == {live.intents["B"].id} == {resumed.intents["B"].id}
    # One log, seq contiguous; the resume is an event; the crashed prefix is unchanged.
    assert [event.seq for event in resumed.events] == list(range(len(resumed.events)))
    assert same_events(list(resumed.events)[:cut], list(live.events)[:cut])
    (marker,) = resumed.events.of_type("run_resumed")
    assert marker.seq == cut
    assert dict(marker.data) == {"from": "running", "reopened": [live.intents["B"].id],
                                 "timebase": marker.data["timebase"]}
    assert resumed.events.types()[-1] == "run_finished"
    b_events = resumed.events.for_intent("B").types()
    assert b_events.count("dispatched") == 2 and b_events.count("completed") == 1


async def test_retry_counts_carry_over_a_resume():
    @Agent("flaky")
    class Flaky:
        def __init__(self) -> None:
            self.attempts: list[int] = []

        @on_assignment
        async def work(self, intent):
            self.attempts.append(intent.attempt)
            if intent.attempt <= 2:
                raise RuntimeError(f"boom {intent.attempt}")
            return {"ok": intent.attempt}

    flaky = Flaky()
    spec = PortfolioSpec("retries", [
        IntentSpec("X", assign="flaky", retry=RetryPolicy(max_attempts=3, **NO_DELAY))])
    async with Runtime(agents=[flaky], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(spec)
        crashed_id = crashed(rt, live, after(live, "retry_scheduled", "X"))  # 1 failed
        flaky.attempts.clear()
        resumed = await rt.resume(crashed_id)

    assert live.intents["X"].attempts == 3
    assert flaky.attempts == [2, 3]  # not 1, 2, 3 again
    assert resumed.status == "completed"
    assert resumed.intents["X"].attempts == 3
    assert dict(resumed.intents["X"].state) == {"ok": 3}


async def test_a_run_that_crashed_before_run_finished_with_everything_done_just_ends():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(chain())
        crashed_id = crashed(rt, live, len(live.events) - 1)  # no run_finished
        worker.calls.clear()
        resumed = await rt.resume(crashed_id)
    assert worker.calls == []
    assert resumed.status == "completed"
    assert statuses(resumed) == statuses(live)
    assert resumed.events.types()[-2:] == ["run_resumed", "run_finished"]


# ---------------------------------------------------------------------------- ended runs


@pytest.mark.parametrize("fails", [False, True])
async def test_resuming_a_completed_or_failed_run_returns_its_result_and_runs_nothing(fails):
    @Agent("worker")
    class Worker:
        calls = 0

        @on_assignment
        async def work(self, intent):
            Worker.calls += 1
            if fails and intent.title == "B":
                raise RuntimeError("no")
            return {"done": intent.title}

    async with Runtime(agents=[Worker()], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(chain())
        length = len(live.events)
        calls = Worker.calls
        again = await rt.resume(live.portfolio_id)
        handle = await rt.start_resume(live.portfolio_id)
        streamed = [event async for event in handle.events()]
        by_handle = await handle.result()
        with_spec = await rt.resume(live.portfolio_id, chain())

    assert Worker.calls == calls
    assert len(live.events._events) == length  # nothing written
    loaded = await rt.load(live.portfolio_id)
    assert again.to_dict() == loaded.to_dict()
    assert streamed == list(live.events)
    assert_replay_matches(again)
    for result in (again, by_handle, with_spec):
        assert result.status == live.status == ("failed" if fails else "completed")
        assert statuses(result) == statuses(live)
        assert list(result.events) == list(live.events)
        assert result.decisions == live.decisions
        assert result.error == live.error
    assert handle.portfolio_id == live.portfolio_id and handle.done


async def test_an_unknown_run_id_is_not_found():
    async with Runtime(agents=[worker_agent()], clock=VirtualClock()) as rt:
        with pytest.raises(RunNotFoundError, match="pf_nope"):
            await rt.resume("pf_nope")
        with pytest.raises(RunNotFoundError):
            await rt.start_resume("pf_nope")


# ---------------------------------------------------------------------------- halts, cancels


async def test_a_halted_run_resumed_with_a_raised_budget_continues_where_it_stopped():
    worker = worker_agent(cost=2.0)
    spec = PortfolioSpec("costly", [
        IntentSpec("A", assign="worker"),
        IntentSpec("B", assign="worker", depends_on=["A"]),
        IntentSpec("C", assign="worker", depends_on=["B"]),
    ])
    budget = {"type": "budget", "max_cost_usd": 3.0, "warn_at": 0.5}
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[budget]) as rt:
        halted = await rt.run(spec)
        assert halted.status == "halted"
        # B's cost went over: B is cancelled, C never started.
        assert statuses(halted) == {"A": "completed", "B": "cancelled", "C": "pending"}
        worker.calls.clear()
        # Resumed as it was, it stops again at once: the spend is over this budget.
        again = await rt.resume(halted.portfolio_id)
        assert again.status == "halted" and worker.calls == []
        raised = {"type": "budget", "max_cost_usd": 100.0, "warn_at": 0.5}
        resumed = await rt.resume(halted.portfolio_id, guardrails=[raised])
        ended = await rt.resume(halted.portfolio_id)  # completed now: its result again
        assert ended.to_dict() == resumed.to_dict()
        assert (await rt.load(halted.portfolio_id)).to_dict() == resumed.to_dict()

    assert [(title, attempt) for title, attempt, _ in worker.calls] == [("B", 2), ("C", 1)]
    assert resumed.status == "completed"
    assert resumed.cost_usd == pytest.approx(8.0)  # the spend carried over: 4 + 2 + 2
    assert resumed.breach is None
    markers = resumed.events.of_type("run_resumed")
    assert [marker.data["from"] for marker in markers] == ["halted", "halted"]
    assert markers[-1].data["guardrails"] == [raised]
    # The old result is a snapshot: it does not grow with the resumed run's events.
    assert halted.events.types()[-1] == "run_finished"
    assert len(resumed.events) > len(halted.events)


async def test_budget_warnings_are_not_given_twice_and_spend_carries_over_a_crash():
    worker = worker_agent(cost=2.0)
    spec = PortfolioSpec("costly", [IntentSpec(title, assign="worker") for title in "ABCD"])
    budget = {"type": "budget", "max_cost_usd": 100.0, "warn_at": 0.01}
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[budget]) as rt:
        live = await rt.run(spec)
        assert len(live.events.of_type("budget_warning")) == 1
        cut = live.events.of_type("budget_warning")[0].seq + 1
        crashed_id = crashed(rt, live, cut)
        spent = sum(event.data["usd"] for event in live.events[:cut].of_type("cost_recorded"))
        worker.calls.clear()
        resumed = await rt.resume(crashed_id)
    assert resumed.status == "completed"
    assert len(resumed.events.of_type("budget_warning")) == 1
    assert worker.calls  # it spent more after the resume, past warn_at, without a warning
    assert resumed.cost_usd == pytest.approx(spent + 2.0 * len(worker.calls))


async def test_a_cancelled_run_resumes_its_cancelled_intents():
    worker = worker_agent({"B": 50.0})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(chain())
        async for event in handle.events():
            if event.type == "dispatched" and event.title == "B":
                break
        await handle.cancel()
        cancelled = await handle.result()
        assert cancelled.status == "cancelled"
        assert statuses(cancelled)["B"] == "cancelled"
        worker.calls.clear()
        resumed = await rt.resume(cancelled.portfolio_id)
    assert resumed.status == "completed"
    assert [(title, attempt) for title, attempt, _ in worker.calls] == [("B", 2), ("C", 1)]
    assert_replay_matches(resumed)
    (marker,) = resumed.events.of_type("run_resumed")
    assert marker.data["from"] == "cancelled"
    assert set(marker.data["reopened"]) == {cancelled.intents["B"].id,
                                            cancelled.intents["C"].id}


async def test_a_run_timeout_keeps_its_deadline_and_the_downtime_does_not_count():
    worker = worker_agent({"A": 60.0, "B": 50.0})
    spec = PortfolioSpec("timed", [
        IntentSpec("A", assign="worker"),
        IntentSpec("B", assign="worker", depends_on=["A"]),
    ])
    clock = VirtualClock()
    async with Runtime(agents=[worker], clock=clock, seed=0,
                       guardrails=[{"type": "timeout", "max_seconds": 100}]) as rt:
        live = await rt.run(spec)
        assert live.status == "halted"  # at 100 s, B (60 + 50) still running
        crashed_id = crashed(rt, live, after(live, "dispatched", "B"))  # at 60 s
        await clock.sleep(1000)  # the process was dead for a while: not counted
        resumed_at = clock.now()
        resumed = await rt.resume(crashed_id)
        assert resumed.status == "halted"
        assert resumed.breach.guardrail == "timeout"
        assert resumed.breach.observed == pytest.approx(100.0)
        finished = resumed.events.of_type("run_finished")[-1]
        assert finished.time == pytest.approx(resumed_at + 40.0)
        longer = await rt.resume(crashed_id,
                                 guardrails=[{"type": "timeout", "max_seconds": 200}])
        assert longer.status == "completed"
        # Resumed as it was, a run that used up its time halts at once, dispatching nothing.
        length = len(live.events._events)
        again = await rt.resume(live.portfolio_id)
    assert again.status == "halted" and again.breach.guardrail == "timeout"
    assert "dispatched" not in again.events.types()[length:]


# ---------------------------------------------------------------------------- approvals


def approval_spec() -> PortfolioSpec:
    return PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])


APPROVAL = {"type": "approval", "require_for": ["Deploy"], "approvers": ["alice"]}


async def test_a_pending_approval_is_pending_again_after_a_resume_and_can_be_approved():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[APPROVAL]) as rt:
        handle = await rt.start(approval_spec())
        async for event in handle.events():
            if event.type == "approval_requested":
                break
        await handle.cancel()  # stopped while it waited for alice
        stopped = await handle.result()
        assert statuses(stopped)["Deploy"] == "cancelled"
        resumed = await rt.start_resume(stopped.portfolio_id)
        async for event in resumed.events():
            if event.type == "approval_requested" and event.seq > len(stopped.events):
                break
        (request,) = resumed.pending_approvals()
        assert request.title == "Deploy"
        await resumed.approve("Deploy", by="alice")
        result = await resumed.result()
    assert result.status == "completed"
    assert [title for title, _, _ in worker.calls] == ["Build", "Deploy"]


async def test_an_approval_granted_before_a_crash_is_not_asked_again():
    worker = worker_agent({"Deploy": 10.0})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[APPROVAL]) as rt:
        handle = await rt.start(approval_spec())
        async for event in handle.events():
            if event.type == "approval_requested":
                await handle.approve("Deploy", by="alice")
        live = await handle.result()
        crashed_id = crashed(rt, live, after(live, "dispatched", "Deploy"))
        resumed = await rt.resume(crashed_id)  # would wait forever if it asked again
    assert resumed.status == "completed"
    assert len(resumed.events.of_type("approval_requested")) == 1
    assert resumed.intents["Deploy"].attempts == 2


# ---------------------------------------------------------------------------- refusals


async def test_a_different_spec_or_coordinator_is_refused_with_a_diff_and_nothing_written():
    @Coordinator("boss")
    class Boss:
        pass

    worker = worker_agent()
    async with Runtime(agents=[worker, Boss], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(chain())
        crashed_id = crashed(rt, live, after(live, "dispatched", "B"))
        length = len(_KEEP[-1])
        changed = PortfolioSpec("chain", [
            *chain().intents[:3], IntentSpec("D", assign="worker", timeout=30)])
        with pytest.raises(ResumeMismatchError) as caught:
            await rt.resume(crashed_id, changed)
        assert "intent 'D': timeout (default) -> 30" in str(caught.value)
        assert crashed_id in str(caught.value)
        with pytest.raises(ResumeMismatchError, match="coordinator None -> 'boss'"):
            await rt.resume(crashed_id, coordinator=Boss)
        assert len(_KEEP[-1]) == length
        # The same spec is accepted (and so is none).
        resumed = await rt.resume(crashed_id, chain())
    assert resumed.status == "completed"


async def test_a_second_resume_of_a_run_at_once_is_refused_by_the_run_lease():
    gate = anyio.Event()

    @Agent("worker")
    class Waiter:
        @on_assignment
        async def work(self, intent):
            if intent.attempt > 1:
                await gate.wait()
            return {"done": intent.title}

    async with Runtime(agents=[Waiter()], clock=VirtualClock(deadlock_after=None),
                       seed=0) as rt:
        live = await rt.run(chain())
        crashed_id = crashed(rt, live, after(live, "dispatched", "B"))
        first = await rt.start_resume(crashed_id)
        for _ in range(100):
            await anyio.lowlevel.checkpoint()
        with pytest.raises(RunInUseError):
            await rt.resume(crashed_id)
        with pytest.raises(RunInUseError):
            await rt.start_resume(crashed_id)
        gate.set()
        assert (await first.result()).status == "completed"
        # The lease went back with the end of the resume.
        assert (await rt.resume(crashed_id)).status == "completed"


async def test_the_run_lease_is_released_when_a_resume_fails_or_is_cancelled():
    worker = worker_agent({"B": 50.0})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(chain())
        crashed_id = crashed(rt, live, after(live, "dispatched", "B"))
    async with Runtime(agents=[], clock=VirtualClock(), seed=0) as other:
        other._runs.backend = rt._runs.backend  # the same store, no agents
        with pytest.raises(openintent.errors.UnknownAgentError):
            await other.resume(crashed_id)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as again:
        again._runs.backend = rt._runs.backend
        handle = await again.start_resume(crashed_id)  # not refused: the lease went back
        async for event in handle.events():
            if event.type == "dispatched" and event.seq > after(live, "dispatched", "B"):
                break
        await handle.cancel()
        assert (await handle.result()).status == "cancelled"
        assert (await again.resume(crashed_id)).status == "completed"


async def test_a_run_going_on_cannot_be_resumed_meanwhile():
    worker = worker_agent({"B": 50.0})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(chain())
        await anyio.lowlevel.checkpoint()
        with pytest.raises(RunInUseError, match="going on in this runtime"):
            await rt.resume(handle.portfolio_id)
        await handle.result()


# ---------------------------------------------------------------------------- the rest


async def test_decisions_go_on_with_the_next_ids():
    @Coordinator("lead")
    class Lead:
        @on_assignment
        async def work(self, intent):
            await self.record_decision(intent.id, decision="chose", rationale=intent.title)
            await openintent.sleep(1)
            return {"done": intent.title}

    spec = PortfolioSpec("decide", [IntentSpec("A"), IntentSpec("B", depends_on=["A"])])
    async with Runtime(agents=[Lead], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(spec, coordinator=Lead)
        async for event in handle.events():
            if event.type == "completed":
                break
        await handle.cancel()
        stopped = await handle.result()
        resumed = await rt.resume(stopped.portfolio_id)
    assert resumed.status == "completed"
    ids = [decision.id for decision in resumed.decisions]
    assert len(ids) > len(stopped.decisions)
    assert ids[:len(stopped.decisions)] == [d.id for d in stopped.decisions]
    token = stopped.portfolio_id[3:]
    assert ids == [f"dc_{token}_{number}" for number in range(len(ids))]


async def test_an_intent_a_coordinator_added_mid_run_is_rebuilt_from_the_log():
    @Coordinator("planner")
    class Planner:
        @on_assignment
        async def plan(self, intent):
            if intent.title == "Plan" and intent.attempt == 1:
                await self.add_intent(IntentSpec("Extra", assign="worker", depends_on=["Plan"]))
            return {"planned": True}

    worker = worker_agent({"Extra": 5.0})
    spec = PortfolioSpec("grow", [IntentSpec("Plan"), IntentSpec("Other", assign="worker")])
    async with Runtime(agents=[worker, Planner], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(spec, coordinator=Planner)
        assert set(live.intents) == {"Plan", "Other", "Extra"}
        crashed_id = crashed(rt, live, after(live, "dispatched", "Extra"))
        worker.calls.clear()
        # The spec the run was given still matches: the added intent is the log's own.
        resumed = await rt.resume(crashed_id, spec)
    assert resumed.status == "completed"
    # Other (1 s) and Extra (added at 0 s, 5 s) were both in flight.
    assert sorted((title, attempt) for title, attempt, _ in worker.calls) == [
        ("Extra", 2), ("Other", 2)]
    assert statuses(resumed) == statuses(live)


async def test_an_interrupted_sub_portfolio_is_run_again_by_its_coordinators_next_attempt():
    @Coordinator("boss")
    class Boss:
        @on_assignment
        async def run_sub(self, intent):
            sub = await self.execute(PortfolioSpec("sub", [
                IntentSpec("S1", assign="worker"), IntentSpec("S2", assign="worker")]))
            return {"sub": str(sub.status), "attempt": intent.attempt}

    worker = worker_agent({"S2": 5.0})
    async with Runtime(agents=[worker, Boss], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(PortfolioSpec("top", [IntentSpec("Outer")]), coordinator=Boss)
        cut = after(live, "dispatched", "Outer")
        crashed_id = crashed(rt, live, cut)
        worker.calls.clear()
        resumed = await rt.resume(crashed_id)
    assert resumed.status == "completed"
    assert dict(resumed.intents["Outer"].state) == {"sub": "completed", "attempt": 2}
    assert sorted(title for title, _, _ in worker.calls) == ["S1", "S2"]


async def test_streams_of_a_resumed_run_end_with_its_own_run_finished():
    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(chain())
        async for event in handle.events():
            if event.type == "completed":
                break
        await handle.cancel()
        stopped = await handle.result()
        resumed = await rt.start_resume(stopped.portfolio_id)
        # rt.events(): the runs going on, a resumed one from its run_resumed.
        live = [event async for event in rt.events()]
        whole = [event async for event in resumed.events()]  # the whole log
        result = await resumed.result()
    assert [event.seq for event in whole] == list(range(len(result.events)))
    assert whole[-1].type == "run_finished" and whole[-1].seq == len(result.events) - 1
    assert [event.seq for event in live] == list(range(len(stopped.events),
                                                       len(result.events)))
    assert live[0].type == "run_resumed" and live[-1].type == "run_finished"


async def test_run_resumed_is_a_known_event_type():
    assert EventType.RUN_RESUMED == "run_resumed"
    assert "run_resumed" in EventType.ALL


WORKFLOW = """\
openintent: "1.0"
info:
  name: "Resumable"
coordinator:
  id: yaml-lead
  guardrails:
    - type: budget
      max_cost_usd: 10.0
workflow:
  write:
    title: "Write"
    assign: worker
    outputs: {done: string}
  publish:
    title: "Publish"
    assign: worker
    depends_on: [write]
    requires_approval: true
"""


async def test_a_yaml_workflow_run_resumes_with_its_workflow_given(tmp_path):
    from openintent.workflow import load_workflow

    path = tmp_path / "resumable.yaml"
    path.write_text(WORKFLOW)
    workflow = load_workflow(path)
    worker = worker_agent({"Write": 5.0})
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(workflow)
        async for event in handle.events():
            if event.type == "approval_requested":
                await handle.approve("Publish", by="me")
        live = await handle.result()
        assert live.status == "completed"
        crashed_id = crashed(rt, live, after(live, "dispatched", "Write"))
        # Its outputs check is the workflow's (and so is its coordinator, in a new runtime).
        with pytest.raises(ResumeMismatchError, match="workflow_outputs.*YAML workflow"):
            await rt.resume(crashed_id)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt2:
        rt2._runs.backend = rt._runs.backend
        with pytest.raises(openintent.errors.UnknownAgentError, match="YAML workflow"):
            await rt2.resume(crashed_id)
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        rt._runs.backend = rt2._runs.backend
        resumed = await rt.start_resume(crashed_id, workflow)
        async for event in resumed.events():
            if event.type == "approval_requested":
                await resumed.approve("Publish", by="me")
        result = await resumed.result()
    assert result.status == "completed"
    assert states(result) == states(live)
    assert [title for title, _, _ in worker.calls][-2:] == ["Write", "Publish"]


async def test_events_keep_the_dates_of_the_process_that_logged_them():
    from datetime import UTC, datetime, timedelta

    worker = worker_agent({"B": 5.0})
    first = datetime(2025, 1, 1, tzinfo=UTC)
    async with Runtime(agents=[worker], clock=VirtualClock(start=first), seed=0) as rt:
        live = await rt.run(chain())
        cut = after(live, "dispatched", "B")
        crashed_id = crashed(rt, live, cut)
    later = datetime(2026, 6, 1, tzinfo=UTC)
    async with Runtime(agents=[worker], clock=VirtualClock(start=later), seed=0) as other:
        other._runs.backend = rt._runs.backend  # the same store, read by another process
        resumed = await other.resume(crashed_id)
    assert [event.at for event in resumed.events[:cut]] == [
        event.at for event in live.events[:cut]]
    assert list((await other.load(crashed_id)).events) == list(resumed.events)
    marker = resumed.events[cut]
    assert marker.type == "run_resumed" and marker.at == later
    assert marker.data["timebase"] == later.timestamp()
    assert resumed.events[-1].at == later + timedelta(seconds=resumed.events[-1].time)


async def test_a_function_guardrail_is_taken_from_the_runtime_or_the_resume_is_refused():
    seen: list[tuple[str, int]] = []

    async def audit(ctx, call_next):
        seen.append((ctx.title, ctx.attempt))
        return await call_next(ctx)

    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0,
                       guardrails=[audit]) as rt:
        live = await rt.run(chain())
        crashed_id = crashed(rt, live, after(live, "dispatched", "B"))
        seen.clear()
        resumed = await rt.resume(crashed_id)
    assert resumed.status == "completed"
    assert ("B", 2) in seen and ("C", 1) in seen and ("A", 2) not in seen
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as bare:
        bare._runs.backend = rt._runs.backend  # the same store, a runtime without audit
        crashed_again = crashed(bare, live, after(live, "dispatched", "B"))
        with pytest.raises(ResumeMismatchError, match="audit"):
            await bare.resume(crashed_again)
        seen.clear()
        # New guardrails replace the log's: the run goes on without the audit.
        without = await bare.resume(crashed_again, guardrails=[])
    assert without.status == "completed" and seen == []


async def test_an_interrupted_last_attempt_goes_on_with_the_last_fallback_agent():
    @Agent("first")
    class First:
        @on_assignment
        async def work(self, intent):
            raise RuntimeError("first is down")

    second = worker_agent({"X": 5.0})
    spec = PortfolioSpec("fallback", [IntentSpec(
        "X", assign="first", retry=RetryPolicy(max_attempts=1, fallback=["worker"], **NO_DELAY))])
    async with Runtime(agents=[First(), second], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(spec)
        crashed_id = crashed(rt, live, after(live, "dispatched", "X", nth=2))
        second.calls.clear()
        resumed = await rt.resume(crashed_id)
    assert resumed.status == "completed"
    assert [(title, attempt) for title, attempt, _ in second.calls] == [("X", 3)]
    assert resumed.intents["X"].assigned_to == "worker"


async def test_hooks_hear_the_events_since_the_resume_and_guardrails_do_not_act_twice():
    from openintent.agents import on_event
    from openintent.guardrails import Guardrail

    openintent.register_event_type("seen_done")
    heard: list[str] = []

    class Echoes(Guardrail):
        type = "echoes"

        def bind(self, run):
            fresh = Echoes()
            fresh.run = run
            return fresh

        def on_event(self, event):
            if event.type == "completed":
                self.run.emit("seen_done", event.intent_id, {})

        def to_data(self):
            return {"type": "echoes_unregistered"}

    @Coordinator("lead")
    class Lead:
        @on_event("completed")
        async def completed(self, event):
            heard.append(event.title)

    worker = worker_agent()
    async with Runtime(agents=[worker, Lead], clock=VirtualClock(), seed=0,
                       guardrails=[Echoes()]) as rt:
        live = await rt.run(chain(), coordinator=Lead)
        cut = after(live, "dispatched", "B")
        crashed_id = crashed(rt, live, cut)
        done_before = [event.title for event in live.events[:cut].of_type("completed")]
        heard.clear()
        resumed = await rt.resume(crashed_id)
    assert resumed.status == "completed"
    assert sorted(heard) == sorted(set("ABCD") - set(done_before))
    echoed = [event.title for event in resumed.events.of_type("seen_done")]
    assert sorted(echoed) == list("ABCD")  # once each: history's were not echoed again


async def test_a_crash_at_any_point_resumes_to_what_the_run_would_have_reported():
    @Agent("flaky")
    class Flaky:
        @on_assignment
        async def work(self, intent):
            await openintent.sleep(1)
            if intent.attempt == 1:
                raise RuntimeError("first attempts fail")
            return {"done": intent.title}

    worker = worker_agent({"D": 2.5})
    spec = PortfolioSpec("mixed", [
        *chain().intents,
        IntentSpec("E", assign="flaky", depends_on=["A"],
                   retry=RetryPolicy(max_attempts=2, initial_delay=0.5, jitter=False)),
        IntentSpec("F", assign="worker", depends_on=["E", "D"]),
    ])
    # C waits for an approval that its timeout grants (so every cut point is deterministic).
    approval = {"type": "approval", "require_for": ["C"], "timeout_seconds": 5,
                "on_timeout": "approve"}
    async with Runtime(agents=[worker, Flaky()], clock=VirtualClock(), seed=0,
                       guardrails=[approval]) as rt:
        live = await rt.run(spec)
        assert live.status == "completed"
        assert live.events.of_type("approval_granted")
        planned = 1 + len(spec.intents)  # run_started and the created events: one batch
        for cut in range(planned, len(live.events) + 1):
            resumed = await rt.resume(crashed(rt, live, cut))
            assert resumed.status == "completed", cut
            loaded = await rt.load(resumed.portfolio_id)  # read back: the same run
            assert loaded.to_dict() == resumed.to_dict(), cut
            assert_replay_matches(resumed)  # the testing kit's own reading of the log
            assert states(resumed) == states(live), cut
            seqs = [event.seq for event in resumed.events]
            assert seqs == list(range(len(seqs))), cut
            assert same_events(list(resumed.events)[:cut], list(live.events)[:cut]), cut
            for title, item in resumed.intents.items():  # at most one more attempt each
                assert item.attempts <= live.intents[title].attempts + 1, (cut, title)
            granted = live.events[:cut].of_type("approval_granted")
            asked = resumed.events[cut:].of_type("approval_requested")
            assert not (granted and asked), cut  # a granted approval is not asked again


async def test_the_progress_view_follows_a_resumed_run_without_its_downtime():
    from openintent._progress import Progress, event_line

    worker = worker_agent({"B": 50.0})
    clock = VirtualClock()
    async with Runtime(agents=[worker], clock=clock, seed=0) as rt:
        handle = await rt.start(chain())
        async for event in handle.events():
            if event.type == "dispatched" and event.title == "B":
                break
        await clock.sleep(10)
        await handle.cancel()
        stopped = await handle.result()
        await clock.sleep(1000)  # stopped for a while
        resumed = await rt.resume(stopped.portfolio_id)
    progress = Progress()
    lines = []
    for event in resumed.events:
        progress.add(event)
        lines.append(event_line(event, progress))
        if event.type == "run_resumed":
            b = progress.intents[resumed.intents["B"].id]
            assert b.status == "pending" and progress.status == "running"
    assert progress.status == "completed"
    ran = stopped.events[-1].time - stopped.events[0].time  # 11 s, then 50 + 1 more
    assert progress.elapsed == pytest.approx(ran + 51.0)
    assert f"run chain ({resumed.portfolio_id}) resumed (it was cancelled): 2 intent(s) " \
           "reopened" in lines


async def test_the_replay_oracle_refuses_a_resume_that_reopens_a_finished_intent():
    from openintent.testing._oracle import derive

    worker = worker_agent()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        live = await rt.run(chain())
        resumed = await rt.resume(crashed(rt, live, after(live, "dispatched", "B")))
    events = list(resumed.events)
    (marker,) = [event for event in events if event.type == "run_resumed"]
    assert derive(events).problems == []
    forged = marker._replace(data={**marker.data, "reopened": [live.intents["A"].id]})
    events[marker.seq] = forged
    problems = derive(events).problems
    assert problems[0] == (
        f"event #{marker.seq} (run_resumed, intent None) reopens 'A', which was completed")
    assert any("while 'B' was running (expected pending)" in line for line in problems)


async def test_resume_works_without_async_with_but_not_on_a_closed_runtime():
    worker = worker_agent()
    rt = Runtime(agents=[worker], clock=VirtualClock(), seed=0)
    live = await rt.run(chain())
    resumed = await rt.resume(crashed(rt, live, after(live, "dispatched", "B")))
    assert resumed.status == "completed"
    with pytest.raises(openintent.OpenIntentError, match="needs|async with"):
        await rt.start_resume(live.portfolio_id)
    async with rt:
        pass
    with pytest.raises(openintent.OpenIntentError, match="closed"):
        await rt.resume(live.portfolio_id)
