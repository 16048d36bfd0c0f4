"""The seed's "Imperative Coordinator": a portfolio built call by call, then run.

The seed's snippet as written, with ``base_url="memory://"`` (this process's store: the
library runs in-process, with no server), then ``run_portfolio`` with two small agents.
Run it with ``python examples/imperative.py``.
"""

from __future__ import annotations

from openintent import OpenIntentClient
from openintent.agents import Agent, on_assignment


@Agent("data-fetcher")
class DataFetcher:

    @on_assignment
    async def fetch(self, intent):
        return {"rows": [3, 4, 5]}


@Agent("data-processor")
class DataProcessor:

    @on_assignment
    async def process(self, intent):
        rows = intent.inputs["Fetch Data"]["rows"]
        return {"total": sum(rows)}


client = OpenIntentClient(
    base_url="memory://",
    agent_id="coordinator"
)

# Create portfolio manually
portfolio = client.create_portfolio(
    name="Manual Pipeline",
    description="Imperative coordination"
)

step1 = client.create_intent(
    title="Fetch Data",
    portfolio_id=portfolio.id
)

step2 = client.create_intent(
    title="Process Data",
    portfolio_id=portfolio.id,
    depends_on=[step1.id]
)

# Acquire coordinator lease
lease = client.acquire_coordinator_lease(
    portfolio_id=portfolio.id,
    ttl_seconds=600
)

# Record a governance decision
client.record_decision(
    portfolio_id=portfolio.id,
    decision="approved_pipeline",
    rationale="All agents healthy, budget within limits"
)

# Assign agents
client.assign_agent(step1.id, "data-fetcher")
client.assign_agent(step2.id, "data-processor")

if __name__ == "__main__":
    # Run it under the lease, with the agents registered above.
    with lease:
        result = client.run_portfolio(portfolio.id)
    print(f"{result.name}: {result.status}")
    print(f"Process Data: {result.intents['Process Data'].state}")
    for decision in client.list_decisions(portfolio.id):
        print(f"decision: {decision.decision} by {decision.coordinator_id}")
