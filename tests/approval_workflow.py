"""The run the approval tests (tests/test_approve_from_another_process.py) start in a child
process and decide from another one.

    python tests/approval_workflow.py STORE_URL

Runs a two-intent release (Build, then Deploy, which waits for approval by alice or bob) in
the SQLite journal STORE_URL on the real clock. Prints ``started PORTFOLIO_ID`` once the run
has started, then ``status: STATUS`` when it ends; exits 0 when it completed, else 1.
"""

from __future__ import annotations

import sys

import anyio

from openintent import Runtime
from openintent.agents import IntentSpec, PortfolioSpec
from openintent.testing import SimulatedAgent

APPROVAL = {"type": "approval", "require_for": ["Deploy"], "approvers": ["alice", "bob"]}


async def main(store: str) -> int:
    spec = PortfolioSpec("release", [
        IntentSpec("Build", assign="worker"),
        IntentSpec("Deploy", assign="worker", depends_on=["Build"]),
    ])
    async with Runtime(agents=[SimulatedAgent("worker", result={"ok": True})], store=store,
                       guardrails=[APPROVAL]) as rt:
        handle = await rt.start(spec)
        print(f"started {handle.portfolio_id}", flush=True)
        result = await handle.result()
    print(f"status: {result.status}", flush=True)
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1]))
