"""The seed's "Coordinator with Guardrails": three reviewers vote, two approvals decide.

Run it with ``python examples/review.py``. The reviewers are simulated; one of them is slow,
so the quorum of two is reached without it and it is cancelled.
"""

from __future__ import annotations

import anyio

from openintent import Runtime
from openintent.agents import (
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_conflict,
    on_escalation,
    on_quorum,
)
from openintent.testing import SimulatedAgent, VirtualClock


@Coordinator(
    "review-coordinator",
    agents=["reviewer-a", "reviewer-b", "reviewer-c"],
    strategy="parallel",
    guardrails=[
        {"type": "budget", "max_cost_usd": 5.0},
        {"type": "timeout", "max_seconds": 300},
        {"type": "approval", "require_for": ["deploy"]},
    ],
)
class ReviewCoordinator:

    @on_conflict
    async def handle_conflict(self, intent, versions):
        # Arbitrate between conflicting agent updates
        winner = max(versions, key=lambda v: v.get("confidence", 0))
        await self.record_decision(
            intent_id=intent.id,
            decision="conflict_resolved",
            rationale="Chose version with highest confidence",
            chosen=winner
        )
        return winner

    @on_escalation
    async def handle_escalation(self, intent, reason):
        print(f"Escalated: {intent.title} — {reason}")
        await self.delegate(intent, to="senior-reviewer")

    @on_quorum(threshold=2)
    async def quorum_reached(self, intent, responses):
        approved = all(r.get("approved") for r in responses)
        return {"approved": approved, "votes": len(responses)}


workflow = PortfolioSpec(
    name="Release review",
    intents=[IntentSpec(title="Review release notes"), IntentSpec(title="Review code")],
)


def reviewers() -> list[SimulatedAgent]:
    return [
        SimulatedAgent("reviewer-a", result={"approved": True}, delay=30, cost_usd=0.4),
        SimulatedAgent("reviewer-b", result={"approved": True}, delay=45, cost_usd=0.4),
        SimulatedAgent("reviewer-c", result={"approved": False}, delay=600, cost_usd=0.4),
        SimulatedAgent("senior-reviewer", result={"approved": True}, delay=60, cost_usd=1.0),
    ]


async def main() -> None:
    async with Runtime(agents=reviewers(), clock=VirtualClock(), seed=7) as rt:
        result = await rt.run(workflow, coordinator=ReviewCoordinator)
    result.raise_for_status()
    for title, intent in result.intents.items():
        print(f"{title}: {intent.state}")
    for decision in result.decisions:
        print(f"decision: {decision.decision} ({decision.rationale})")
    print(f"cost: ${result.cost_usd:.2f}")


if __name__ == "__main__":
    anyio.run(main)
