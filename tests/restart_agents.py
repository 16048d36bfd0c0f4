"""The agents an ``openintent worker`` process serves in tests/test_pg_restart_workers.py
(``--agents restart_agents:AGENTS``).

``effector`` runs one side effect per intent, ``append`` (tests/effect_workflow.py's: the
intent id on a line of the file named by ``$OPENINTENT_TEST_EFFECTS``, flushed and fsync'ed);
``plain`` only computes. Both take a little real time, so the database can restart while
some of them are running.
"""

from __future__ import annotations

import os
import random
from typing import Any

import anyio
from effect_workflow import append_line, find_line

from openintent.agents import Agent, on_assignment


@Agent("effector")
class Effector:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        value = await self.effect(intent, "append", append_line,
                                  os.environ["OPENINTENT_TEST_EFFECTS"], intent.id,
                                  check=find_line)
        return {"written": value["line"]}


@Agent("plain")
class Plain:
    @on_assignment
    async def work(self, intent: Any) -> dict[str, Any]:
        await anyio.sleep(random.uniform(0.005, 0.015))
        total = sum(state.get("total", 0) for state in intent.inputs.values())
        return {"total": total + 1}


AGENTS = [Effector, Plain]
