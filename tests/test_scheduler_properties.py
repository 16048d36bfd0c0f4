"""Property tests of the scheduler on random dependency DAGs.

Each example builds a random DAG (node ``i`` depends on a random subset of nodes ``< i``,
declared in a random order), a random set of nodes whose handler always raises and a random
set of nodes whose handler yields to the event loop, runs it with one recording agent, and
checks the run against what the DAG says must happen.

The runtime is driven with ``asyncio.run`` inside synchronous Hypothesis tests: Hypothesis and
async fixtures do not mix well.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openintent import Runtime
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.models import Event, RunResult
from openintent.testing import assert_replay_matches, replay

from _helpers import masked

AGENT_ID = "recorder"


# ------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Dag:
    """A random DAG: ``deps[i]`` are the (earlier) nodes node ``i`` depends on."""

    deps: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]  # the order the intents are declared in the spec
    failing: frozenset[int]  # nodes whose handler always raises
    yielding: frozenset[int]  # nodes whose handler yields to the event loop first
    max_attempts: int = 1

    @property
    def n(self) -> int:
        return len(self.deps)

    def dependents(self) -> dict[int, list[int]]:
        children: dict[int, list[int]] = {i: [] for i in range(self.n)}
        for node, parents in enumerate(self.deps):
            for parent in parents:
                children[parent].append(node)
        return children

    def expected_status(self) -> dict[int, str]:
        """What every node must end as.

        Nodes are numbered in a topological order, so one pass suffices: a node with a failed
        or skipped dependency is skipped (even a failing one: it never runs); otherwise a
        failing node fails and every other node completes.
        """
        status: dict[int, str] = {}
        for node, parents in enumerate(self.deps):
            if any(status[parent] in ("failed", "skipped") for parent in parents):
                status[node] = "skipped"
            elif node in self.failing:
                status[node] = "failed"
            else:
                status[node] = "completed"
        return status

    def expected_totals(self) -> dict[int, int]:
        """The ``total`` each completed node's state holds (see the recorder's handler)."""
        totals: dict[int, int] = {}
        for node, parents in enumerate(self.deps):
            totals[node] = node + sum(totals[parent] for parent in parents)
        return totals


def title(node: int) -> str:
    return f"n{node:02d}"


def node_of(intent_title: str) -> int:
    return int(intent_title[1:])


@st.composite
def dags(
    draw: st.DrawFn,
    *,
    min_nodes: int = 1,
    max_nodes: int = 30,
    failures: bool = True,
    max_attempts: int = 1,
) -> Dag:
    n = draw(st.integers(min_nodes, max_nodes))
    deps: list[tuple[int, ...]] = []
    for node in range(n):
        if node == 0:
            deps.append(())
            continue
        parents = draw(st.sets(st.integers(0, node - 1), max_size=node))
        deps.append(tuple(sorted(parents)))
    order = tuple(draw(st.permutations(range(n))))
    nodes = st.integers(0, n - 1)
    failing = draw(st.frozensets(nodes)) if failures else frozenset()
    yielding = draw(st.frozensets(nodes))
    attempts = draw(st.integers(1, max_attempts))
    return Dag(tuple(deps), order, failing, yielding, attempts)


def build_spec(dag: Dag) -> PortfolioSpec:
    retry = {"max_attempts": dag.max_attempts, "initial_delay": 0, "jitter": False}
    return PortfolioSpec(
        name="random-dag",
        intents=[
            IntentSpec(
                title(node),
                assign=AGENT_ID,
                depends_on=[title(parent) for parent in dag.deps[node]],
                retry=retry,
            )
            for node in dag.order
        ],
    )


def make_recorder(dag: Dag) -> tuple[Any, list[tuple[str, str]]]:
    """A fresh agent instance and its call log of ``(what, title)`` entries, in call order."""
    calls: list[tuple[str, str]] = []

    @Agent(AGENT_ID)
    class Recorder:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            node = node_of(intent.title)
            calls.append(("start", intent.title))
            if node in dag.yielding:
                await anyio.lowlevel.checkpoint()
            if node in dag.failing:
                calls.append(("raise", intent.title))
                raise RuntimeError(f"{intent.title} always fails (attempt {intent.attempt})")
            total = node + sum(inputs["total"] for inputs in intent.inputs.values())
            calls.append(("end", intent.title))
            return {"total": total, "inputs": sorted(intent.inputs)}

    return Recorder(), calls


def run_dag(dag: Dag, *, seed: int = 1) -> tuple[RunResult, list[tuple[str, str]]]:
    agent, calls = make_recorder(dag)
    spec = build_spec(dag)

    async def main() -> RunResult:
        # A scheduler that loses an intent would wait forever: fail instead of hanging (after
        # real seconds no loaded machine needs for these runs of a few hundred intents).
        with anyio.fail_after(30):
            async with Runtime(agents=[agent], seed=seed) as rt:
                return await rt.run(spec)

    return asyncio.run(main()), calls


def seqs_by_title(result: RunResult, event_type: str) -> dict[str, list[int]]:
    """The seq numbers of every ``event_type`` event, by intent title."""
    title_of = {item.id: name for name, item in result.intents.items()}
    found: dict[str, list[int]] = {name: [] for name in result.intents}
    for event in result.events.of_type(event_type):
        found[title_of[event.intent_id]].append(event.seq)
    return found


# ------------------------------------------------------------------------------ properties


def check_runs_once_in_dependency_order(dag: Dag) -> None:
    result, calls = run_dag(dag)
    titles = [title(node) for node in range(dag.n)]

    assert result.status == "completed"
    assert list(result.intents) == [title(node) for node in dag.order]

    # Every intent's handler was called exactly once, and returned.
    assert Counter(name for what, name in calls if what == "start") == Counter(titles)
    assert Counter(name for what, name in calls if what == "end") == Counter(titles)

    # The agent's own log: each dependency returned before the dependent was called.
    position = {entry: index for index, entry in enumerate(calls)}
    for node, parents in enumerate(dag.deps):
        for parent in parents:
            assert position[("end", title(parent))] < position[("start", title(node))], (
                f"{title(node)} started before its dependency {title(parent)} finished"
            )

    # The event log: one dispatch per intent, after every dependency's "completed".
    dispatched = seqs_by_title(result, "dispatched")
    ready = seqs_by_title(result, "ready")
    completed = seqs_by_title(result, "completed")
    totals = dag.expected_totals()
    for node, parents in enumerate(dag.deps):
        name = title(node)
        assert len(dispatched[name]) == 1
        assert len(ready[name]) == 1
        assert len(completed[name]) == 1
        assert ready[name][0] < dispatched[name][0] < completed[name][0]
        for parent in parents:
            assert completed[title(parent)][0] < ready[name][0]
            assert completed[title(parent)][0] < dispatched[name][0]
        item = result.intents[name]
        assert item.status == "completed"
        assert item.attempts == 1
        assert item.assigned_to == AGENT_ID
        # Each handler saw its dependencies' final state through intent.inputs.
        assert item.state == {
            "total": totals[node],
            "inputs": sorted(title(parent) for parent in parents),
        }


@settings(max_examples=50, deadline=None)
@given(dags(failures=False))
def test_every_intent_runs_once_and_only_after_its_dependencies(dag: Dag) -> None:
    check_runs_once_in_dependency_order(dag)


def check_failures_and_skips(dag: Dag) -> None:
    result, calls = run_dag(dag)
    expected = dag.expected_status()
    by_status = {
        status: {title(node) for node, value in expected.items() if value == status}
        for status in ("failed", "skipped", "completed")
    }

    actual = {name: str(item.status) for name, item in result.intents.items()}
    assert actual == {title(node): status for node, status in expected.items()}
    assert {item.title for item in result.failed_intents} == by_status["failed"]
    assert result.status == ("failed" if by_status["failed"] else "completed")
    # With no failing node nothing may be skipped; with one, the run cannot complete.
    assert bool(by_status["failed"]) == bool(set(expected.values()) - {"completed"})

    started = Counter(name for what, name in calls if what == "start")
    dispatched = seqs_by_title(result, "dispatched")
    skipped_events = seqs_by_title(result, "skipped")
    failed_events = seqs_by_title(result, "failed")
    attempt_failed = seqs_by_title(result, "attempt_failed")
    for node, status in expected.items():
        name = title(node)
        item = result.intents[name]
        if status == "skipped":
            # A skipped intent never reaches its agent, even one that would have failed.
            assert started[name] == 0
            assert dispatched[name] == []
            assert len(skipped_events[name]) == 1
            assert item.attempts == 0
            # ... and is skipped after (because of) a dependency that failed or was skipped.
            assert any(
                (failed_events[title(parent)] + skipped_events[title(parent)])[0]
                < skipped_events[name][0]
                for parent in dag.deps[node]
                if expected[parent] != "completed"
            )
        elif status == "failed":
            assert started[name] == dag.max_attempts
            assert len(dispatched[name]) == dag.max_attempts
            assert len(attempt_failed[name]) == dag.max_attempts
            assert len(failed_events[name]) == 1
            assert item.attempts == dag.max_attempts
            assert item.error_type == "RuntimeError"
            assert item.error == f"{name} always fails (attempt {dag.max_attempts})"
            for child in dag.dependents()[node]:
                assert skipped_events[title(child)], f"{title(child)} was not skipped"
        else:
            assert started[name] == 1
            assert len(dispatched[name]) == 1
            assert item.attempts == 1
            assert item.error is None
            assert item.state["total"] == dag.expected_totals()[node]
        if status != "skipped":
            assert skipped_events[name] == []
        if status != "failed":
            assert failed_events[name] == []


@settings(max_examples=50, deadline=None)
@given(dags(failures=True, max_attempts=3))
def test_failing_intents_fail_and_exactly_their_descendants_are_skipped(dag: Dag) -> None:
    check_failures_and_skips(dag)


def check_replay(dag: Dag) -> None:
    result, _ = run_dag(dag)
    assert_replay_matches(result)  # an independent derivation, and a possible log
    sources = {
        # The result's own read-only log.
        "log": result.events,
        # Its public Event objects.
        "events": list(result.events),
        # A log persisted as JSON and read back.
        "json": [
            Event(**event)
            for event in json.loads(json.dumps([event.to_dict() for event in result.events]))
        ],
    }
    for source, events in sources.items():
        records = replay(events)
        assert list(records) == list(result.intents), source
        for name, live in result.intents.items():
            record = records[name]
            assert (record.id, record.status, record.state, record.version,
                    record.attempts) == (live.id, live.status, live.state, live.version,
                                         live.attempts), (source, name)
            assert record == live, (source, name)


@settings(max_examples=50, deadline=None)
@given(dags(failures=True, max_attempts=3))
def test_replaying_the_event_log_gives_the_live_results(dag: Dag) -> None:
    check_replay(dag)


def comparable(result: RunResult) -> list[Any]:
    """The event log without wall-clock times, ids masked (each run has its own)."""
    return masked([(event.seq, event.type, event.intent_id, event.data)
                   for event in result.events])




def check_determinism(dag: Dag) -> None:
    first, first_calls = run_dag(dag, seed=7)
    second, second_calls = run_dag(dag, seed=7)
    assert comparable(first) == comparable(second)
    assert first_calls == second_calls
    # The seed reproduces the run, not its ids: a store never sees two runs under one id.
    assert first.portfolio_id != second.portfolio_id
    assert {item.id for item in second.intents.values()}.isdisjoint(
        item.id for item in first.intents.values()
    )


@settings(max_examples=50, deadline=None)
@given(dags(failures=True, max_attempts=2))
def test_same_spec_and_seed_give_the_same_event_log(dag: Dag) -> None:
    check_determinism(dag)


# ------------------------------------------------------------------------------ larger DAGs


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(dags(min_nodes=100, max_nodes=300, failures=False))
def test_large_dags_run_once_in_dependency_order(dag: Dag) -> None:
    check_runs_once_in_dependency_order(dag)


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(dags(min_nodes=100, max_nodes=300, failures=True, max_attempts=2))
def test_large_dags_fail_skip_replay_and_repeat(dag: Dag) -> None:
    check_failures_and_skips(dag)
    check_replay(dag)
    check_determinism(dag)


# ------------------------------------------------------------------------------ the model itself


def test_expected_status_skips_a_failing_node_below_a_failure() -> None:
    # 0 fails; 1 (failing too) depends on 0 and so is skipped; 2 depends on 1; 3 is apart.
    dag = Dag(
        deps=((), (0,), (1,), ()),
        order=(0, 1, 2, 3),
        failing=frozenset({0, 1}),
        yielding=frozenset(),
    )
    assert dag.expected_status() == {0: "failed", 1: "skipped", 2: "skipped", 3: "completed"}
    check_failures_and_skips(dag)


def test_replay_of_event_shaped_tuples_is_not_silently_empty() -> None:
    dag = Dag(deps=((), (0,)), order=(0, 1), failing=frozenset(), yielding=frozenset())
    result, _ = run_dag(dag)
    rows = [tuple(event) for event in result.events]  # (seq, type, time, pf, intent, data)
    try:
        records = replay(rows)
    except Exception:
        return  # refusing the rows loudly is fine too
    assert {record.title: record.status for record in records.values()} == {
        "n00": "completed",
        "n01": "completed",
    }
