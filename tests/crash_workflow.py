"""The workflow the SIGKILL test (tests/test_crash_kill.py) runs in a child process.

    python tests/crash_workflow.py start  STORE_URL CALLS_FILE
    python tests/crash_workflow.py resume STORE_URL CALLS_FILE PORTFOLIO_ID

A layered DAG of 40 intents; every call of the agent's handler appends ``intent_id attempt``
to CALLS_FILE (flushed and fsync'ed) before it returns, so the test can compare what ran with
what the journal says. The child prints ``started`` once its runtime is open, and exits 0 once
the run completed.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import RunResult

WIDTH = 5
LAYERS = 8


def spec(name: str = "crash-me", *, width: int = WIDTH, layers: int = LAYERS,
         seed: int = 11, assign: str = "worker") -> PortfolioSpec:
    """A layered DAG: ``layers`` of ``width`` intents, each after 1-2 of the layer before."""
    rng = random.Random(seed)
    intents = []
    for layer in range(layers):
        for column in range(width):
            depends = []
            if layer:
                parents = rng.sample(range(width), rng.randint(1, 2))
                depends = [f"L{layer - 1}C{parent}" for parent in sorted(parents)]
            intents.append(IntentSpec(f"L{layer}C{column}", assign=assign,
                                      depends_on=depends))
    return PortfolioSpec(name=name, intents=intents)


def record_call(calls_file: str, line: str) -> None:
    """Append ``line`` and make sure it is on disk before the handler returns."""
    with open(calls_file, "a") as calls:
        calls.write(line)
        calls.flush()
        os.fsync(calls.fileno())


def worker_class(calls_file: str) -> type:
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent):  # type: ignore[no-untyped-def]
            # A little real time per call, so a kill lands in the middle of things.
            await anyio.sleep(random.uniform(0.001, 0.004))
            record_call(calls_file, f"{intent.id} {intent.attempt}\n")
            total = sum(state.get("total", 0) for state in intent.inputs.values())
            return {"total": total + 1}

    return Worker


async def run_child(agent: Any, store: str, portfolio: PortfolioSpec,
                    go_on: Callable[[Runtime], Awaitable[RunResult]] | None) -> int:
    """A child's run: print ``started`` once the runtime is open, run ``portfolio`` (or, with
    ``go_on``, go on with a journaled run), print its status; 0 when it completed."""
    async with Runtime(agents=[agent], store=store, blocking_threshold=None) as rt:
        print("started", flush=True)
        result = await (rt.run(portfolio) if go_on is None else go_on(rt))
    print(result.status, flush=True)
    return 0 if result.status == "completed" else 1


async def main(argv: list[str]) -> int:
    mode, store, calls_file = argv[:3]
    return await run_child(worker_class(calls_file), store, spec(),
                           None if mode == "start" else lambda rt: rt.resume(argv[3]))


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
