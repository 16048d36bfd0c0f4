"""The PostgreSQL store (``postgresql://``): the same runs as the SQLite journal, in a database
several processes share; run leases, detach/adopt, schema checks, idempotent commits, and a
database restart under a live run. Against a real server (the ``postgres_url`` fixture)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import structlog.testing

from openintent import Runtime, StoreError, VirtualClock
from openintent._stores import CommitFailed, open_backend
from openintent._stores._pg_schema import SCHEMA_VERSION, PgUrl
from openintent._stores.postgres import PostgresBackend
from openintent.agents import Agent, IntentSpec, PortfolioSpec, on_assignment
from openintent.errors import RunInUseError, RunNotFoundError
from openintent.models import EventType, RunResult

from _postgres import PostgresServer, with_option

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 60  # real seconds; only a regression that hangs waits this long


def layered(width: int = 3, layers: int = 4) -> PortfolioSpec:
    intents = []
    for layer in range(layers):
        for column in range(width):
            depends = [f"L{layer - 1}C{c}" for c in range(width) if (c + column) % 2 == 0] \
                if layer else []
            intents.append(IntentSpec(f"L{layer}C{column}", assign="worker",
                                      depends_on=depends,
                                      retry={"max_attempts": 2} if layer == 1 else None))
    return PortfolioSpec(name="layers", intents=intents)


def worker(on_call: Any = None) -> Any:
    @Agent("worker")
    class Worker:
        @on_assignment
        async def work(self, intent: Any) -> dict[str, Any]:
            if on_call is not None:
                on_call(intent)
            if intent.title == "L1C1" and intent.attempt == 1:
                raise RuntimeError("flaky once")
            await self.patch_state(intent, {"seen": intent.attempt})
            total = sum(state.get("total", 0) for state in intent.inputs.values())
            return {"total": total + 1}

    return Worker()


async def run_on(store: str, spec: PortfolioSpec, on_call: Any = None) -> tuple[RunResult,
                                                                                RunResult]:
    """The run's result, and the same run loaded back from the store."""
    async with Runtime(agents=[worker(on_call)], store=store, seed=3, blocking_threshold=None,
                       clock=VirtualClock(deadlock_after=HANG_GUARD)) as rt:
        result = await rt.run(spec)
        return result, await rt.load(result.portfolio_id)


def shape(result: RunResult) -> list[tuple[Any, ...]]:
    """Event type, intent title and data, the run's own ids masked."""
    hexes = result.portfolio_id[3:]
    return [(event.type, event.intent_id and event.intent_id.replace(hexes, "X"),
             re.sub(hexes, "X", repr(event.to_dict()["data"])))
            for event in result.events]


def backend(url: str) -> PostgresBackend:
    opened = open_backend(url)
    assert isinstance(opened, PostgresBackend)
    return opened


