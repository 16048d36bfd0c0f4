"""The processes of the cluster SIGKILL test (tests/test_cluster_kill.py), on one PostgreSQL
store.

    OPENINTENT_TEST_EFFECTS=FILE OPENINTENT_TEST_FINISHED=FILE OPENINTENT_TEST_WORKER=w1 \\
        python -m openintent worker STORE_URL --agents cluster_workflow --id w1
    python tests/cluster_workflow.py coordinate STORE_URL RESULT_JSON
    python tests/cluster_workflow.py standby    STORE_URL RESULT_JSON PORTFOLIO_ID

As an agents module (``--agents cluster_workflow``) it registers the ``effector`` agent: each
call runs one side effect, ``append`` (tests/effect_workflow.py: the intent's id on a line of
the fsync'ed file EFFECTS, with a check that reads the file), then appends ``intent_id
attempt worker pid`` to the fsync'ed file FINISHED (the agent's own record of the work it
finished) and returns ``{"written": ..., "by": "worker pid attempt"}``. With EFFECTS
``none`` it runs no side effect.

``coordinate`` runs the 200-intent layered DAG with no agents of its own (every intent is a
task for the workers) and writes its ``RunResult`` (``to_dict()``) as JSON to RESULT_JSON;
``standby`` waits for a run's coordinator to go (``rt.standby``), takes the run over (or
reads it back, when a worker adopted it first) and writes its result the same way. Both
print ``started`` once their runtime is open, and exit 0 once the run completed.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

import anyio
from crash_workflow import record_call, spec
from effect_workflow import append_line, find_line

from openintent import Runtime
from openintent.agents import Agent, PortfolioSpec, on_assignment

WIDTH = 20
LAYERS = 10


def portfolio() -> PortfolioSpec:
    """The run: 10 layers of 20 intents, each after 1-2 of the layer before."""
    return spec("cluster-kill", width=WIDTH, layers=LAYERS, seed=14, assign="effector")


def checked_line(path: str, key: str) -> dict[str, str] | None:
    """The effect's check (``find_line``), each call recorded as ``key found`` on a line of
    ``PATH.checks``: how many effects a kill left in doubt."""
    found = find_line(path, key)
    record_call(f"{path}.checks", f"{key} {found is not None}\n")
    return found


@Agent("effector")
class Effector:
    """Runs each intent's side effect once, and records that it finished the intent."""

    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        effects = os.environ["OPENINTENT_TEST_EFFECTS"]
        if effects == "none":  # (the test of a paused worker: no side effect at all)
            value = {"line": intent.id}
        else:
            value = await self.effect(intent, "append", append_line, effects, intent.id,
                                      check=checked_line)
        by = f"{os.environ.get('OPENINTENT_TEST_WORKER', '?')} {os.getpid()} {intent.attempt}"
        record_call(os.environ["OPENINTENT_TEST_FINISHED"], f"{intent.id} {by}\n")
        # A little real time between the record and the finish, so a kill lands there too.
        await anyio.sleep(random.uniform(0.0, 0.004))
        return {"written": value["line"], "by": by}


async def run(argv: list[str]) -> dict[str, Any]:
    mode, store = argv[:2]
    async with Runtime(agents=[], store=store, blocking_threshold=None) as rt:
        print("started", flush=True)
        if mode == "coordinate":
            result = await rt.run(portfolio())
        else:
            result = await rt.standby(argv[3])
    print(result.status, flush=True)
    return result.to_dict()


def main(argv: list[str]) -> int:
    result = anyio.run(run, argv)
    with open(argv[2], "w") as file:
        json.dump(result, file)
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
