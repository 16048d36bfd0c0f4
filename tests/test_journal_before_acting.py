"""Journal before acting: with ``Runtime(store="sqlite:///...")`` nothing acts on an event
before the commit holding it: no dependent is dispatched, no hook fires, no stream yields it,
no approval is listed and ``rt.run`` does not return. And the journaled run is the same run.

Commits are held with a test double around the real writer: each commit waits until the test
lets it through, so the test can look at the run while an event is appended but not on disk.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from openintent import Runtime, StoreError, VirtualClock
from openintent._data import to_plain
from openintent._stores.sqlite import SqliteBackend
from openintent.agents import (
    Agent,
    Coordinator,
    IntentSpec,
    PortfolioSpec,
    on_assignment,
    on_complete,
)
from openintent.models import RunResult
from openintent.testing import SimulatedAgent

pytestmark = pytest.mark.anyio

BOUND = 20  # seconds of real time before a hung test fails instead of hanging


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


class HeldCommits:
    """Holds every commit of every SqliteBackend until :meth:`release` lets it through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pending: list[tuple[list[str], Callable[[], None]]] = []
        self.arrived = anyio.Event()
        self.holding = True
        real = SqliteBackend.submit
        held = self

        def submit(backend: SqliteBackend, log: Any, start: int, events: list[Any],
                   done: Any) -> None:
            if held.holding:
                held.pending.append(([event[0] for event in events],
                                     lambda: real(backend, log, start, events, done)))
                held.arrived.set()
                return
            real(backend, log, start, events, done)

        monkeypatch.setattr(SqliteBackend, "submit", submit)

    async def next(self) -> list[str]:
        """The types of the events of the next commit waiting (it stays held)."""
        with anyio.fail_after(BOUND):
            while not self.pending:
                self.arrived = anyio.Event()
                await self.arrived.wait()
        await anyio.wait_all_tasks_blocked()
        return self.pending[0][0]

    def release(self) -> None:
        _types, release = self.pending.pop(0)
        release()

    def let_all_through(self) -> None:
        """Stop holding (a failed test must not leave a run waiting for its commit)."""
        self.holding = False
        while self.pending:
            self.release()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldCommits:
    return HeldCommits(monkeypatch)


@asynccontextmanager
async def held_runtime(held: HeldCommits, **options: Any) -> AsyncIterator[Runtime]:
    """A runtime whose held commits all go through, whatever happens, before it waits for
    its runs (a failed assertion must not leave a run waiting for its commit)."""
    async with Runtime(**options) as rt:
        try:
            yield rt
        finally:
            held.let_all_through()


def chain_spec() -> PortfolioSpec:
    return PortfolioSpec("chain", [
        IntentSpec("A", assign="journal-worker"),
        IntentSpec("B", assign="journal-worker", depends_on=["A"]),
    ])


