"""The approval guardrail: a matching intent waits for a decision, only listed approvers
decide, exactly one decision wins, an undecided request takes its timeout outcome; a denied
intent was never dispatched, so it fails with no attempt and says who (or what) denied it.

The tests that drive a run from the test while it waits use instant handlers, bounded polling
and a generous real-time ``fail_after`` that only a hang reaches (they time nothing); the
timeout outcome runs on a virtual clock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import (
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_approval_denied,
    on_approval_granted,
    on_event,
)
from openintent.errors import ApprovalError
from openintent.testing import SimulatedAgent, replay

from _helpers import NO_DELAY, bounded, of_type, statuses

pytestmark = pytest.mark.asyncio


HANG_GUARD = 10  # real seconds; only a regression that hangs ever waits this long


async def wait_for_requests(rt: Runtime, count: int = 1) -> list[Any]:
    """Poll ``rt.pending_approvals()`` until ``count`` requests wait (bounded)."""
    for _ in range(20_000):
        pending = rt.pending_approvals()
        if len(pending) >= count:
            return pending
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"expected {count} approval request(s), got {rt.pending_approvals()}")


def approval_lead(calls: list[tuple[str, str, Any]], **approval: Any) -> Any:
    @Coordinator("lead", guardrails=[{"type": "approval", **approval}])
    class Lead:
        @on_approval_granted
        async def granted(self, intent, request):
            calls.append(("granted", intent.title, request))

        @on_approval_denied
        async def denied(self, intent, request):
            calls.append(("denied", intent.title, request))

    return Lead


@asynccontextmanager
async def run_in_background(
    rt: Runtime, spec: PortfolioSpec, **kwargs: Any
) -> AsyncIterator[dict[str, Any]]:
    """Run ``spec`` in a task while the body acts on ``rt`` (approves, denies, looks);
    ``seen["result"]`` is the run's result once the block exits. The body may put what it
    saw into ``seen`` too."""
    seen: dict[str, Any] = {}
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                seen["result"] = await rt.run(spec, **kwargs)

            tg.start_soon(run)
            yield seen


async def test_a_matching_intent_waits_for_approval_then_runs(captured_events):
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])
    async with Runtime(agents=[worker]) as rt:
        async with run_in_background(rt, spec, coordinator=lead) as seen:
            [request] = await wait_for_requests(rt)
            seen["titles before"] = list(worker.titles)
            seen["status before"] = replay(captured_events)["Deploy"].status
            approved = await rt.approve(request.intent_id, by="alice", note="ship it")
            assert rt.pending_approvals() == []
    result = seen["result"]

    assert request.title == "Deploy"
    assert request.intent_id == result.intents["Deploy"].id
    assert seen["titles before"] == ["Build"]  # Deploy did not run while it waited
    assert seen["status before"] == "awaiting_approval"
    assert approved is request
    assert (request.decision, request.decided_by, request.note) == ("approved", "alice",
                                                                    "ship it")
    assert result.status == "completed"
    assert worker.titles == ["Build", "Deploy"]
    types = [event.type for event in result.events.for_intent(request.intent_id)
             if event.type != "decision_recorded"]
    assert types[types.index("approval_requested"):] == [
        "approval_requested", "approval_granted", "dispatched", "completed"]
    assert of_type(result, "approval_granted")[0].data["by"] == "alice"
    [decision] = result.decisions
    assert (decision.decision, decision.intent_id) == ("approval_granted", request.intent_id)
    assert decision.data == {"by": "alice"} and decision.rationale == "ship it"
    assert [(kind, title, req.decided_by) for kind, title, req in calls] == [
        ("granted", "Deploy", "alice")]


async def test_a_denied_intent_fails_without_running_and_its_dependents_are_skipped():
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("release", [
        IntentSpec("Deploy", assign="worker", retry={"max_attempts": 3, **NO_DELAY}),
        IntentSpec("Announce", assign="worker", depends_on=["Deploy"]),
        IntentSpec("Docs", assign="worker"),
    ])
    async with Runtime(agents=[worker]) as rt:
        async with run_in_background(rt, spec, coordinator=lead) as seen:
            [request] = await wait_for_requests(rt)
            await rt.deny(request.intent_id, by="bob", note="change freeze")
    result = seen["result"]

    assert result.status == "failed"
    assert statuses(result) == {"Deploy": "failed", "Announce": "skipped", "Docs": "completed"}
    assert worker.titles == ["Docs"]
    deploy = result.intents["Deploy"]
    assert deploy.error_type == "ApprovalError"
    assert "denied by bob: change freeze" in (deploy.error or "")
    assert of_type(result, "dispatched", "Deploy") == []
    assert of_type(result, "attempt_failed", "Deploy") == []  # never dispatched, not retried
    assert deploy.attempts == 0
    assert of_type(result, "retry_scheduled") == []
    assert [(d.decision, d.data) for d in result.decisions] == [
        ("approval_denied", {"by": "bob"})]
    assert [(kind, title, req.note) for kind, title, req in calls] == [
        ("denied", "Deploy", "change freeze")]


async def test_require_for_matches_title_step_key_or_tag_case_insensitively():
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["Deploy", "prod"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("matching", [
        IntentSpec("DEPLOY", assign="worker"),
        IntentSpec("Ship it", key="deploy", assign="worker"),
        IntentSpec("Migrate", tags=["db", "PROD"], assign="worker"),
        IntentSpec("Deploy docs", key="docs", tags=["staging"], assign="worker"),
    ])
    async with Runtime(agents=[worker]) as rt:
        async with run_in_background(rt, spec, coordinator=lead) as seen:
            pending = await wait_for_requests(rt, 3)
            for _ in range(50):  # give a wrongly matched fourth request time to show up
                await anyio.lowlevel.checkpoint()
            seen["pending"] = sorted(request.title for request in rt.pending_approvals())
            for request in pending:
                await rt.approve(request.intent_id, by="alice")
    result = seen["result"]

    assert seen["pending"] == ["DEPLOY", "Migrate", "Ship it"]
    assert result.status == "completed"
    assert sorted(title for _, title, _ in calls) == ["DEPLOY", "Migrate", "Ship it"]
    assert of_type(result, "approval_requested", "Deploy docs") == []
    assert len(of_type(result, "approval_granted")) == 3


async def test_only_listed_approvers_may_decide_and_a_refusal_changes_nothing(
    captured_events,
):
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"], approvers=["alice"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("release", [IntentSpec("Deploy", assign="worker")])
    async with Runtime(agents=[worker]) as rt:
        async with run_in_background(rt, spec, coordinator=lead) as seen:
            [request] = await wait_for_requests(rt)
            assert request.approvers == ("alice",)
            events_before = len(captured_events)
            with pytest.raises(ApprovalError, match="'mallory' may not decide"):
                await rt.approve(request.intent_id, by="mallory")
            with pytest.raises(ApprovalError, match="'mallory' may not decide"):
                await rt.deny(request.intent_id, by="mallory")
            with pytest.raises(ApprovalError, match="by="):
                await rt.approve(request.intent_id, by="")
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            seen["events unchanged"] = len(captured_events) == events_before
            seen["still pending"] = rt.pending_approvals() == [request]
            seen["undecided"] = request.decision is None and worker.calls == []
            await rt.approve(request.intent_id, by="alice")
    result = seen["result"]

    assert seen["events unchanged"] and seen["still pending"] and seen["undecided"]
    assert result.status == "completed"
    assert request.decided_by == "alice"
    assert [(kind, req.decided_by) for kind, _, req in calls] == [("granted", "alice")]
    assert len(result.decisions) == 1


async def test_concurrent_decisions_on_one_request_exactly_one_wins():
    calls: list[tuple[str, str, Any]] = []
    lead = approval_lead(calls, require_for=["deploy"])
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("race", [IntentSpec("Deploy", assign="worker")])
    outcomes: list[tuple[str, str]] = []
    async with Runtime(agents=[worker]) as rt:
        async with run_in_background(rt, spec, coordinator=lead) as seen:
            [request] = await wait_for_requests(rt)

            async def decide(approve: bool, who: str) -> None:
                decide = rt.approve if approve else rt.deny
                try:
                    await decide(request.intent_id, by=who)
                except ApprovalError as exc:
                    outcomes.append((who, f"refused: {exc}"))
                else:
                    outcomes.append((who, "won"))

            async with anyio.create_task_group() as deciders:
                deciders.start_soon(decide, True, "alice")
                deciders.start_soon(decide, False, "bob")
                deciders.start_soon(decide, True, "carol")
    result = seen["result"]

    winners = [who for who, outcome in outcomes if outcome == "won"]
    assert len(outcomes) == 3 and len(winners) == 1
    assert all("already decided" in outcome for who, outcome in outcomes if who not in winners)
    assert request.decided_by == winners[0]
    assert len(calls) == 1 and calls[0][2].decided_by == winners[0]
    assert len(result.decisions) == 1
    assert len(of_type(result, "approval_granted") + of_type(result, "approval_denied")) == 1
    expected = "completed" if request.decision == "approved" else "failed"
    assert result.intents["Deploy"].status == expected


async def test_deciding_a_request_that_does_not_exist_is_refused():
    async with Runtime(guardrails=[{"type": "approval", "require_for": ["x"]}]) as rt:
        with pytest.raises(ApprovalError, match="no approval request is pending"):
            await rt.approve("in_nope", by="alice")
        assert rt.pending_approvals() == []


async def test_approve_by_title_is_accepted_or_explained(
    runtime: Runtime, virtual_clock: VirtualClock
) -> None:
    @Coordinator("gate", guardrails=[{"type": "approval", "require_for": ["Deploy"]}])
    class Gate:
        pass

    SimulatedAgent("deployer", result={"deployed": True})
    messages: list[str] = []
    async with anyio.create_task_group() as tg:

        async def approver() -> None:
            for _ in range(10_000):  # the request is made at t=0, within a few steps
                if runtime.pending_approvals():
                    break
                await anyio.lowlevel.checkpoint()
            request = runtime.pending_approvals()[0]
            try:
                await runtime.approve("Deploy", by="alice")
            except openintent.ApprovalError as error:
                messages.append(str(error))
                await runtime.approve(request.intent_id, by="alice")

        tg.start_soon(approver)
        result = await runtime.run(
            PortfolioSpec("p", [IntentSpec("Deploy", assign="deployer")]), coordinator=Gate
        )
    assert result.status == "completed"
    assert not messages or "in_" in messages[0], messages


async def test_an_intent_matched_by_two_approval_guardrails_can_be_approved() -> None:
    errors: list[Exception] = []
    runtimes: list[Runtime] = []

    @Coordinator("lead", guardrails=[{"type": "approval", "require_for": ["deploy"]}])
    class Lead:
        @on_event("approval_requested")
        async def approve_it(self, event: Any) -> None:  # one request per guardrail
            try:
                await runtimes[0].approve(event.intent_id, by="alice")
            except Exception as exc:  # "already decided; nothing changed"
                errors.append(exc)

    SimulatedAgent("a", result={"v": 1})
    clock = VirtualClock(deadlock_after=0.1)
    async with Runtime(clock=clock, seed=0,
                       guardrails=[{"type": "approval", "require_for": ["deploy"]}]) as rt:
        runtimes.append(rt)
        result = await rt.run(PortfolioSpec("p", [IntentSpec("deploy", assign="a")]),
                              coordinator=Lead)
    assert errors == []
    assert result.status == "completed"


@pytest.mark.parametrize(("on_timeout", "expected"), [
    (None, "failed"), ("deny", "failed"), ("approve", "completed")])
async def test_an_undecided_request_takes_the_on_timeout_outcome_on_the_runtime_clock(
    on_timeout, expected
):
    calls: list[tuple[str, str, Any]] = []
    options = {} if on_timeout is None else {"on_timeout": on_timeout}
    lead = approval_lead(calls, require_for=["deploy"], timeout_seconds=3600, **options)
    worker = SimulatedAgent("worker", result={"ok": True})
    spec = PortfolioSpec("nobody home", [IntentSpec("Deploy", assign="worker")])
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        started = time.perf_counter()
        result = await bounded(rt, spec, lead)
        assert time.perf_counter() - started < 5  # an hour of virtual time, no real one

    assert result.intents["Deploy"].status == expected
    granted = expected == "completed"
    [decided] = of_type(result, "approval_granted" if granted else "approval_denied")
    assert decided.time == 3600.0
    assert decided.data["by"] == "timeout"
    assert [(d.decision, d.data["by"]) for d in result.decisions] == [
        ("approval_granted" if granted else "approval_denied", "timeout")]
    assert [(kind, title) for kind, title, _ in calls] == [
        ("granted" if granted else "denied", "Deploy")]
    assert worker.titles == (["Deploy"] if granted else [])
    if not granted:
        assert result.intents["Deploy"].error_type == "ApprovalError"


# -------------------------------------------------------------------------------------- denials


def gated(**approval: Any) -> tuple[PortfolioSpec, type]:
    @Coordinator("lead", guardrails=[{"type": "approval", "require_for": ["deploy"],
                                      **approval}])
    class Lead:
        pass

    spec = PortfolioSpec("release", [
        IntentSpec("Deploy", assign="worker", retry={"max_attempts": 3, "initial_delay": 0}),
        IntentSpec("Announce", assign="worker", depends_on=["Deploy"]),
    ])
    return spec, Lead


async def test_a_denied_intent_has_no_attempt_and_no_failed_attempt_in_its_log():
    worker = SimulatedAgent("worker", result={"ok": True})
    spec, lead = gated()
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        handle = await rt.start(spec, coordinator=lead)
        async for event in handle.events():
            if event.type == "approval_requested":
                await rt.deny("Deploy", by="bob", note="change freeze")
        result = await handle.result()

    deploy = result.intents["Deploy"]
    assert (deploy.status, deploy.attempts) == ("failed", 0)
    assert deploy.error == "intent 'Deploy' was denied by bob: change freeze"
    assert result.intents["Announce"].status == "skipped"
    types = [event.type for event in result.events.for_intent(deploy.id)
             if event.type != "decision_recorded"]
    assert types == ["created", "ready", "approval_requested", "approval_denied", "failed"]
    [failed] = result.events.of_type("failed")
    assert failed.data["attempts"] == 0
    assert worker.calls == []


@pytest.mark.parametrize("options", [{}, {"on_timeout": "deny"}])
async def test_a_denial_by_timeout_says_no_decision_came_in_time(options):
    worker = SimulatedAgent("worker", result={"ok": True})
    spec, lead = gated(timeout_seconds=3600, **options)
    async with Runtime(clock=VirtualClock(), seed=0) as rt:
        result = await rt.run(spec, coordinator=lead)

    deploy = result.intents["Deploy"]
    assert (deploy.status, deploy.attempts) == ("failed", 0)
    assert deploy.error == "intent 'Deploy' was denied: no decision within 3600 s"
    assert deploy.error_type == "ApprovalError"
    assert result.events.of_type("attempt_failed") == []
    [denied] = result.events.of_type("approval_denied")
    assert denied.time == 3600.0 and denied.data["by"] == "timeout"
    assert worker.calls == []
