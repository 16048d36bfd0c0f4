"""A coordinator runtime and a serving worker in one test's task group, on ``memory://?workers=1``
(the in-process task queue) and one virtual clock: what tests/test_remote_agents.py and
tests/test_workers.py build on."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from openintent import Runtime, VirtualClock
from openintent.agents import Agent, on_assignment

STORE = "memory://?workers=1"
HANG_GUARD = 20  # seconds of real time before a hung test fails instead of hanging


@asynccontextmanager
async def serving(
    agents: Sequence[Any], *, clock: Any = None, concurrency: int = 8,
    worker_id: str | None = None, guardrails: Sequence[Any] | None = None,
    coordinator_agents: Sequence[Any] = (),
) -> AsyncIterator[Runtime]:
    """The coordinator's runtime (it has only ``coordinator_agents``: every other agent is
    remote) while a worker runtime with ``agents`` serves; the worker stops after the block."""
    clock = clock if clock is not None else VirtualClock()
    with anyio.fail_after(HANG_GUARD):
        async with Runtime(agents=list(coordinator_agents), store=STORE, clock=clock,
                           guardrails=guardrails, seed=0) as coordinator, \
                Runtime(agents=list(agents), store=STORE, clock=clock) as worker:
            async with anyio.create_task_group() as group:
                group.start_soon(functools.partial(worker.serve, concurrency=concurrency,
                                                   worker_id=worker_id))
                yield coordinator
                group.cancel_scope.cancel()


def voters(served: list[str], *agent_ids: str) -> list[Any]:
    """An agent per id, each answering ``{"verdict": "ok"}`` and appending its id to
    ``served``: the assignees of a multi-agent intent."""

    def voter(agent_id: str) -> Any:
        @Agent(agent_id)
        class Voter:
            @on_assignment
            async def work(self, intent: Any) -> dict[str, Any]:
                served.append(agent_id)
                return {"verdict": "ok"}

        return Voter

    return [voter(agent_id) for agent_id in agent_ids]


def shape(result: Any) -> list[tuple[str, str | None, Any]]:
    """A run's events as (type, intent title, data): what two runs of one spec share."""
    titles = {record.id: title for title, record in result.intents.items()}
    return [(event.type, titles.get(event.intent_id), _plain(event.data))
            for event in result.events]


def _plain(data: Any) -> Any:
    from openintent._data import to_plain

    data = to_plain(data)
    if isinstance(data, dict) and "id" in data and str(data["id"]).startswith("dc_"):
        data = {**data, "id": "dc"}
    return data
