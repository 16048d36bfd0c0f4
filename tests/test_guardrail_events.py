"""What a user guardrail may append to the log with ``ctx.run.emit``: events of its own,
declared with ``register_event_type`` (and ``budget_warning``), never the lifecycle events
the runtime records itself, whose forgery would corrupt the run (a second ``run_finished``
ends every event stream early)."""

from __future__ import annotations

from typing import Any

import pytest

from openintent import OpenIntentError, Runtime, VirtualClock, register_event_type
from openintent.agents import IntentSpec, PortfolioSpec
from openintent.testing import SimulatedAgent


async def run_with(guardrail: Any) -> Any:
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

    result = await run_with(forger)
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

    result = await run_with(auditor)
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

    result = await run_with(forger)
    assert result.status == "completed"
    assert len(refused) == 1 and "completed" in refused[0]
    assert result.events.types().count("completed") == 1
    assert result.intents["A"].state == {}