def make_worker(calls: list[str], completed: list[str]) -> type:
    @Agent("journal-worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls.append(intent.title)
            return {"done": intent.title}

        @on_complete
        async def finished(self, intent: Any) -> None:
            completed.append(intent.title)

    return Worker


def on_disk(path: Path, portfolio_id: str) -> list[tuple[str, str | None]]:
    """The committed events of a run, as (type, intent title), read from the file."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, intent_id, data FROM events WHERE run_id = ? "
                            "ORDER BY seq", (portfolio_id,)).fetchall()
    finally:
        conn.close()
    titles = {intent_id: json.loads(data)[0] for type_, intent_id, data in rows
              if type_ == "created"}
    return [(type_, titles.get(intent_id)) for type_, intent_id, _data in rows]


async def test_nothing_acts_on_an_event_before_its_commit(tmp_path: Path,
                                                          held: HeldCommits) -> None:
    calls: list[str] = []
    completed: list[str] = []
    streamed: list[str] = []
    runtime_stream: list[str] = []
    worker = make_worker(calls, completed)
    checked = 0
    async with held_runtime(held, agents=[worker], store=store_url(tmp_path)) as rt:
        everything = rt.events()
        handle = await rt.start(chain_spec())

        async def follow() -> None:
            async for event in handle.events():
                streamed.append(event.type)

        async def follow_runtime() -> None:
            async for event in everything:
                runtime_stream.append(event.type)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            tg.start_soon(follow_runtime)
            while not handle.done:
                await held.next()  # a commit waits: look at the run before it goes through
                committed = on_disk(tmp_path / "runs.db", handle.portfolio_id)
                types = [type_ for type_, _title in committed]
                # a handler is called only once its dispatch is on disk ...
                assert calls == [title for type_, title in committed if type_ == "dispatched"]
                # ... a hook fires once the completion is, streams yield only what is
                assert set(completed) <= {title for type_, title in committed
                                          if type_ == "completed"}
                assert streamed == types[:len(streamed)]
                assert runtime_stream == types[:len(runtime_stream)]
                # ... and the run has not ended before run_finished is
                assert not handle.done
                checked += 1
                held.release()
                with anyio.fail_after(BOUND):
                    while not held.pending and not handle.done:
                        await anyio.lowlevel.checkpoint()
            result = await handle.result()
    assert result.status == "completed"
    assert checked >= 4  # start, A's dispatch, A's completion + B's dispatch, the end
    assert calls == ["A", "B"] and completed == ["A", "B"]
    assert streamed == runtime_stream == result.events.types()


async def test_rt_run_returns_only_once_run_finished_is_committed(tmp_path: Path,
                                                                   held: HeldCommits) -> None:
    returned: list[RunResult] = []
    worker = make_worker([], [])
    async with held_runtime(held, agents=[worker], store=store_url(tmp_path)) as rt:

        async def run() -> None:
            returned.append(await rt.run(chain_spec()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while "run_finished" not in await held.next():
                held.release()
            assert returned == []
            held.release()
    [result] = returned
    on_disk = SqliteBackend(store_url(tmp_path))
    try:
        assert len(on_disk.read(result.portfolio_id)) == len(result.events)
    finally:
        on_disk.close()


async def test_an_approval_request_is_listed_once_it_is_committed(tmp_path: Path,
                                                                  held: HeldCommits) -> None:
    @Coordinator("journal-lead", guardrails=[{"type": "approval", "require_for": ["deploy"]}])
    class Lead:
        pass

    deployer = SimulatedAgent("journal-deployer", result={"ok": True})
    spec = PortfolioSpec("release", [IntentSpec("Deploy", assign="journal-deployer")])
    async with held_runtime(held, agents=[deployer], store=store_url(tmp_path)) as rt:
        handle = await rt.start(spec, coordinator=Lead)
        while "approval_requested" not in await held.next():
            held.release()
        assert rt.pending_approvals() == [] and handle.pending_approvals() == []
        held.release()
        with anyio.fail_after(BOUND):
            while not rt.pending_approvals():
                if held.pending:
                    held.release()
                await anyio.lowlevel.checkpoint()
        [request] = rt.pending_approvals()
        await rt.approve(request.intent_id, by="alice")
        with anyio.fail_after(BOUND):
            while not handle.done:
                if held.pending:
                    held.release()
                await anyio.lowlevel.checkpoint()
    assert (await handle.result()).status == "completed"


# ---------------------------------------------------------------------------- the same run


def mixed_spec() -> PortfolioSpec:
    retry = {"max_attempts": 3, "initial_delay": 2.0}
    return PortfolioSpec("mixed", [
        IntentSpec("Fetch", assign="journal-fetcher", retry=retry),
        IntentSpec("Parse", assign="journal-parser", depends_on=["Fetch"], timeout=30,
                   initial_state={"format": "csv"}),
        IntentSpec("Store", assign="journal-parser", depends_on=["Parse"]),
        IntentSpec("Broken", assign="journal-broken", depends_on=["Fetch"]),
        IntentSpec("After broken", assign="journal-parser", depends_on=["Broken"]),
    ])


def mixed_agents() -> list[Any]:
    return [
        SimulatedAgent("journal-fetcher", result={"rows": [1, 2, 3]}, fail_times=1,
                       delay=1.5, cost_usd=0.25, register=False),
        SimulatedAgent("journal-parser", result={"parsed": True, "nested": {"a": [None]}},
                       delay=0.5, register=False),
        SimulatedAgent("journal-broken", error=ValueError("bad input"), fail_times=99,
                       register=False),
    ]


def comparable(result: RunResult) -> list[tuple[Any, ...]]:
    """The events, with this run's portfolio id taken out of intent ids."""
    suffix = result.portfolio_id[3:]
    return [(event.seq, event.type, event.time, event.title,
             event.intent_id and event.intent_id.replace(suffix, "*"),
             to_plain(event.data) if event.data else None) for event in result.events]


async def test_a_journaled_run_is_the_same_run_and_all_of_it_is_in_the_file(
        tmp_path: Path) -> None:
    async with Runtime(agents=mixed_agents(), clock=VirtualClock(), seed=7) as rt:
        in_memory = await rt.run(mixed_spec())
    async with Runtime(agents=mixed_agents(), clock=VirtualClock(), seed=7,
                       store=store_url(tmp_path)) as rt:
        journaled = await rt.run(mixed_spec())
    assert journaled.status == in_memory.status == "failed"
    assert comparable(journaled) == comparable(in_memory)
    assert journaled.cost_usd == in_memory.cost_usd == 0.5  # both calls of Fetch
    backend = SqliteBackend(store_url(tmp_path))
    try:
        raw = backend.read(journaled.portfolio_id)
        seqs = [row[0] for row in backend._conn.execute(
            "SELECT seq FROM events WHERE run_id = ? ORDER BY seq", (journaled.portfolio_id,))]
        [info] = backend.runs()
        assert info.status == "failed"
        assert info.started_at == journaled.events[0].at
        assert info.ended_at == journaled.events[-1].at
    finally:
        backend.close()
    assert seqs == list(range(len(journaled.events)))
    live = list(journaled.events._events)
    assert [event[:3] for event in raw] == [event[:3] for event in live]
    assert [to_plain(list(e[3]) if type(e[3]) is tuple else e[3]) for e in raw] == [
        to_plain([list(f) if type(f) is tuple else f for f in e[3]] if type(e[3]) is tuple
                 else e[3]) for e in live]


async def test_a_sub_portfolio_is_journaled_as_a_run_with_its_parent(tmp_path: Path) -> None:
    worker = SimulatedAgent("journal-sub-worker", result={"ok": 1}, register=False)

    @Coordinator("journal-planner")
    class Planner:
        @on_assignment
        async def plan(self, intent: Any) -> dict[str, Any]:
            inner = PortfolioSpec("inner", [IntentSpec("Step", assign="journal-sub-worker")])
            result = await self.execute(inner)
            return {"inner": str(result.status)}

    spec = PortfolioSpec("outer", [IntentSpec("Plan", assign="journal-planner")])
    async with Runtime(agents=[worker], clock=VirtualClock(),
                       store=store_url(tmp_path)) as rt:
        result = await rt.run(spec, coordinator=Planner)
    assert result.status == "completed"
    backend = SqliteBackend(store_url(tmp_path))
    try:
        listed = {info.name: info for info in backend.runs()}
    finally:
        backend.close()
    assert listed["outer"].parent is None and listed["outer"].status == "completed"
    assert listed["inner"].parent == result.portfolio_id
    assert listed["inner"].status == "completed"


# ---------------------------------------------------------------------------- failures


async def test_a_failing_commit_fails_the_run_loudly_and_dispatches_nothing_after(
        tmp_path: Path) -> None:
    calls: list[str] = []

    @Agent("journal-filler")
    class Filler:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            calls.append(intent.title)
            if intent.title == "A":
                # The disk is full from now on (a real SQLite error on the writer's side).
                writer = rt._runs.backend._writer  # type: ignore[attr-defined]
                pages = writer.execute("PRAGMA page_count").fetchone()[0]
                writer.execute(f"PRAGMA max_page_count={pages}")
                return {"blob": "x" * 10_000}
            return {}

    spec = PortfolioSpec("full", [
        IntentSpec("A", assign="journal-filler"),
        IntentSpec("B", assign="journal-filler", depends_on=["A"]),
        IntentSpec("C", assign="journal-filler", depends_on=["B"]),
    ])
    async with Runtime(agents=[Filler], store=store_url(tmp_path)) as rt:
        with pytest.raises(StoreError, match=r"runs\.db.*could not commit.*full"):
            await rt.run(spec)
    assert calls == ["A"]
    conn = sqlite3.connect(tmp_path / "runs.db")
    try:
        types = [row[0] for row in conn.execute("SELECT type FROM events ORDER BY seq")]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert "completed" not in types and types[-1] == "dispatched"


async def test_an_unusable_store_fails_at_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.write_bytes(b"not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        Runtime(store=store_url(tmp_path))


# ---------------------------------------------------------------------------- trio


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_journaled_run_on_trio(tmp_path: Path) -> None:
    calls: list[str] = []
    completed: list[str] = []
    worker = make_worker(calls, completed)
    with anyio.fail_after(BOUND):
        async with Runtime(agents=[worker], store=store_url(tmp_path)) as rt:
            handle = await rt.start(chain_spec())
            streamed = [event.type async for event in handle.events()]
            result = await handle.result()
    assert result.status == "completed" and calls == ["A", "B"]
    assert completed == ["A", "B"]
    assert streamed == result.events.types()
    backend = SqliteBackend(store_url(tmp_path))
    try:
        assert [event[0] for event in backend.read(result.portfolio_id)] == streamed
    finally:
        backend.close()


# ---------------------------------------------------------------------------- ids


async def test_a_store_never_holds_two_runs_under_one_id(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    import openintent._launch as launch

    drawn = iter(["pf_0000000000000001", "pf_0000000000000001", "pf_0000000000000002"])
    monkeypatch.setattr(launch, "new_portfolio_id", lambda: next(drawn))
    worker = make_worker([], [])
    async with Runtime(agents=[worker], seed=1, store=store_url(tmp_path)) as rt:
        first = await rt.run(chain_spec())
        second = await rt.run(chain_spec())  # drew a taken id first: drew again
    assert (first.portfolio_id, second.portfolio_id) == (
        "pf_0000000000000001", "pf_0000000000000002")
    assert first.status == second.status == "completed"


# ---------------------------------------------------------------------------- read back


async def test_a_run_loads_back_from_the_file_in_another_runtime_as_it_ran(
        tmp_path: Path) -> None:
    async with Runtime(agents=mixed_agents(), clock=VirtualClock(), seed=3,
                       store=store_url(tmp_path)) as rt:
        live = await rt.run(mixed_spec())
    async with Runtime(agents=mixed_agents(), clock=VirtualClock(),
                       store=store_url(tmp_path)) as rt:
        [info] = rt.runs()
        loaded = await rt.load(live.portfolio_id)
    assert (info.portfolio_id, info.status) == (live.portfolio_id, "failed")
    assert loaded.to_dict() == live.to_dict()
    assert list(loaded.events) == list(live.events)
    assert dict(loaded.intents) == dict(live.intents)
    assert (loaded.status, loaded.cost_usd, loaded.error) == (
        live.status, live.cost_usd, live.error)
