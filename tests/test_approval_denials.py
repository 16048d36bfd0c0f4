"""A denied approval: the intent was never dispatched, so it fails with no attempt, and its
error says who (or what) denied it."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import Runtime, VirtualClock
from openintent.agents import Coordinator, IntentSpec, PortfolioSpec
from openintent.testing import SimulatedAgent

pytestmark = pytest.mark.asyncio


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
