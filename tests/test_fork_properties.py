"""Forks of generated runs: for a random DAG whose source run fails some intents (their
dependents skipped) and a random ``rerun``, the fork runs exactly the intents downstream of
``rerun`` or of an intent the source did not complete, copies the others with the source's
records, completes, and agrees with its own log (the replay oracle) and with ``rt.load``.

Driven with ``asyncio.run`` inside synchronous Hypothesis tests, like
tests/test_journal_properties.py. Time is virtual.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openintent import Runtime, sleep
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import EventType, IntentStatus
from openintent.testing import VirtualClock, assert_replay_matches


@dataclass(frozen=True)
class Case:
    deps: tuple[tuple[int, ...], ...]
    broken: frozenset[int]  # intents whose attempt fails in the source run
    rerun: frozenset[int]


@st.composite
def cases(draw: st.DrawFn, max_nodes: int = 10) -> Case:
    n = draw(st.integers(1, max_nodes))
    deps = tuple(
        tuple(sorted(draw(st.sets(st.integers(0, node - 1), max_size=min(node, 3)))))
        if node else ()
        for node in range(n))
    broken = draw(st.frozensets(st.integers(0, n - 1), max_size=2))
    rerun = draw(st.frozensets(st.integers(0, n - 1), min_size=1, max_size=3))
    return Case(deps, broken, rerun)


def title(node: int) -> str:
    return f"T{node}"


def downstream(deps: tuple[tuple[int, ...], ...], start: set[int]) -> set[int]:
    found = set(start)
    changed = True
    while changed:
        changed = False
        for node, parents in enumerate(deps):
            if node not in found and any(parent in found for parent in parents):
                found.add(node)
                changed = True
    return found


async def fork_case(case: Case) -> None:
    broken = {title(node) for node in case.broken}

    @Agent("worker")
    class Worker:
        def __init__(self) -> None:
            self.calls: list[str] = []

        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            self.calls.append(intent.title)
            await sleep(1.0)
            if intent.title in broken:
                raise ValueError(f"{intent.title} broke")
            return {"by": intent.title, "call": len(self.calls)}

    spec = PortfolioSpec("generated", [
        IntentSpec(title(node), assign="worker", depends_on=[title(p) for p in parents])
        for node, parents in enumerate(case.deps)])
    worker = Worker()
    async with Runtime(agents=[worker], clock=VirtualClock(), seed=0) as rt:
        source = await rt.run(spec)
        broken.clear()  # fixed for the fork
        worker.calls.clear()
        rerun = sorted(title(node) for node in case.rerun)
        fork = await rt.fork(source.portfolio_id, rerun=rerun)
        loaded = await rt.load(fork.portfolio_id)

    not_done = {node for node in range(len(case.deps))
                if source.intents[title(node)].status is not IntentStatus.COMPLETED}
    again = {title(node) for node in downstream(case.deps, set(case.rerun) | not_done)}
    assert fork.status == "completed"
    assert sorted(worker.calls) == sorted(again)  # each of them once, nothing else
    copied = [event.title for event in fork.events if event.type == EventType.INTENT_COPIED]
    assert set(copied) == set(source.intents) - again
    for name in copied:
        kept, old = fork.intents[name], source.intents[name]
        assert (kept.state, kept.version, kept.attempts) == (old.state, old.version,
                                                             old.attempts)
    assert fork.events[0].data["rerun"] == rerun
    assert_replay_matches(fork)
    assert dict(loaded.intents) == dict(fork.intents)
    assert list(loaded.events) == list(fork.events)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_a_fork_runs_exactly_what_is_downstream_and_copies_the_rest(case: Case) -> None:
    asyncio.run(fork_case(case))