def raw(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(PgUrl.parse(url).conninfo, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


# ---------------------------------------------------------------------------- same as SQLite


@pytest.mark.asyncio
async def test_the_same_workflow_gives_the_same_events_and_result_as_sqlite(
        tmp_path: Path, postgres_url: str) -> None:
    spec = layered()
    on_sqlite, loaded_sqlite = await run_on(f"sqlite:///{tmp_path / 'runs.db'}", spec)
    on_pg, loaded_pg = await run_on(postgres_url, spec)
    assert on_pg.status == on_sqlite.status == "completed"
    assert shape(on_pg) == shape(on_sqlite)
    assert shape(loaded_pg) == shape(on_pg) and shape(loaded_sqlite) == shape(on_sqlite)
    assert list(loaded_pg.events) == list(on_pg.events)
    # The events view shows them to SQL, a row each.
    assert raw(postgres_url, "SELECT seq, type, intent_id FROM openintent.events "
                             "WHERE run_id = %s ORDER BY seq", (on_pg.portfolio_id,)) == [
        (event.seq, event.type, event.intent_id) for event in on_pg.events]
    assert {t: i.state for t, i in on_pg.intents.items()} == \
        {t: i.state for t, i in on_sqlite.intents.items()}
    assert (on_pg.cost_usd, len(on_pg.decisions)) == (on_sqlite.cost_usd,
                                                      len(on_sqlite.decisions))


@pytest.mark.asyncio
async def test_runs_load_and_fork(postgres_url: str) -> None:
    async with Runtime(agents=[worker()], store=postgres_url, seed=1,
                       clock=VirtualClock(deadlock_after=HANG_GUARD)) as rt:
        first = await rt.run(layered(2, 2))
        second = await rt.run(layered(1, 3))
        fork = await rt.fork(first.portfolio_id, rerun=["L1C0"])
        listed = rt.runs()
        loaded = await rt.load(fork.portfolio_id)
    assert [info.portfolio_id for info in listed] == [
        first.portfolio_id, second.portfolio_id, fork.portfolio_id]
    assert {info.status for info in listed} == {"completed"}
    assert all(info.started_at is not None and info.ended_at is not None for info in listed)
    assert fork.status == "completed"
    assert [e.type for e in fork.events].count(EventType.INTENT_COPIED) == 3
    assert list(loaded.events) == list(fork.events)
    with pytest.raises(RunNotFoundError, match="holds no run 'pf_nope'"):
        async with Runtime(agents=[], store=postgres_url) as rt:
            await rt.load("pf_nope")


@pytest.mark.asyncio
async def test_effects_are_journaled_as_in_sqlite(postgres_url: str) -> None:
    calls: list[str] = []

    @Agent("payer")
    class Payer:
        @on_assignment
        async def pay(self, intent: Any) -> dict[str, Any]:
            def charge() -> dict[str, Any]:
                calls.append(intent.title)
                return {"charge": "ch_1"}

            value = await self.effect(intent, "charge-card", charge)
            return {"receipt": value["charge"]}

    async with Runtime(agents=[Payer()], store=postgres_url, seed=0,
                       clock=VirtualClock(deadlock_after=HANG_GUARD)) as rt:
        result = await rt.run(PortfolioSpec("order", [IntentSpec("Pay", assign="payer")]))
        loaded = await rt.load(result.portfolio_id)
    assert calls == ["Pay"] and result.status == "completed"
    types = [event.type for event in loaded.events.for_intent("Pay")]
    assert "effect_started" in types and "effect_completed" in types
    assert loaded.intents["Pay"].state["receipt"] == "ch_1"


# ---------------------------------------------------------------------------- URLs, schema


def test_both_url_schemes_open_the_store(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        opened = backend(url)
        try:
            assert opened.runs() == [] and opened.durable
            assert opened.tasks is not None  # workers share its task queue
        finally:
            opened.close()
    [(version,)] = raw(postgres_url, "SELECT value FROM openintent.meta "
                                     "WHERE key = 'schema_version'")
    assert version == str(SCHEMA_VERSION)


def test_without_psycopg_the_store_says_what_to_install(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    for name in ("openintent._stores.postgres", "openintent._stores._pg_calls"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(StoreError, match=re.escape("pip install 'openintent[postgres]'")):
        open_backend("postgresql://someone@somewhere/runs")


def test_an_unreachable_database_is_a_store_error_naming_it(postgres_server: PostgresServer
                                                           ) -> None:
    url = postgres_server.url("no_such_database").replace("postgres@", "postgres:hunter2@")
    with pytest.raises(StoreError, match="cannot open the database "
                                         "no_such_database on ") as refused:
        open_backend(url)
    assert "hunter2" not in str(refused.value) and "postgres:***@" in str(refused.value)


def test_a_run_id_is_new_or_refused(postgres_url: str) -> None:
    store = backend(postgres_url)
    try:
        store.create_run("pf_a", "a")
        with pytest.raises(ValueError, match="run 'pf_a' .* is already in the store"):
            store.create_run("pf_a", "a")
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_run_on_trio(postgres_url: str) -> None:
    async with Runtime(agents=[worker()], store=postgres_url, seed=3) as rt:
        result = await rt.run(layered(2, 2))
        loaded = await rt.load(result.portfolio_id)
    assert result.status == "completed"
    assert list(loaded.events) == list(result.events)


def test_a_foreign_schema_and_a_newer_one_are_refused_naming_the_database(
        postgres_url: str) -> None:
    database = postgres_url.split("/")[3].split("?")[0]
    raw(postgres_url, "CREATE SCHEMA openintent")
    raw(postgres_url, "CREATE TABLE openintent.orders (id int)")
    with pytest.raises(StoreError, match=f"not openintent's.*|.*{database}") as refused:
        open_backend(postgres_url)
    assert database in str(refused.value) and "?schema=" in str(refused.value)
    assert raw(postgres_url, "SELECT count(*) FROM openintent.orders") == [(0,)]  # untouched
    # Another schema of the same database is fine, and a newer one of ours is refused.
    other = with_option(postgres_url, "schema=runs")
    backend(other).close()
    raw(postgres_url, "UPDATE runs.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=f"{database}.*version 99, newer"):
        open_backend(other)


# ---------------------------------------------------------------------------- commits


def test_a_repeated_commit_is_done_once_and_a_different_one_is_refused(postgres_url: str
                                                                        ) -> None:
    store = backend(postgres_url)
    try:
        log = store.create_run("pf_a", "a")
        events = [(EventType.RUN_STARTED, 0.0, None, {"name": "a"})]
        log.extend(events)
        anyio.run(log.wait_committed, 1)
        store._commit(log, 0, events, '[["run_started",0.0,null,{"name":"a"}]]')  # a retry
        assert store.read("pf_a") == events
        with pytest.raises(CommitFailed, match="another process wrote events from 0"):
            store._commit(log, 0, events, '[["run_started",1.0,null,{"name":"b"}]]')
    finally:
        store.close()


# ---------------------------------------------------------------------------- leases


def test_run_leases_are_taken_over_as_in_sqlite(postgres_url: str) -> None:
    url = with_option(postgres_url, "lease_ttl=600")
    one, two = backend(url), backend(url)
    try:
        assert one.lease_ttl == 600
        one.create_run("pf_a", "a")
        one.acquire_run("pf_a", "first")
        one.acquire_run("pf_a", "first")  # renewed
        with pytest.raises(RunInUseError, match="run 'pf_a' of the store .* in use by first"):
            two.acquire_run("pf_a", "second")
        # A holder whose process is gone from this host loses it at once.
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        raw(postgres_url, "UPDATE openintent.runs SET lease_pid = %s", (int(dead.stdout),))
        two.acquire_run("pf_a", "second")
        assert (two.run_lease("pf_a") or {})["holder"] == "second"
        # Any other once it expired.
        raw(postgres_url, "UPDATE openintent.runs SET lease_host = 'elsewhere', "
                          "lease_expires = 0")
        one.acquire_run("pf_a", "first")
        one.release_run("pf_a", "someone else")  # ignored
        assert (one.run_lease("pf_a") or {})["holder"] == "first"
        one.release_run("pf_a", "first")
        assert one.run_lease("pf_a") is None
        with pytest.raises(RunNotFoundError):
            one.acquire_run("pf_nope", "first")
    finally:
        one.close()
        two.close()


def test_detached_runs_and_runs_without_a_live_coordinator_are_adoptable(postgres_url: str
                                                                         ) -> None:
    store = backend(postgres_url)
    try:
        for run_id in ("pf_free", "pf_held", "pf_detached", "pf_done", "pf_expired"):
            store.create_run(run_id, run_id)
        # A sub-portfolio is its parent's coordinator's to run, never adopted on its own.
        store.create_run("pf_child", "child", parent="pf_free")
        store.detach_run("pf_child")
        for run_id in ("pf_free", "pf_held", "pf_done", "pf_expired", "pf_child"):
            raw(postgres_url, "INSERT INTO openintent.batches VALUES "
                              f"('{run_id}', 0, '[[\"run_started\", 0.0, null, null]]')")
        # Created a moment ago, its creator about to take its lease: nothing committed yet.
        store.create_run("pf_starting", "starting")
        raw(postgres_url, "UPDATE openintent.runs SET status = 'completed' "
                          "WHERE id = 'pf_done'")
        store.acquire_run("pf_held", "me")
        store.acquire_run("pf_detached", "me")
        store.acquire_run("pf_expired", "me")
        raw(postgres_url, "UPDATE openintent.runs SET lease_host = 'elsewhere', "
                          "lease_expires = 1 WHERE id = 'pf_expired'")
        store.detach_run("pf_detached")
        assert store.run_lease("pf_detached") is None
        assert store.adoptable_runs() == ["pf_free", "pf_detached", "pf_expired"]
        store.acquire_run("pf_detached", "adopter")  # clears the mark
        assert store.adoptable_runs() == ["pf_free", "pf_expired"]
        with pytest.raises(RunNotFoundError):
            store.detach_run("pf_nope")
    finally:
        store.close()


# ---------------------------------------------------------------------------- other processes


def test_openintent_approve_decides_a_run_from_another_process(postgres_url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "approval_workflow.py"), postgres_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("started "), (line, child.communicate())
        run_id = line.split()[1]
        reader = backend(postgres_url)
        try:
            for _ in range(6_000):
                if EventType.APPROVAL_REQUESTED in [e[0] for e in reader.read(run_id)]:
                    break
                assert child.poll() is None, child.communicate()
                threading.Event().wait(0.005)  # a pause between looks, not a measurement
            decided = subprocess.run(
                [sys.executable, "-m", "openintent", "approve", postgres_url, run_id, "Deploy",
                 "--by", "bob"], capture_output=True, text=True, timeout=HANG_GUARD)
            out, err = child.communicate(timeout=HANG_GUARD)
            types = [e[0] for e in reader.read(run_id)]
        finally:
            reader.close()
    finally:
        child.kill()
    assert decided.returncode == 0, decided.stderr
    assert child.returncode == 0 and "status: completed" in out, (out, err)
    assert types.count(EventType.APPROVAL_GRANTED) == 1
    assert raw(postgres_url, "SELECT decided_by, status FROM openintent.approval_inbox") == [
        ("bob", "applied")]


def test_the_cli_runs_lists_and_shows_runs_of_the_database(postgres_url: str,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    from openintent.cli import main

    result, _loaded = anyio.run(run_on, postgres_url, layered(1, 2))
    assert main(["runs", "list", postgres_url]) == 0
    assert result.portfolio_id in capsys.readouterr().out
    assert main(["runs", "show", postgres_url, result.portfolio_id]) == 0
    assert "completed" in capsys.readouterr().out


# ---------------------------------------------------------------------------- restarts


@pytest.mark.asyncio
@pytest.mark.usefixtures("reset_structlog")
async def test_a_run_goes_on_through_a_database_restart(postgres_server: PostgresServer,
                                                        postgres_url: str) -> None:
    stopped = threading.Event()
    restarted = threading.Event()

    def restart() -> None:
        try:
            postgres_server.stop()
            stopped.set()
            threading.Event().wait(0.3)  # commits fail (and retry) meanwhile
        finally:
            postgres_server.start()
            restarted.set()

    def on_call(intent: Any) -> None:
        if intent.title == "L2C0" and not stopped.is_set() and not restarted.is_set():
            threading.Thread(target=restart, daemon=True).start()
            assert stopped.wait(HANG_GUARD)  # the server is down when this handler returns

    try:
        with structlog.testing.capture_logs() as logs:
            result, loaded = await run_on(postgres_url, layered(), on_call)
    finally:
        if not restarted.wait(HANG_GUARD):
            postgres_server.start()
    assert stopped.is_set()
    assert any(log["event"] == "database connection failed; retrying" for log in logs)
    assert result.status == "completed"
    events = list(loaded.events)
    assert events == list(result.events)  # nothing lost
    assert [event.seq for event in events] == list(range(len(events)))
    completions = [e.intent_id for e in events if e.type == EventType.COMPLETED]
    assert len(completions) == len(set(completions)) == 12  # nothing duplicated


def test_a_read_gives_up_after_the_retry_deadline_naming_the_database(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    store = backend(postgres_url)
    try:
        store.calls.deadline = 0.3
        postgres_server.stop()
        try:
            with pytest.raises(StoreError, match=r"the database .* could not list its runs: "
                                                 r".*gave up after 0\.3 s of retries"):
                store.runs()
        finally:
            postgres_server.start()
        store.calls.deadline = 60.0
        assert store.runs() == []  # and it reconnects once the server is back
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_runs_start_and_end_are_announced_to_listeners(postgres_url: str) -> None:
    backend(postgres_url).close()  # the schema
    with psycopg.connect(PgUrl.parse(postgres_url).conninfo, autocommit=True) as listener:
        listener.execute("LISTEN openintent_runs")
        result, _loaded = await run_on(postgres_url, layered(1, 2))
        heard = [note.payload for note in listener.notifies(timeout=0.5)]
    # Its start, its end, its lease given back.
    assert heard == [result.portfolio_id] * 3
