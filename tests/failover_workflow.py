"""The workflow the failover tests (tests/test_failover.py) run in child processes.

    python tests/failover_workflow.py start   STORE_URL CALLS_FILE
    python tests/failover_workflow.py standby STORE_URL CALLS_FILE PORTFOLIO_ID

The DAG of tests/crash_workflow.py; the handlers of layers 2 on wait until the file
CALLS_FILE.go exists, so a kill or a stop lands mid-run; every call appends
``intent_id attempt pid`` to CALLS_FILE. The child prints ``started`` once its runtime is
open (a standby: just before it stands by), then the run's status; exit 0: it completed.
"""

from __future__ import annotations

import os
import sys

import anyio
from crash_workflow import record_call, run_child, spec

from openintent.agents import Agent, on_assignment


def worker_class(calls_file: str) -> type:
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent):  # type: ignore[no-untyped-def]
            if not intent.title.startswith(("L0", "L1")):
                # Layers 2 on wait for the test's go (a file): the kill or stop lands here.
                go = anyio.Path(calls_file + ".go")
                while not await go.exists():  # noqa: ASYNC110 (another process makes it)
                    await anyio.sleep(0.01)
            record_call(calls_file, f"{intent.id} {intent.attempt} {os.getpid()}\n")
            total = sum(state.get("total", 0) for state in intent.inputs.values())
            return {"total": total + 1}

    return Worker


async def main(argv: list[str]) -> int:
    mode, store, calls_file = argv[:3]
    return await run_child(worker_class(calls_file), store, spec(),
                           None if mode == "start" else lambda rt: rt.standby(argv[3]))


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
