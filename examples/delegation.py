"""The seed's "Delegation and Decision Records": a project lead routes work by complexity.

Run it with ``python examples/delegation.py``.
"""

from __future__ import annotations

import anyio

from openintent import Runtime
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_handoff,
)


@Coordinator("project-lead", agents=["dev-a", "dev-b", "qa"])
class ProjectCoordinator:

    @on_assignment
    async def handle(self, intent):
        complexity = intent.state.get("complexity", "low")

        if complexity == "high":
            await self.record_decision(
                intent_id=intent.id,
                decision="delegate_to_senior",
                rationale="High complexity requires senior developer"
            )
            await self.delegate(intent, to="dev-a")
        else:
            await self.delegate(intent, to="dev-b")

        return {"delegated": True}


class Developer:
    """Implements whatever it is handed."""

    @on_handoff
    async def received(self, intent, from_agent):
        print(f"{intent.assigned_to} took {intent.title!r} from {from_agent}")

    @on_assignment
    async def implement(self, intent):
        return {"implemented_by": intent.assigned_to}


DevA = Agent("dev-a")(type("DevA", (Developer,), {}))
DevB = Agent("dev-b")(type("DevB", (Developer,), {}))


@Agent("qa")
class QA:
    @on_assignment
    async def check(self, intent):
        return {"passed": True}


workflow = PortfolioSpec(
    name="Sprint 12",
    intents=[
        IntentSpec(title="Payment retries", initial_state={"complexity": "high"}),
        IntentSpec(title="Fix typo in footer"),
        IntentSpec(title="Regression suite", assign="qa",
                   depends_on=["Payment retries", "Fix typo in footer"]),
    ],
)


async def main() -> None:
    async with Runtime(agents=[DevA, DevB, QA]) as rt:
        result = await rt.run(workflow, coordinator=ProjectCoordinator)
    result.raise_for_status()
    for title, intent in result.intents.items():
        print(f"{title}: {intent.assigned_to} {intent.state}")
    for decision in result.decisions:
        print(f"decision: {decision.decision} — {decision.rationale}")


if __name__ == "__main__":
    anyio.run(main)
