"""Problems found by using openintent as a new user would, from the README, docs/testing.md,
the contract and the seed's coordinator patterns.

Each test states what the documents promise. Virtual runs here end by themselves (no hanging
agents, no undecided approvals), so nothing needs a real-time bound.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

import openintent
from openintent import Runtime, VirtualClock
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_escalation,
    on_quorum,
)
from openintent.testing import SimulatedAgent

# ------------------------------------------------------------------ virtual clock


@pytest.mark.asyncio
async def test_virtual_time_does_not_jump_while_a_run_has_ready_work(
    runtime: Runtime, virtual_clock: VirtualClock
) -> None:
    # A test that decides approvals (or watches the run) from a side task waits on the clock
    # the same way; docs/testing.md: "Time stands still while anything can run".
    @Coordinator("timed", guardrails=[{"type": "timeout", "max_seconds": 300}])
    class Timed:
        pass

    SimulatedAgent("worker", result={"ok": True}, delay=10)
    async with anyio.create_task_group() as tg:

        async def side_task() -> None:
            await virtual_clock.sleep(1000)

        tg.start_soon(side_task)
        result = await runtime.run(
            PortfolioSpec("p", [IntentSpec("A", assign="worker")]), coordinator=Timed
        )
        tg.cancel_scope.cancel()

    dispatched = result.events.of_type("dispatched")
    assert dispatched[0].time == 0.0, f"first dispatch at t={dispatched[0].time}"
    assert result.status == "completed" and virtual_clock.now() == 10.0


# ------------------------------------------------------------------ results


@Agent("summarizer")
class Summarizer:
    @on_assignment
    async def summarize(self, intent: Any) -> dict[str, Any]:
        # Passing an upstream result along is an everyday pattern.
        return {"source": intent.inputs["Extract"], "n": len(intent.inputs["Extract"]["rows"])}


@pytest.mark.asyncio
async def test_to_dict_is_json_serialisable_when_a_handler_passes_inputs_along(
    runtime: Runtime,
) -> None:
    SimulatedAgent("extractor", result={"rows": [1, 2, 3]})
    spec = PortfolioSpec(
        "p",
        [
            IntentSpec("Extract", assign="extractor"),
            IntentSpec("Summarize", assign="summarizer", depends_on=["Extract"]),
        ],
    )
    result = await runtime.run(spec)
    assert result.status == "completed"
    json.dumps(result.to_dict())


@pytest.mark.asyncio
async def test_intent_state_in_the_result_is_a_dict(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": [1, 2, 3]})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    state = result.intents["Extract"].state
    assert json.loads(json.dumps(state)) == {"rows": [1, 2, 3]}
    assert isinstance(state, dict)


@pytest.mark.asyncio
async def test_raise_for_status_message_says_why_the_intent_failed(runtime: Runtime) -> None:
    SimulatedAgent("flaky", fail_times=1, error=ValueError("disk full"))
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("B", assign="flaky")]))
    assert result.status == "failed"
    with pytest.raises(openintent.RunFailedError, match="disk full"):
        result.raise_for_status()


@pytest.mark.asyncio
async def test_unknown_title_lookup_names_the_titles(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": []})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    with pytest.raises(KeyError) as info:
        result.intents["extract"]
    assert "Extract" in str(info.value)


@pytest.mark.asyncio
async def test_of_type_rejects_an_unknown_event_type(runtime: Runtime) -> None:
    SimulatedAgent("extractor", result={"rows": []})
    result = await runtime.run(PortfolioSpec("p", [IntentSpec("Extract", assign="extractor")]))
    with pytest.raises((ValueError, KeyError, AssertionError)):
        result.events.of_type("faild")


# ------------------------------------------------------------------ authoring API


def test_on_quorum_takes_the_threshold_positionally() -> None:
    class Voting:
        @on_quorum(2)
        async def reached(self, intent: Any, responses: Any) -> dict[str, Any]:
            return {}

    assert callable(Voting.reached)


def test_a_typed_base_class_for_agents_is_public() -> None:
    import openintent.agents as agents

    assert {"AgentMethods", "CoordinatorMethods"} <= set(agents.__all__)


@pytest.mark.asyncio
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


# ------------------------------------------------------------------ coordinator semantics


@Coordinator(
    "usability-review-coordinator",  # test_coordinators registers "review-coordinator"
    agents=["reviewer-a", "reviewer-b", "reviewer-c"],
    strategy="parallel",
)
class ReviewCoordinator:
    """The seed's ReviewCoordinator (escalation and quorum parts)."""

    @on_escalation
    async def handle_escalation(self, intent: Any, reason: str) -> None:
        await self.delegate(intent, to="senior-reviewer")  # type: ignore[attr-defined]

    @on_quorum(threshold=2)
    async def quorum_reached(self, intent: Any, responses: Any) -> dict[str, Any]:
        approved = all(r.get("approved") for r in responses)
        return {"approved": approved, "votes": len(responses)}


@pytest.mark.asyncio
async def test_an_escalated_vote_still_counts_towards_the_quorum(runtime: Runtime) -> None:
    SimulatedAgent("reviewer-a", result={"approved": True}, delay=1)
    SimulatedAgent("reviewer-b", escalate="needs a senior", delay=2)
    SimulatedAgent("reviewer-c", result={"approved": True}, delay=3)
    SimulatedAgent("senior-reviewer", result={"approved": False})

    result = await runtime.run(
        PortfolioSpec("Release review", [IntentSpec("Review code")]),
        coordinator=ReviewCoordinator,
    )
    assert result.status == "completed"
    # Contract: "@on_quorum(threshold=N) fires once N responses are in ... its return value
    # is the intent's result".
    assert [d.decision for d in result.decisions] == ["quorum_reached"]
    assert result.intents["Review code"].state["votes"] == 2


# ------------------------------------------------------------------ runtime options


def test_runtime_rejects_a_clock_without_the_clock_methods() -> None:
    import time

    with pytest.raises(openintent.OpenIntentError, match="now"):
        Runtime(clock=time.monotonic)  # type: ignore[arg-type]
