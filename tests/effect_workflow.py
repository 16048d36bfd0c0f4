"""The workflow the effect SIGKILL test (tests/test_effects_kill.py) runs in a child process.

    python tests/effect_workflow.py start  STORE_URL EFFECTS_FILE CHECK
    python tests/effect_workflow.py resume STORE_URL EFFECTS_FILE CHECK PORTFOLIO_ID

A layered DAG of 12 intents; each intent's handler runs one side effect, ``append``, that
appends ``intent_id`` as a line to EFFECTS_FILE (flushed and fsync'ed), a few milliseconds
after it is called and a few before it returns, so a kill often lands inside it. With CHECK
``check`` the effect has a ``check`` that reads the file (it happened if the line is there);
with ``none`` it has none. The child prints ``started`` once its runtime is open, then the
run's status, and exits 0 once the run completed (1 otherwise).
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Any

import anyio
from crash_workflow import run_child, spec

from openintent.agents import Agent, on_assignment

WIDTH = 3
LAYERS = 4


def append_line(path: str, key: str) -> dict[str, str]:
    """The side effect: ``key`` on a line of ``path``, on disk before it returns."""
    time.sleep(random.uniform(0.002, 0.006))
    with open(path, "a") as effects:
        effects.write(f"{key}\n")
        effects.flush()
        os.fsync(effects.fileno())
    time.sleep(random.uniform(0.002, 0.006))
    return {"line": key}


def find_line(path: str, key: str) -> dict[str, str] | None:
    """The check: whether ``key`` is on a line of ``path`` (then the effect's value)."""
    with open(path) as effects:
        return {"line": key} if key in effects.read().splitlines() else None


def effector_class(effects_file: str, with_check: bool) -> type:
    @Agent("effector")
    class Effector:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            value = await self.effect(intent, "append", append_line, effects_file, intent.id,
                                      check=find_line if with_check else None)
            return {"written": value["line"]}

    return Effector


async def main(argv: list[str]) -> int:
    mode, store, effects_file, check = argv[:4]
    portfolio = spec("effects-crash-me", width=WIDTH, layers=LAYERS, seed=5,
                     assign="effector")
    return await run_child(effector_class(effects_file, check == "check"), store, portfolio,
                           None if mode == "start" else lambda rt: rt.resume(argv[4]))


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
