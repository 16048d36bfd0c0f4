"""The seed's Basic Coordinator: a three-step ETL pipeline run in one process.

Run it with ``python examples/etl.py``.
"""

from __future__ import annotations

import anyio

from openintent import Runtime
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_all_complete,
    on_assignment,
)

workflow = PortfolioSpec(
    name="Data Processing",
    intents=[
        IntentSpec(title="Extract", assign="extractor"),
        IntentSpec(title="Transform", assign="transformer", depends_on=["Extract"]),
        IntentSpec(title="Load", assign="loader", depends_on=["Transform"]),
    ],
)


@Coordinator("etl-coordinator")
class ETLCoordinator:
    @on_all_complete
    async def finished(self, portfolio):
        print(f"ETL complete: {portfolio.name}")
        return {"status": "loaded"}


@Agent("extractor")
class Extractor:
    @on_assignment
    async def extract(self, intent):
        return {"rows": [{"id": 1, "amount": "12.50"}, {"id": 2, "amount": "7.25"}]}


@Agent("transformer")
class Transformer:
    @on_assignment
    async def transform(self, intent):
        rows = intent.inputs["Extract"]["rows"]
        return {"rows": [{**row, "amount": float(row["amount"])} for row in rows]}


@Agent("loader")
class Loader:
    @on_assignment
    def load(self, intent):  # a plain def runs in a worker thread, never blocking the loop
        rows = intent.inputs["Transform"]["rows"]
        return {"loaded": len(rows), "total": sum(row["amount"] for row in rows)}


async def main() -> None:
    async with Runtime(agents=[Extractor, Transformer, Loader]) as rt:
        result = await rt.run(workflow, coordinator=ETLCoordinator)
    result.raise_for_status()
    print(f"status: {result.status}, output: {result.output}")
    print(f"loaded: {result.intents['Load'].state}")
    print(f"events: {len(result.events)}")


if __name__ == "__main__":
    anyio.run(main)
